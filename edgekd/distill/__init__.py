"""Knowledge distillation: losses (pure functions + registry), feature taps, the criterion.

Names load lazily so importing this package does not import torch.
"""
from __future__ import annotations

from .._lazy import lazy_api

_API: dict[str, str] = {
    "build_criterion": "criterion:build_criterion",
    "Criterion": "criterion:Criterion",
    "FeatureTaps": "taps:FeatureTaps",
    "penultimate_path": "taps:penultimate_path",
    "LOSSES": "losses:LOSSES",
    "LossInfo": "losses:LossInfo",
}


__getattr__, __dir__ = lazy_api(__name__, _API, globals())
