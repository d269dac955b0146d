"""The built-in student families: knobs (pydantic, with ranges), plans and candidate grids.

Torch-free: a plan is the list of block signatures (:mod:`edgekd.models.plan`); the torch
model is built from it by :mod:`edgekd.models.nets`.

``mobilenetv2``  width (channel multiplier; channels rounded to a multiple of 8), depth
                 (multiplier on blocks per stage, rounded up), res, expansion (of every
                 inverted residual after the first, which keeps 1 as in MobileNetV2),
                 stem_stride (default 1 when res <= 64, else 2, so small inputs are not
                 halved before the first block). The last 1×1 conv has 1280×width channels
                 (rounded to 8) so that narrow students stay small.
``resnet``       basic-block ResNet: width (channels of the first stage; doubled per stage),
                 blocks ("2-2-2" = blocks per stage; a single N means N per stage for
                 ``stages`` stages, default 3), res, stem_stride (same default rule).
``convnet``      plain conv3×3+BN+ReLU stack for the smallest devices: width (channels of the
                 first conv), depth (number of convs; every odd conv, up to three, has stride 2
                 and doubles the channels), res.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from pydantic import Field, field_validator, model_validator

from .plan import basic_sig, conv_sig, head_sig, ir_sig, make_divisible, out_size
from .spec import Family, KnobConfig

MAX_STAGES = 6
MAX_BLOCKS_PER_STAGE = 16


def default_stem_stride(res: int) -> int:
    """1 for small inputs (res <= 64), else 2."""
    return 1 if res <= 64 else 2


def dash_counts(value: Any) -> tuple[int, ...]:
    """A per-stage count knob ("2-2-2", a single int, or a sequence of ints) as a tuple of ints;
    ValueError (pydantic's message) for anything else."""
    if isinstance(value, str):
        parts = value.split("-")
        if not all(p.strip().isdigit() for p in parts):
            raise ValueError("not integers separated by '-'")
        return tuple(int(p) for p in parts)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    raise ValueError("not integers separated by '-'")


class _StemStrideMixin(KnobConfig):
    @model_validator(mode="after")
    def _default_stem_stride(self):
        if getattr(self, "stem_stride", 0) is None:
            self.stem_stride = default_stem_stride(self.res)
        return self


# ---------------------------------------------------------------- mobilenetv2

# (expansion, channels, blocks, stride) per stage; expansion None = the knob
MBV2_STAGES: tuple[tuple[Optional[float], int, int, int], ...] = (
    (1, 16, 1, 1), (None, 24, 2, 2), (None, 32, 3, 2), (None, 64, 4, 2),
    (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1),
)
MBV2_STEM = 32
MBV2_LAST = 1280


class MobileNetV2Config(_StemStrideMixin):
    width: float = Field(1.0, gt=0, le=4)
    depth: float = Field(1.0, gt=0, le=4)
    res: int = Field(32, ge=4, le=1024)
    expansion: float = Field(6.0, ge=1, le=12)
    stem_stride: Optional[int] = Field(None, ge=1, le=2)


def mobilenetv2_plan(cfg: MobileNetV2Config, in_channels: int, num_classes: int) -> list[dict]:
    h = w = cfg.res
    cin = make_divisible(MBV2_STEM * cfg.width)
    sigs = [conv_sig(in_channels, cin, h, w, kernel=3, stride=cfg.stem_stride, act="relu6")]
    h, w = out_size(h, 3, cfg.stem_stride), out_size(w, 3, cfg.stem_stride)
    for t, c, n, s in MBV2_STAGES:
        cout = make_divisible(c * cfg.width)
        for i in range(math.ceil(n * cfg.depth)):
            stride = s if i == 0 else 1
            sigs.append(ir_sig(cin, cout, h, w, expansion=cfg.expansion if t is None else t,
                               kernel=3, stride=stride))
            cin, h, w = cout, out_size(h, 3, stride), out_size(w, 3, stride)
    last = make_divisible(MBV2_LAST * cfg.width)
    sigs.append(conv_sig(cin, last, h, w, kernel=1, stride=1, act="relu6"))
    sigs.append(head_sig(last, num_classes, h, w))
    return sigs


# ---------------------------------------------------------------- resnet

class ResNetConfig(_StemStrideMixin):
    input_only_knobs = ("stages",)

    stages: Optional[int] = Field(None, ge=1, le=MAX_STAGES)
    width: int = Field(16, ge=4, le=256)
    blocks: tuple[int, ...] = Field(2, validate_default=True, json_schema_extra={
        "allowed": f"N or N-N-... (1 to {MAX_STAGES} stages), each 1 <= N <= "
                   f"{MAX_BLOCKS_PER_STAGE}"})
    res: int = Field(32, ge=4, le=1024)
    stem_stride: Optional[int] = Field(None, ge=1, le=2)

    @field_validator("blocks", mode="before")
    @classmethod
    def _parse_blocks(cls, value: Any, info) -> tuple[int, ...]:
        stages = info.data.get("stages")
        counts = dash_counts(value)
        if len(counts) == 1:
            counts = counts * (stages or 3)
        elif stages is not None and stages != len(counts):
            raise ValueError(f"it has {len(counts)} stages but stages={stages}")
        if not 1 <= len(counts) <= MAX_STAGES or not all(
                1 <= c <= MAX_BLOCKS_PER_STAGE for c in counts):
            raise ValueError("out of range")
        return counts


def resnet_plan(cfg: ResNetConfig, in_channels: int, num_classes: int) -> list[dict]:
    h = w = cfg.res
    cin = cfg.width
    sigs = [conv_sig(in_channels, cin, h, w, kernel=3, stride=cfg.stem_stride, act="relu")]
    h, w = out_size(h, 3, cfg.stem_stride), out_size(w, 3, cfg.stem_stride)
    for stage, n in enumerate(cfg.blocks):
        cout = cfg.width * 2 ** stage
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            sigs.append(basic_sig(cin, cout, h, w, stride=stride))
            cin, h, w = cout, out_size(h, 3, stride), out_size(w, 3, stride)
    sigs.append(head_sig(cin, num_classes, h, w))
    return sigs


# ---------------------------------------------------------------- convnet

class ConvNetConfig(KnobConfig):
    width: int = Field(16, ge=4, le=512)
    depth: int = Field(4, ge=1, le=16)
    res: int = Field(32, ge=4, le=1024)


def convnet_plan(cfg: ConvNetConfig, in_channels: int, num_classes: int) -> list[dict]:
    h = w = cfg.res
    cin, cout, downs = in_channels, cfg.width, 0
    sigs = []
    for i in range(cfg.depth):
        stride = 1
        if i % 2 == 1 and downs < 3:
            stride, downs = 2, downs + 1
            cout = cfg.width * 2 ** downs
        sigs.append(conv_sig(cin, cout, h, w, kernel=3, stride=stride, act="relu"))
        cin, h, w = cout, out_size(h, 3, stride), out_size(w, 3, stride)
    sigs.append(head_sig(cin, num_classes, h, w))
    return sigs


# ---------------------------------------------------------------- grids

def grid_product(**axes: list) -> list[str]:
    """Every combination of the knob values, as spec bodies ('width=0.5,res=32')."""
    specs = [""]
    for key, values in axes.items():
        specs = [f"{s},{key}={v}" if s else f"{key}={v}" for s in specs for v in values]
    return specs


MOBILENETV2 = Family(
    config=MobileNetV2Config, plan=mobilenetv2_plan,
    description="MobileNetV2 inverted residuals; knobs width, depth, res, expansion, stem_stride",
    grids={
        "small": grid_product(width=[0.25, 0.5, 1.0], res=[16, 32]),
        # Selection ranks candidates by parameters, and res adds none: a res=32 model is only
        # picked where nothing with more parameters fits, i.e. at the top of the range. So the
        # default grid spends its measurements on widths at 16 px, finest where one width step
        # moves latency most (below 0.5, channels step by 8), and on res=32 at full width; the
        # derived depths (0.6, 0.67) fill in between each width's two depths.
        "default": grid_product(width=[0.25, 0.3, 0.35, 0.375, 0.4, 0.425, 0.45, 0.475, 0.5, 0.55, 0.6,
                                   0.69, 0.75, 0.81, 0.875, 1.0], depth=[0.5, 1.0], res=[16])
        + grid_product(width=[1.0], depth=[0.5, 1.0], res=[32]),
    })

RESNET = Family(
    config=ResNetConfig, plan=resnet_plan,
    description="ResNet with basic blocks; knobs width, blocks (e.g. 2-2-2), res, stem_stride",
    grids={
        "small": ["width=8,blocks=1,res=16", "width=8,blocks=1,res=32",
                  "width=16,blocks=1,res=32", "width=16,blocks=2,res=32",
                  "width=24,blocks=1,res=32", "width=24,blocks=2,res=32"],
        "default": grid_product(width=[8, 16, 24], blocks=["1-1-1", "2-2-2", "3-3-3"],
                            res=[16, 32]),
    })

CONVNET = Family(
    config=ConvNetConfig, plan=convnet_plan,
    description="plain conv3x3+BN+ReLU stack; knobs width, depth, res",
    grids={
        "small": ["width=8,depth=2,res=16", "width=8,depth=4,res=16",
                  "width=16,depth=4,res=16", "width=16,depth=4,res=32",
                  "width=32,depth=4,res=32", "width=32,depth=6,res=32"],
        "default": grid_product(width=[8, 16, 32], depth=[2, 4, 6], res=[16, 32]),
    })
