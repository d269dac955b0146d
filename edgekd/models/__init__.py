"""Student models: scalable pure-torch families addressed by spec strings, MACs and params.

    parse_spec("mobilenetv2:width=0.5,res=32")   -> StudentConfig (canonical .spec)
    build_model(spec, num_classes=10, in_channels=1) -> nn.Module (.features, .classifier)
    input_shape(spec, in_channels)               -> (C, H, W)
    count_macs_params(model, (C, H, W))          -> (macs, params)
    family_names(), family_grid(family, "small" | "default") -> specs ordered by capacity
    block_signatures(spec, in_channels)          -> per-block dicts (key, shapes, macs, params)
    build_block(signature)                       -> (nn.Module, input shape)

Importing this package does not import torch; building a model does.
"""
from __future__ import annotations

from typing import Any

from ..errors import BadInputError
from .count import count_macs_params, count_params
from .spec import (FAMILIES, Family, KnobConfig, StudentConfig, block_signatures, family_grid,
                   family_names, get_family, input_shape, parse_spec)


def build_model(spec: "str | StudentConfig", *, num_classes: int, in_channels: int) -> Any:
    """Build the student ``spec`` describes for ``num_classes`` classes and ``in_channels``
    input channels (both from the data). The model is in train mode, freshly initialised, and
    carries ``.edgekd_spec`` (the canonical spec string)."""
    from torch import nn

    from .nets import build_from_plan
    from .spec import _check_positive

    cfg = parse_spec(spec)
    _check_positive("num_classes", num_classes)
    _check_positive("in_channels", in_channels)
    fam = get_family(cfg.family)
    if fam.build is not None:
        model = fam.build(cfg.config, num_classes=num_classes, in_channels=in_channels)
    else:
        model = build_from_plan(fam.plan(cfg.config, in_channels, num_classes))
    if not isinstance(getattr(model, "features", None), nn.Module) or not isinstance(
            getattr(model, "classifier", None), nn.Linear):
        raise BadInputError(f"student family '{cfg.family}' built a model without .features "
                            f"and a .classifier nn.Linear",
                            hint="fix the family's build function")
    model.edgekd_spec = cfg.spec
    return model


def build_block(signature: dict) -> Any:
    """(module, input shape) for one entry of :func:`block_signatures`."""
    from .nets import build_block as _build_block

    return _build_block(signature)


__all__ = ["FAMILIES", "Family", "KnobConfig", "StudentConfig", "block_signatures", "build_block",
           "build_model", "count_macs_params", "count_params", "family_grid", "family_names",
           "get_family", "input_shape", "parse_spec"]
