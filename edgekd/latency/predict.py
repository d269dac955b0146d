"""The latency predictor (docs/LATENCY.md "Profiles and prediction"): what a candidate is predicted
to take on a profile's target, and the error margin that goes with the prediction.

``predicted = a * sum(block cost) + b``: the block costs (the features) are read as
latency.cost says, ``a`` and ``b`` are fitted per metric on a few whole models of the profile
as latency.fit says, and the profile's held-out validation gives the margin (epsilon) a budget
check allows the prediction. The names of both are re-exported here: this module is the
predictor's front door.

Pure arithmetic on a Profile; nothing here measures or imports a runtime.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..errors import BadInputError
from ..verdict import Metric
from .cost import (BYTES_PER_WEIGHT, CACHE_MODELS, DEFAULT_L2_BYTES, FEATURE, METHODS,  # noqa: F401 (re-exported)
                   Cache, block_sum_ms, cache_label, cold_fraction, context_sum_ms, feature_ms,
                   footprint_bytes, has_feature, in_pair_ms, model_latency, net_block_ms, reading_label)
from .fit import (METRICS, PREDICTED, PREDICTOR_VERSION, TIE, WITHIN, Calibration,  # noqa: F401 (re-exported)
                  calibrate, calibration_indices, choose_reading, fit_line, fit_profile, loo_error, refit,
                  validate)
from .profile_file import Profile


def check_metric(metric: "str | Metric", what: str = "latency metric") -> str:
    """``metric`` if the predictor is fitted for it (METRICS), else BadInputError naming them."""
    return Metric.parse(metric, allowed=PREDICTED, what=what).value


def margin(profile: Profile, metric: str) -> float | None:
    """The profile's p95 relative prediction error for ``metric``: its own validation
    (``validation.by_metric``), or the headline (p50) one for a metric it has none for; None
    when nothing was held out."""
    v = profile.validation or {}
    m = (v.get("by_metric") or {}).get(str(metric)) or {}
    eps = m.get("p95_rel_error", v.get("p95_rel_error"))
    return float(eps) if eps is not None and math.isfinite(eps) else None


def epsilon(profile: Profile, metric: str, default: float = WITHIN) -> float:
    """The profile's p95 relative error for ``metric`` (``default`` when nothing was held out)."""
    eps = margin(profile, metric)
    return eps if eps is not None else default


def get_calibration(profile: Profile, metric: str) -> Calibration:
    d = (profile.calibration or {}).get(metric)
    if d is None:
        cal = calibrate(profile, metric)
        if cal is None:
            raise BadInputError(f"profile {profile.label} has no whole-model measurements to calibrate "
                                f"the {metric} predictor",
                                hint="profile at least one candidate (edgekd profile --resume)")
        return cal
    return Calibration.from_dict(d)


def predict_blocks(profile: Profile, block_keys: Sequence[str], metric: str = "p90") -> float:
    """Predicted latency (ms) of a model made of these blocks."""
    metric = check_metric(metric)
    cal = get_calibration(profile, metric)
    return cal.predict(profile, block_keys)


def predict(profile: Profile, spec: str, metric: str = "p90") -> float:
    """Predicted latency (ms) of candidate ``spec`` on the profile's target.

    A spec stored in the profile uses its stored block list; any other spec is decomposed with
    the models module and works when all of its blocks are in the profile.
    """
    entry = profile.model(spec)
    if entry is not None:
        keys = entry.blocks
    else:
        from ..models import block_signatures, parse_spec

        canon = parse_spec(spec).spec
        entry = profile.model(canon)
        keys = entry.blocks if entry is not None else [
            s["key"] for s in block_signatures(canon, profile.in_channels,
                                                      num_classes=profile.num_classes)]
    return predict_blocks(profile, keys, metric)
