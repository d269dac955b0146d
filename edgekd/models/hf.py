"""Hugging Face image classifiers: student families over configurable ``transformers``
architectures, and models read from a local ``save_pretrained`` directory (teacher ``hf:DIR``).

Nothing is downloaded: students are built from configs (random init, seeded by the caller), and a
directory is read with ``local_files_only``; weights load with safetensors or
``torch.load(weights_only=True)``. ``transformers`` (the ``hf`` extra) is imported inside the
functions that need it, so spec strings parse without it; building without it is exit 4.

``hf-mobilenetv2``   width (depth_multiplier), res, expansion (expand_ratio), finegrained (the last
                     1x1 conv keeps 1280 channels below width 1, as in MobileNetV2)
``hf-mobilevit``     size (xxs, xs or s: the paper's channel presets), res
``hf-resnet``        width (channels of the first stage, doubled per stage; the output channels
                     of a bottleneck stage, so resnet-50 is width=256,block=bottleneck), depths
                     (layers per stage, "2-2-2-2"), block (basic or bottleneck), stem (embedding
                     channels; default width, or width/4 for bottleneck), res
``hf-efficientnet``  width, depth (width_coefficient, depth_coefficient: B0 is 1, 1), res

Every model is an ``HFClassifier``: ``forward(x)`` returns the logits tensor (N x classes) and
ONNX exports that alone; ``.features`` is the HF backbone and ``.classifier`` its last Linear
(the HF model is ``.model``, so state_dict keys are ``model.<HF key>``). Their block signatures
are read from the model's module tree (:mod:`edgekd.models.hf_blocks`), so they profile, predict
and select like edgekd's own families.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from ..errors import BadInputError, missing_package
from .families import dash_counts, grid_product
from .hf_blocks import build_block as hf_block
from .hf_blocks import signatures
from .plan import make_divisible
from .spec import Family, KnobConfig

MAX_STAGES = 6
MAX_LAYERS_PER_STAGE = 16
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


# ---------------------------------------------------------------- transformers

def _transformers(what: str = "Hugging Face models"):
    try:
        import transformers
    except ImportError as exc:
        raise missing_package("transformers", "hf", what=what) from exc
    transformers.logging.set_verbosity_error()
    if not os.environ.get("EDGEKD_DEBUG"):  # torchao, imported by transformers as it builds a
        for name in ("torchao", "torch.utils._pytree"):  # model, warns of CUDA kernels and Enums
            logging.getLogger(name).setLevel(logging.ERROR)
    return transformers


def _from_config(hf_config) -> Any:
    """A randomly initialised AutoModelForImageClassification (float32, eval mode)."""
    tf = _transformers()
    try:
        model = tf.AutoModelForImageClassification.from_config(hf_config)
    except ValueError as exc:
        raise BadInputError(f"'{hf_config.model_type}' is not an architecture "
                            f"AutoModelForImageClassification knows",
                            hint=f"known ones include {', '.join(known_architectures()[:8])}"
                            ) from exc
    return model.float().eval()


def known_architectures() -> list[str]:
    """model_type names AutoModelForImageClassification builds (the most common first)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    first = ["mobilenet_v2", "mobilevit", "resnet", "efficientnet", "convnext", "vit",
             "mobilenet_v1", "regnet"]
    names = list(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES)
    return [n for n in first if n in names] + sorted(n for n in names if n not in first)


@functools.lru_cache(maxsize=None)
def _wrapper_class():
    from torch import nn

    class HFClassifier(nn.Module):
        """A transformers image classifier whose forward returns the logits tensor."""

        def __init__(self, model: nn.Module):
            super().__init__()
            self.model = model

        @property
        def features(self) -> nn.Module:
            """The HF backbone (everything before pooling and the classifier)."""
            return getattr(self.model, self.model.base_model_prefix)

        @property
        def classifier(self) -> nn.Module:
            """The Linear that maps pooled features to the classes."""
            head = self.model.classifier
            linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
            return linears[-1] if linears else head

        @property
        def hf_config(self):
            return self.model.config

        def forward(self, x):
            return self.model(pixel_values=x, return_dict=True).logits

    return HFClassifier


def wrap(model) -> Any:
    """``model`` (an HF image classifier) as an :class:`HFClassifier`."""
    return _wrapper_class()(model)


# ---------------------------------------------------------------- knobs

class HFMobileNetV2Knobs(KnobConfig):
    width: float = Field(1.0, gt=0, le=4)
    res: int = Field(224, ge=32, le=1024)
    expansion: float = Field(6.0, ge=1, le=12)
    finegrained: bool = Field(True, json_schema_extra={"allowed": "true or false"})


MOBILEVIT_SIZES: dict[str, dict[str, Any]] = {
    "xxs": {"hidden_sizes": [64, 80, 96], "neck_hidden_sizes": [16, 16, 24, 48, 64, 80, 320],
            "expand_ratio": 2.0},
    "xs": {"hidden_sizes": [96, 120, 144], "neck_hidden_sizes": [16, 32, 48, 64, 80, 96, 384]},
    "s": {"hidden_sizes": [144, 192, 240], "neck_hidden_sizes": [16, 32, 64, 96, 128, 160, 640]},
}


class HFMobileViTKnobs(KnobConfig):
    size: Literal["xxs", "xs", "s"] = Field("xxs", json_schema_extra={"allowed": "xxs, xs or s"})
    res: int = Field(224, ge=32, le=1024)


class HFResNetKnobs(KnobConfig):
    width: int = Field(64, ge=8, le=1024)
    depths: tuple[int, ...] = Field((2, 2, 2, 2), validate_default=True, json_schema_extra={
        "allowed": f"N-N-... (1 to {MAX_STAGES} stages), each 1 <= N <= {MAX_LAYERS_PER_STAGE}"})
    block: Literal["basic", "bottleneck"] = Field(
        "basic", json_schema_extra={"allowed": "basic or bottleneck"})
    stem: Optional[int] = Field(None, ge=8, le=512)
    res: int = Field(224, ge=32, le=1024)

    @field_validator("depths", mode="before")
    @classmethod
    def _parse_depths(cls, value: Any) -> tuple[int, ...]:
        value = dash_counts(value)
        if not 1 <= len(value) <= MAX_STAGES or not all(
                1 <= v <= MAX_LAYERS_PER_STAGE for v in value):
            raise ValueError("out of range")
        return tuple(value)

    @model_validator(mode="after")
    def _default_stem(self):
        if self.stem is None:
            self.stem = self.width if self.block == "basic" else max(8, self.width // 4)
        return self


class HFEfficientNetKnobs(KnobConfig):
    width: float = Field(1.0, gt=0, le=4)
    depth: float = Field(1.0, gt=0, le=4)
    res: int = Field(224, ge=32, le=1024)


# ---------------------------------------------------------------- HF configs

def _common(cfg: KnobConfig, in_channels: int, num_classes: int) -> dict[str, Any]:
    return {"num_channels": int(in_channels), "num_labels": int(num_classes),
            "image_size": int(cfg.res)}


def mobilenetv2_config(cfg: HFMobileNetV2Knobs, in_channels: int, num_classes: int):
    tf = _transformers("the hf-mobilenetv2 family")
    # classifier dropout 0.2 (torchvision's), not HF's 0.8, which starves a small student's head
    return tf.MobileNetV2Config(depth_multiplier=cfg.width, expand_ratio=cfg.expansion,
                                finegrained_output=cfg.finegrained, classifier_dropout_prob=0.2,
                                **_common(cfg, in_channels, num_classes))


def mobilevit_config(cfg: HFMobileViTKnobs, in_channels: int, num_classes: int):
    tf = _transformers("the hf-mobilevit family")
    return tf.MobileViTConfig(**MOBILEVIT_SIZES[cfg.size], **_common(cfg, in_channels, num_classes))


def resnet_config(cfg: HFResNetKnobs, in_channels: int, num_classes: int):
    tf = _transformers("the hf-resnet family")
    common = _common(cfg, in_channels, num_classes)
    common.pop("image_size")  # ResNetConfig has none: the resolution is the spec's alone
    return tf.ResNetConfig(embedding_size=cfg.stem, depths=list(cfg.depths), layer_type=cfg.block,
                           hidden_sizes=[cfg.width * 2 ** i for i in range(len(cfg.depths))],
                           **common)


def efficientnet_config(cfg: HFEfficientNetKnobs, in_channels: int, num_classes: int):
    tf = _transformers("the hf-efficientnet family")
    # the classifier reads hidden_dim features: the top conv's 1280 channels scaled by width
    return tf.EfficientNetConfig(width_coefficient=cfg.width, depth_coefficient=cfg.depth,
                                 hidden_dim=make_divisible(1280 * cfg.width, 8), dropout_rate=0.2,
                                 **_common(cfg, in_channels, num_classes))


# ---------------------------------------------------------------- family parts

def _builder(make_config):
    def build(cfg: KnobConfig, *, num_classes: int, in_channels: int):
        model = wrap(_from_config(make_config(cfg, in_channels, num_classes)))
        model.trace_input_shape = (int(in_channels), int(cfg.res), int(cfg.res))  # hf_static
        _init_student(model)
        _global_pooling(model)
        _torch_bn_momentum(model)
        return model.train()
    return build


def _torch_bn_momentum(model) -> None:
    """BatchNorm momentum 0.1 (PyTorch's default). transformers copies TensorFlow's decay
    (MobileNetV2 0.997, EfficientNet 0.99) into nn.BatchNorm2d's momentum, the weight of the
    *new* batch: the running statistics became the last training batch's alone."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.momentum or 0) > 0.5:
            m.momentum = 0.1


def _init_student(model) -> None:
    """The built-in families' init, with depthwise convs scaled by their own fan (k*k).

    HF's init (normal, std 0.02) and fan_out on depthwise convs shrink activations stage by
    stage: an untrained student's eval-mode logits ended near 1e-30 (EfficientNet 1e-19), too
    small for ONNX parity to compare. Training is unaffected (batch norm rescales)."""
    from torch import nn

    from .nets import _init_weights

    _init_weights(model)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")


def _global_pooling(model) -> None:
    """EfficientNet pools with AvgPool2d(kernel=hidden_dim, ceil_mode=True), a global mean that
    OpenVINO refuses to convert (kernel larger than the map); the same mean, adaptively."""
    from torch import nn

    backbone = model.features
    pooler = getattr(backbone, "pooler", None)
    if isinstance(pooler, nn.AvgPool2d):
        backbone.pooler = nn.AdaptiveAvgPool2d(1)
    elif isinstance(pooler, nn.MaxPool2d):
        backbone.pooler = nn.AdaptiveMaxPool2d(1)


def _capacity(make_config):
    """(MACs, params) of a config, counted on the meta device (no memory, no weights)."""
    def capacity(cfg: KnobConfig, in_channels: int, num_classes: int) -> tuple[int, int]:
        return _count(make_config, cfg.model_dump_json(), type(cfg), in_channels, num_classes)
    return capacity


@functools.lru_cache(maxsize=512)
def _count(make_config, knobs_json: str, knobs_cls, in_channels: int, num_classes: int):
    import torch

    from .count import count_macs_params

    cfg = knobs_cls.model_validate_json(knobs_json)
    with torch.device("meta"):
        model = wrap(_from_config(make_config(cfg, in_channels, num_classes)))
    return count_macs_params(model, (in_channels, cfg.res, cfg.res))


def _planner(family: str, make_config):
    """The block signatures of a config, read from its model's module tree (models.hf_blocks)."""
    def plan(cfg: KnobConfig, in_channels: int, num_classes: int) -> list[dict]:
        sigs = _plan(family, make_config, cfg.model_dump_json(), type(cfg), in_channels, num_classes)
        return [dict(s) for s in sigs]
    return plan


@functools.lru_cache(maxsize=256)
def _plan(family: str, make_config, knobs_json: str, knobs_cls, in_channels: int, num_classes: int):
    import torch

    from .spec import StudentConfig

    cfg = knobs_cls.model_validate_json(knobs_json)
    with torch.device("meta"):
        model = wrap(_from_config(make_config(cfg, in_channels, num_classes)))
        _global_pooling(model)
    return tuple(signatures(model, spec=StudentConfig(family, cfg).spec, in_channels=in_channels,
                            num_classes=num_classes, in_shape=(in_channels, cfg.res, cfg.res)))


def _family(name: str, knobs, make_config, grids: dict, description: str) -> Family:
    return Family(config=knobs, plan=_planner(name, make_config), grids=grids,
                  build=_builder(make_config), build_block=hf_block,
                  capacity=_capacity(make_config), description=description,
                  rank="macs")  # images at real sizes: resolution is a real choice (docs/LATENCY.md)


HF_MOBILENETV2 = _family(
    "hf-mobilenetv2", HFMobileNetV2Knobs, mobilenetv2_config,
    {"small": grid_product(width=[0.35, 0.5, 1.0], res=[128, 224]),
     # 16-px steps: 32-px steps left 1.4-1.5x latency gaps in capacity order (BENCHMARKS.md)
     "default": grid_product(width=[0.35, 0.5, 0.75, 1.0, 1.4], res=list(range(128, 225, 16)))},
    "transformers MobileNetV2; knobs width (depth_multiplier), res, expansion, finegrained")

HF_MOBILEVIT = _family(
    "hf-mobilevit", HFMobileViTKnobs, mobilevit_config,
    {"small": grid_product(size=["xxs", "xs"], res=[96, 160, 224]),
     "default": grid_product(size=["xxs", "xs", "s"], res=list(range(96, 225, 16)))},
    "transformers MobileViT; knobs size (xxs, xs, s), res")

HF_RESNET = _family(
    "hf-resnet", HFResNetKnobs, resnet_config,
    {"small": grid_product(width=[16, 32, 64], depths=["1-1-1-1"], res=[96, 224]),
     "default": grid_product(width=[16, 32, 64], depths=["1-1-1-1", "2-2-2-2", "3-4-6-3"],
                         res=[96, 160, 224])},
    "transformers ResNet; knobs width, depths (e.g. 2-2-2-2), block (basic, bottleneck), stem, res")

HF_EFFICIENTNET = _family(
    "hf-efficientnet", HFEfficientNetKnobs, efficientnet_config,
    {"small": grid_product(width=[0.5, 1.0], res=[128, 160, 224]),
     "default": grid_product(width=[0.5, 0.75, 1.0], depth=[0.5, 1.0], res=[128, 160, 192, 224])},
    "transformers EfficientNet; knobs width, depth (coefficients), res")


# ---------------------------------------------------------------- save_pretrained directories

def _weight_files(d: Path) -> list[Path]:
    """The weight files of a save_pretrained directory (shards through their index)."""
    for name in WEIGHT_FILES:
        p = d / name
        if not p.is_file():
            continue
        if not name.endswith(".index.json"):
            return [p]
        try:
            shards = sorted(set(json.loads(p.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise BadInputError(f"weight index '{p}' is not readable ({exc})",
                                hint="re-save the model with save_pretrained") from exc
        files = [d / s for s in shards]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise BadInputError(f"'{d}' lacks the weight shard(s) {', '.join(missing[:3])}",
                                hint="copy the whole save_pretrained directory")
        return files
    raise BadInputError(f"'{d}' has config.json but no weights (model.safetensors or "
                        f"pytorch_model.bin)", hint="save the model with model.save_pretrained(DIR)")


def _read_weights(files: list[Path]) -> dict:
    import pickle

    import torch

    state: dict = {}
    for f in files:
        try:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file

                state.update(load_file(str(f), device="cpu"))
            else:
                state.update(torch.load(f, map_location="cpu", weights_only=True))
        except ImportError as exc:
            raise missing_package("safetensors", "hf", what="reading model.safetensors") from exc
        except pickle.UnpicklingError as exc:
            raise BadInputError(f"weights '{f}' hold pickled Python objects, and unpickling runs "
                                f"arbitrary code", hint="re-save with save_pretrained "
                                "(safetensors)") from exc
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same bad input
            raise BadInputError(f"cannot read weights '{f}' ({str(exc).splitlines()[0][:160]})",
                                hint="re-save the model with save_pretrained") from exc
    return state


def load_pretrained_dir(path: "str | Path") -> tuple[Any, dict[str, Any]]:
    """(HFClassifier in eval mode, info) from a local ``save_pretrained`` directory.

    ``info``: ``num_classes`` (config.num_labels), ``input_shape`` ((C, H, W) from
    num_channels and image_size, None without image_size), ``model_type``, ``path`` and
    ``hashes`` (sha256 of config.json and of each weight file, for the fingerprint)."""
    from ..util_io import sha256_file
    from .checkpoint import load_state

    if not str(path).strip():
        raise BadInputError("hf: names no directory",
                            hint="write hf:DIR with a directory written by model.save_pretrained")
    d = Path(path).expanduser()
    if not d.exists():
        raise BadInputError(f"model directory '{d}' does not exist",
                            hint="pass hf:DIR with a directory written by model.save_pretrained")
    if not d.is_dir():
        raise BadInputError(f"'{d}' is a file, not a save_pretrained directory",
                            hint="pass hf:DIR with the directory model.save_pretrained wrote")
    cfg_file = d / "config.json"
    if not cfg_file.is_file():
        raise BadInputError(f"'{d}' is not a save_pretrained model directory (no config.json)",
                            hint="save the model with model.save_pretrained(DIR)")
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"'{cfg_file}' is not readable JSON ({exc})",
                            hint="re-save the model with save_pretrained") from exc
    files = _weight_files(d)
    tf = _transformers("a Hugging Face teacher (hf:DIR)")
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if not isinstance(model_type, str) or not model_type:
        raise BadInputError(f"config.json in '{d}' names no model_type",
                            hint="re-save the model with save_pretrained")
    known = known_architectures()
    if model_type not in known:
        raise BadInputError(f"'{d}' holds a '{model_type}' model, not an architecture "
                            f"AutoModelForImageClassification knows",
                            hint=f"known ones include {', '.join(known[:8])}")
    try:
        hf_config = tf.AutoConfig.from_pretrained(str(d), local_files_only=True,
                                                  trust_remote_code=False)
    except (ValueError, OSError, TypeError, KeyError) as exc:
        raise BadInputError(f"config.json in '{d}' is not a valid {model_type} config "
                            f"({str(exc).splitlines()[0][:160]})",
                            hint="re-save the model with save_pretrained") from exc
    model = wrap(_from_config(hf_config))
    load_state(model.model, _read_weights(files), str(d))
    size = getattr(hf_config, "image_size", None)
    if isinstance(size, int):
        size = (size, size)
    channels = int(getattr(hf_config, "num_channels", 3))
    input_shape = (channels, int(size[0]), int(size[1])) if size else None
    hashes = [hashlib.sha256(cfg_file.read_bytes()).hexdigest()] + [
        f"{f.name}:{sha256_file(f)}" for f in files]
    info = {"num_classes": int(hf_config.num_labels), "input_shape": input_shape,
            "model_type": model_type, "path": d, "hashes": hashes}
    return model.eval(), info
