"""Pruned structure as data: the sizes of a model's resizable modules, and how to put them back.

A pruned model no longer matches its spec, so a checkpoint stores its structure as plain data:
``pruned_shapes(model)`` (module path -> sizes of every Conv2d / BatchNorm2d / Linear) goes into
``extra["pruned"]``, and loading builds the spec, resizes those modules (``apply_shapes``) and
then loads the weights. No module is pickled.
"""
from __future__ import annotations

from typing import Any

from ..errors import BadInputError


def pruned_shapes(model) -> dict[str, dict]:
    """module path -> sizes of every Conv2d / BatchNorm2d / Linear (plain data)."""
    from torch import nn

    out: dict[str, dict] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = {"type": "conv2d", "in_channels": m.in_channels,
                         "out_channels": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.BatchNorm2d):
            out[name] = {"type": "bn2d", "num_features": m.num_features}
        elif isinstance(m, nn.Linear):
            out[name] = {"type": "linear", "in_features": m.in_features,
                         "out_features": m.out_features}
    return out


def _resized(m, s: dict, name: str):
    from torch import nn

    kind = s.get("type")
    if kind == "conv2d" and isinstance(m, nn.Conv2d):
        if (m.in_channels, m.out_channels, m.groups) == (s["in_channels"], s["out_channels"],
                                                         s["groups"]):
            return m
        return nn.Conv2d(int(s["in_channels"]), int(s["out_channels"]), m.kernel_size,
                         stride=m.stride, padding=m.padding, dilation=m.dilation,
                         groups=int(s["groups"]), bias=m.bias is not None,
                         padding_mode=m.padding_mode)
    if kind == "bn2d" and isinstance(m, nn.BatchNorm2d):
        if m.num_features == s["num_features"]:
            return m
        return nn.BatchNorm2d(int(s["num_features"]), eps=m.eps, momentum=m.momentum,
                              affine=m.affine, track_running_stats=m.track_running_stats)
    if kind == "linear" and isinstance(m, nn.Linear):
        if (m.in_features, m.out_features) == (s["in_features"], s["out_features"]):
            return m
        return nn.Linear(int(s["in_features"]), int(s["out_features"]), bias=m.bias is not None)
    raise BadInputError(f"pruned structure names '{name}' as {kind}, but the model built from "
                        f"the spec has a {type(m).__name__} there",
                        hint="the checkpoint's spec and pruned shapes do not belong together")


def apply_shapes(model, shapes: dict) -> Any:
    """Resize ``model``'s modules to ``shapes`` (from :func:`pruned_shapes`); weights are fresh,
    load the state dict afterwards."""
    named = dict(model.named_modules())
    for name, s in shapes.items():
        if name not in named or not isinstance(s, dict):
            raise BadInputError(f"pruned structure names module '{name}', which the model built "
                                f"from the spec lacks",
                                hint="the checkpoint's spec and pruned shapes do not belong "
                                     "together")
        new = _resized(named[name], s, name)
        if new is named[name]:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = named[parent_name] if parent_name else model
        setattr(parent, attr, new)
    return model
