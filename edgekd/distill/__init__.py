"""Knowledge distillation: losses (pure functions + registry), feature taps, the criterion.

Names load lazily so importing this package does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_API: dict[str, str] = {
    "build_criterion": "criterion:build_criterion",
    "Criterion": "criterion:Criterion",
    "FeatureTaps": "taps:FeatureTaps",
    "penultimate_path": "taps:penultimate_path",
    "LOSSES": "losses:LOSSES",
    "LossInfo": "losses:LossInfo",
}


def __getattr__(name: str) -> Any:
    ref = _API.get(name)
    if ref is None:
        raise AttributeError(f"module 'edgekd.distill' has no attribute '{name}'")
    mod, _, attr = ref.partition(":")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(_API)
