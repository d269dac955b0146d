"""Student spec strings ("family:key=value,...") parsed into validated per-family configs.

A family is a :class:`Family`: a name, a pydantic config class whose fields are the family's
knobs (with their ranges), a ``plan`` that turns a config into block signatures
(:mod:`edgekd.models.plan`), and its candidate grids. Families live in the registry
``FAMILIES`` (kind "student family"); third parties add one through the entry-point group
``edgekd.families`` (the entry point names a :class:`Family` object) or with
``FAMILIES.register("name")(family)``.

This module does not import torch.
"""
from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import BadInputError
from ..registry import Registry

FAMILIES: Registry["Family"] = Registry("student family", entry_point_group="edgekd.families")
FAMILIES.register_lazy("mobilenetv2", "edgekd.models.families:MOBILENETV2")
FAMILIES.register_lazy("resnet", "edgekd.models.families:RESNET")
FAMILIES.register_lazy("convnet", "edgekd.models.families:CONVNET")
FAMILIES.register_lazy("hf-mobilenetv2", "edgekd.models.hf:HF_MOBILENETV2")
FAMILIES.register_lazy("hf-mobilevit", "edgekd.models.hf:HF_MOBILEVIT")
FAMILIES.register_lazy("hf-resnet", "edgekd.models.hf:HF_RESNET")
FAMILIES.register_lazy("hf-efficientnet", "edgekd.models.hf:HF_EFFICIENTNET")

GRID_NAMES = ("small", "default")
SPEC_EXAMPLE = "mobilenetv2:width=0.5,res=32"


class KnobConfig(BaseModel):
    """Base class of a family's knobs. Fields are knobs, in the order the canonical spec writes
    them. A field may carry ``json_schema_extra={"allowed": "..."}`` to describe its allowed
    values in errors; otherwise the description comes from its type and bounds."""

    model_config = ConfigDict(extra="forbid")

    # knobs accepted on input but implied by others, hence left out of the canonical spec
    input_only_knobs: ClassVar[tuple[str, ...]] = ()

    def knob_strings(self) -> dict[str, str]:
        out = {}
        for name in type(self).model_fields:
            if name in self.input_only_knobs:
                continue
            out[name] = format_value(getattr(self, name))
        return out


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, (tuple, list)):
        return "-".join(format_value(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class Family:
    """A scalable student family.

    ``plan(config, in_channels, num_classes)`` returns the block signatures, body first and
    the ``head`` last. The model is built from them unless ``build(config, num_classes=...,
    in_channels=...)`` is given; a model must expose ``.features``, ``.classifier`` (an
    ``nn.Linear``) and take ``(N, in_channels, res, res)``. ``build_block(signature)`` builds
    blocks of kinds that are not built in (see :mod:`edgekd.models.plan`).
    ``capacity(config, in_channels, num_classes)`` -> ``(macs, params)`` ranks the family's
    grids where its plan cannot: a family whose blocks are not described yet raises
    BadInputError from ``plan`` (no block signatures, no profile) and gives ``capacity``.
    ``rank`` is what selection under a budget takes as the most capacity by default
    (latency.select.RANKS): "params" (then MACs) or "macs" (then params), for families whose
    resolutions carry real detail (a 224-px model has its 128-px twin's params).
    """

    config: type[KnobConfig]
    plan: Callable[..., list[dict]]
    grids: Mapping[str, Sequence[str]] = field(default_factory=dict)
    build: Callable[..., Any] | None = None
    build_block: Callable[[dict], Any] | None = None
    description: str = ""
    capacity: Callable[..., tuple[int, int]] | None = None
    rank: str = "params"

    def knobs(self) -> list[str]:
        return list(self.config.model_fields)


class StudentConfig:
    """A parsed, validated student spec: ``family``, ``knobs`` (typed values) and ``spec``
    (the canonical string: every knob, in the family's order). Equal specs compare equal."""

    __slots__ = ("family", "config", "spec")

    def __init__(self, family: str, config: KnobConfig):
        self.family = family
        self.config = config
        knobs = ",".join(f"{k}={v}" for k, v in config.knob_strings().items())
        self.spec = f"{family}:{knobs}" if knobs else family

    @property
    def knobs(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.model_dump().items()
                if k not in self.config.input_only_knobs}

    @property
    def res(self) -> int:
        """Input resolution (every family has a square ``res`` knob)."""
        res = getattr(self.config, "res", None)
        if not isinstance(res, int):
            raise BadInputError(f"student family '{self.family}' has no integer 'res' knob",
                                hint="give the family's config a res field")
        return res

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StudentConfig) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def __str__(self) -> str:
        return self.spec

    def __repr__(self) -> str:
        return f"StudentConfig({self.spec!r})"


def get_family(name: str) -> Family:
    fam = FAMILIES.get(name)
    if not isinstance(fam, Family):
        raise BadInputError(f"student family '{name}' is registered as {type(fam).__name__}, "
                            f"not an edgekd.models.Family",
                            hint="register a Family object (see edgekd.models.spec)")
    return fam


def family_names() -> list[str]:
    return FAMILIES.names()


def _split(spec: str) -> tuple[str, dict[str, str]]:
    if not isinstance(spec, str) or not spec.strip():
        raise BadInputError(f"empty student spec {spec!r}",
                            hint=f"write family:key=value,..., e.g. {SPEC_EXAMPLE}")
    family, _, rest = spec.strip().partition(":")
    family = family.strip()
    if not family:
        raise BadInputError(f"student spec '{spec}' has no family before ':'",
                            hint=f"write family:key=value,..., e.g. {SPEC_EXAMPLE}")
    raw: dict[str, str] = {}
    for part in rest.split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise BadInputError(f"bad knob '{part.strip()}' in student spec '{spec}'",
                                hint=f"write key=value pairs separated by commas, e.g. {SPEC_EXAMPLE}")
        if key in raw:
            raise BadInputError(f"knob '{key}' is given twice in student spec '{spec}'",
                                hint="give each knob once")
        raw[key] = value
    return family, raw


def _annotation_kind(annotation: Any) -> str:
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _annotation_kind(inner[0]) if inner else "a value"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    return "a value"


def allowed_text(config: type[KnobConfig], knob: str) -> str:
    """Human description of a knob's allowed values, from its type and bounds."""
    info = config.model_fields[knob]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "allowed" in extra:
        return str(extra["allowed"])
    lo = hi = ""
    for meta in info.metadata:
        for attr, text in (("gt", "<"), ("ge", "<=")):
            if getattr(meta, attr, None) is not None:
                lo = f"{format_value(getattr(meta, attr))} {text} "
        for attr, text in (("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                hi = f" {text} {format_value(getattr(meta, attr))}"
    kind = _annotation_kind(info.annotation)
    return f"{kind}, {lo}{knob}{hi}" if (lo or hi) else kind


def _validation_error(family: str, config: type[KnobConfig], raw: dict[str, str], spec: str,
                      exc: ValidationError) -> BadInputError:
    err = exc.errors()[0]
    loc = err.get("loc") or ()
    knob = str(loc[0]) if loc else None
    if knob in config.model_fields:
        value = raw.get(knob, err.get("input"))
        reason = ""
        if err.get("type") == "value_error":
            reason = f" ({str(err.get('msg', '')).removeprefix('Value error, ')})"
        return BadInputError(f"bad value for {family} knob '{knob}': '{value}'{reason}",
                             hint=f"allowed: {allowed_text(config, knob)}")
    msg = str(err.get("msg", exc)).removeprefix("Value error, ")
    return BadInputError(f"bad student spec '{spec}': {msg}")


def parse_spec(spec: "str | StudentConfig") -> StudentConfig:
    """Parse ``"family:key=value,..."`` into a validated :class:`StudentConfig`.

    Unknown family, unknown knob and bad values raise BadInputError naming the family list,
    the valid knobs, or the knob with its value and allowed range.
    """
    if isinstance(spec, StudentConfig):
        return spec
    family, raw = _split(spec)
    fam = get_family(family)
    cfg_cls = fam.config
    valid = [k for k in cfg_cls.model_fields if k not in cfg_cls.input_only_knobs]
    valid += list(cfg_cls.input_only_knobs)
    for key in raw:
        if key not in cfg_cls.model_fields:
            close = difflib.get_close_matches(key, valid, n=1)
            did = f" (did you mean '{close[0]}'?)" if close else ""
            raise BadInputError(f"unknown knob '{key}' for student family '{family}'{did}",
                                hint=f"valid knobs: {', '.join(valid)}")
    try:
        cfg = cfg_cls.model_validate(raw)
    except ValidationError as exc:
        raise _validation_error(family, cfg_cls, raw, spec, exc) from None
    return StudentConfig(family, cfg)


def input_shape(spec: "str | StudentConfig", in_channels: int) -> tuple[int, int, int]:
    """``(C, H, W)`` a student built from ``spec`` takes (batch not included)."""
    cfg = parse_spec(spec)
    _check_positive("in_channels", in_channels)
    return int(in_channels), cfg.res, cfg.res


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInputError(f"{name} must be a positive integer, got {value!r}",
                            hint=f"pass {name} from the dataset (e.g. 1 for grayscale)")


def block_signatures(spec: "str | StudentConfig", in_channels: int, *,
                     num_classes: int = 10) -> list[dict[str, Any]]:
    """The blocks a runtime executes for ``spec``, in order: stem, body blocks, head.

    Each entry is a plain dict with ``kind``, ``key`` (stable string identifying the block's
    computation), the kind's fields, ``in_shape``/``out_shape`` (no batch), ``macs``,
    ``params``, ``family`` and ``name`` (its module path in the built model). Their MACs and
    params add up to the model's.
    """
    from .plan import name_blocks

    cfg = parse_spec(spec)
    _check_positive("in_channels", in_channels)
    _check_positive("num_classes", num_classes)
    fam = get_family(cfg.family)
    return name_blocks(fam.plan(cfg.config, in_channels, num_classes), cfg.family)


def family_grid(family: str, grid: str = "default", *, in_channels: int = 3,
                num_classes: int = 10) -> list[str]:
    """Canonical candidate specs of ``family``, unique and ordered by capacity (params, then
    MACs, at ``in_channels``/``num_classes``), smallest first. ``grid`` is "small" (about 6
    candidates) or "default" (18 to 34, for digits-size inputs, res 16..32)."""
    from .plan import totals

    fam = get_family(family)
    if grid not in fam.grids:
        known = ", ".join(fam.grids) or "none"
        raise BadInputError(f"unknown grid '{grid}' for student family '{family}'",
                            hint=f"known grids: {known}")
    ranked = {}
    for spec in fam.grids[grid]:
        cfg = parse_spec(spec if ":" in spec or spec == family else f"{family}:{spec}")
        if cfg.family != family:
            raise BadInputError(f"grid '{grid}' of family '{family}' lists '{spec}' of "
                                f"another family", hint="fix the family's grid")
        if fam.capacity is not None:
            macs, params = fam.capacity(cfg.config, in_channels, num_classes)
        else:
            macs, params = totals(fam.plan(cfg.config, in_channels, num_classes))
        ranked[cfg.spec] = (params, macs, cfg.spec)
    return [s for s, _ in sorted(ranked.items(), key=lambda kv: kv[1])]
