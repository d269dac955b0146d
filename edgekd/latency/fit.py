"""Fitting the latency predictor to a profile (docs/LATENCY.md "Profiles and prediction"), and the
profile loader that keeps every fit current.

A candidate's latency is predicted from the blocks the runtime executes, measured on the
target: ``predicted = a * sum(block cost) + b``, fitted by least squares (``a`` scale, ``b``
overhead once per inference) on a few whole-model measurements of the same family (the
calibration set). How a block's cost is read (the method and the cache model) is in
latency.cost.

The reading (method and cache model) is chosen once per profile, by the lower leave-one-out
error of the median (p50) fit on the calibration set, and every metric is fitted with it: the
cost structure of a model does not change with the percentile, and p90s are too noisy to choose
by. Readings whose error is within TIE of the chosen one are fitted too and the prediction is
the mean of all of them: a few calibration models cannot rank readings that close. The other
whole-model measurements are held out and give the validation stored in the
profile: the fraction within +-10% of the measured value and the 95th percentile of the
relative error. Whole models are fitted and judged by their drift-corrected readings
(cost.model_latency); the validation also says how the predictions compare with the readings
as measured (``..._raw``).

Profiles are written by save_profile (fitted first) and read by load_profile, which fits again
a calibration stored by another version of the predictor; latency.profile_file holds the file
format itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..verdict import PREDICTED, PREDICTED_METRICS  # noqa: F401 - PREDICTED re-exported
from .cost import (CACHE_MODELS, FEATURE, METHODS, Cache, feature_ms, has_feature, model_latency,
                   readable, reading_label)
from .profile_file import Profile, read_profile_file, write_profile_file

# The metrics the predictor is fitted for (and a budget on a prediction can name).
METRICS = PREDICTED_METRICS
WITHIN = 0.10  # the validation tolerance: +-10%

# How features are computed; a calibration stored by another version is refitted when its
# profile is loaded (its a, b were fitted to other features). 2: footprint = weights only, whole
# models read through their reference (model_latency).
# 3: near-tied readings averaged (Calibration.also); 4: blocks and pairs drift-corrected by the
# probe; 5: the cold ramps to 4 and 8 x L2 (cost.CACHE_MODELS)
PREDICTOR_VERSION = 5

# Readings whose leave-one-out error is within this factor of the best one are averaged: a few
# calibration models cannot rank them (two ort-cpu mobilenetv2 runs whose whole models agreed
# within 5% chose different ones, scoring 96% and 86% held-out). On 17 stored profiles of this
# machine, averaging those within 1.25x scored 93-100% held-out (mean 97.9%); the best alone,
# 86-100% (97.3%); within 1.1x, 93-100% (97.7%); within 1.5x, 86-100% (97.9%).
TIE = 1.25


@dataclass(frozen=True)
class Calibration:
    """latency_metric ~= a * sum(block cost, by median) + b, fitted on ``specs``."""

    metric: str
    a: float
    b: float
    specs: tuple[str, ...]
    residual_ms: float = 0.0  # RMS residual on the calibration set
    method: str = "alone"
    # reading -> leave-one-out mean |rel. error| of the p50 fit ("context 0.25-1.0": method, cache)
    loo: Mapping[str, float] = field(default_factory=dict)
    cache: Cache = CACHE_MODELS[0]
    # the readings the calibration set could not tell from this one (choose_reading: within TIE
    # of its leave-one-out error), each fitted too: {"method", "cache", "a", "b"}
    also: tuple = ()

    def to_dict(self) -> dict:
        return {"metric": self.metric, "a": self.a, "b": self.b, "specs": list(self.specs),
                "residual_ms": self.residual_ms, "method": self.method, "cache": list(self.cache),
                "loo": dict(self.loo), "also": [dict(r, cache=list(r["cache"])) for r in self.also],
                "predictor": PREDICTOR_VERSION}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Calibration":
        return cls(metric=str(d["metric"]), a=float(d["a"]), b=float(d["b"]),
                   specs=tuple(d.get("specs", ())), residual_ms=float(d.get("residual_ms", 0.0)),
                   method=str(d.get("method", "alone")), loo=dict(d.get("loo") or {}),
                   cache=tuple(float(v) for v in d.get("cache", CACHE_MODELS[0])),
                   also=tuple({"method": str(r["method"]), "cache": tuple(float(v) for v in r["cache"]),
                               "a": float(r["a"]), "b": float(r["b"])} for r in d.get("also") or ()))

    def apply(self, block_sum_ms: float) -> float:
        """The first reading's line at ``block_sum_ms`` (``predict`` averages all the readings)."""
        return self.a * block_sum_ms + self.b

    def feature(self, profile: Profile, block_keys: Sequence[str]) -> float:
        """The block-cost sum of the first reading."""
        return feature_ms(profile, block_keys, self.method, self.cache)

    def predict(self, profile: Profile, block_keys: Sequence[str]) -> float:
        """The mean of the readings' predictions: the first, and those of ``also`` the profile can
        give for these blocks (a reading in context needs every adjacent pair measured)."""
        preds = [self.apply(self.feature(profile, block_keys))]
        preds += [r["a"] * feature_ms(profile, block_keys, r["method"], r["cache"]) + r["b"] for r in self.also
                  if has_feature(profile, block_keys, r["method"])]
        return float(sum(preds) / len(preds))

    def has_feature(self, profile: Profile, block_keys: Sequence[str]) -> bool:
        return has_feature(profile, block_keys, self.method)


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares (a, b, rms residual) for y ~= a*x + b, on relative residuals
    ((a*x + b - y) / y: the error that is judged, so a 30-us model counts as much as a 1-ms one).

    With fewer than two distinct x, the scale is fixed at 1 and only the offset is fitted.
    A fit that would make the scale non-positive also falls back to scale 1.
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.size == 0:
        raise ValueError("no calibration points")
    a, b = 1.0, float(np.mean(ys - xs))
    if xs.size >= 2 and float(np.ptp(xs)) > 0:
        w = 1.0 / np.where(ys > 0, ys, 1.0)
        A = np.stack([xs * w, w], axis=1)
        (fa, fb), *_ = np.linalg.lstsq(A, ys * w, rcond=None)
        if fa > 0:
            a, b = float(fa), float(fb)
    rms = float(np.sqrt(np.mean((a * xs + b - ys) ** 2)))
    return a, b, rms


def calibration_indices(n: int) -> list[int]:
    """Which of n capacity-ordered candidates calibrate: a few, evenly spread, both ends included.

    n <= 1: all; 2..4: the two ends; 5..12: three; 13..24: four; more: six. The rest are held
    out. Once the block readings repeat (a line fitted on all 34 models of two openvino-cpu
    mobilenetv2 runs met every one within +-10%), what a held-out prediction misses by is mostly
    the calibration models' own measurement noise (two runs' whole models differ by 9-10%, p95); a
    line through six of a large grid carries less of it than one through four.
    """
    if n <= 1:
        return list(range(n))
    k = 2 if n <= 4 else 3 if n <= 12 else 4 if n <= 24 else 6
    return sorted({int(i * (n - 1) / (k - 1) + 0.5) for i in range(k)})


def loo_error(x: Sequence[float], y: Sequence[float]) -> float:
    """Mean |relative error| of fit_line predicting each point from the others."""
    n = len(x)
    if n < 2:
        return math.inf
    errs = []
    for i in range(n):
        a, b, _ = fit_line([v for j, v in enumerate(x) if j != i], [v for j, v in enumerate(y) if j != i])
        errs.append(abs(a * x[i] + b - y[i]) / y[i] if y[i] > 0 else math.inf)
    return float(np.mean(errs))


def _calibration_set(profile: Profile) -> list:
    usable = [m for m in profile.models_by_capacity()
              if all(k in profile.blocks for k in m.blocks) and readable(profile, m)]
    return [usable[i] for i in calibration_indices(len(usable))]


def choose_reading(profile: Profile) -> tuple[str, Cache, dict, list] | None:
    """(method, cache model, {reading: leave-one-out error}, [(method, cache) of the other
    readings within TIE of it]) of the lowest leave-one-out error of the p50 fit on the
    calibration set, among the readings the profile can give (None: no whole-model entries).
    Ties keep the earlier of METHODS x CACHE_MODELS."""
    cal = _calibration_set(profile)
    if not cal:
        return None
    y = [model_latency(profile, m, FEATURE) for m in cal]
    errors: dict[str, float] = {}
    scored: list[tuple[float, str, Cache]] = []
    best: tuple[float, str, Cache] | None = None
    for method in METHODS:
        if not all(has_feature(profile, m.blocks, method) for m in cal):
            continue
        for cache in CACHE_MODELS:
            err = loo_error([feature_ms(profile, m.blocks, method, cache) for m in cal], y)
            errors[reading_label(method, cache)] = err
            scored.append((err, method, cache))
            if best is None or err < best[0]:
                best = (err, method, cache)
    assert best is not None  # "alone" is always available for usable models
    tied = [(m, c) for e, m, c in scored if (m, c) != best[1:] and math.isfinite(e) and e <= TIE * best[0]]
    return best[1], best[2], errors, tied


def calibrate(profile: Profile, metric: str, reading: tuple | None = None) -> Calibration | None:
    """Fit a, b for ``metric`` on the profile's calibration set (None: no whole-model entries),
    with ``reading`` (from choose_reading; chosen here when None): its line, and one per reading
    tied with it (``also``)."""
    reading = reading or choose_reading(profile)
    if reading is None:
        return None
    method, cache, errors, tied = reading
    cal = _calibration_set(profile)
    y = [model_latency(profile, m, metric) for m in cal]
    a, b, rms = fit_line([feature_ms(profile, m.blocks, method, cache) for m in cal], y)
    also = []
    for m2, c2 in tied:
        a2, b2, _ = fit_line([feature_ms(profile, m.blocks, m2, c2) for m in cal], y)
        also.append({"method": m2, "cache": tuple(c2), "a": a2, "b": b2})
    return Calibration(metric=metric, a=a, b=b, specs=tuple(m.spec for m in cal), residual_ms=rms,
                       method=method, loo=dict(errors), cache=tuple(cache), also=tuple(also))


def validate(profile: Profile, calibration: Calibration) -> dict:
    """Prediction error on the held-out whole-model entries (those not in the calibration set)."""
    rows = []
    for m in profile.models_by_capacity():
        if m.spec in calibration.specs or not calibration.has_feature(profile, m.blocks) or not readable(profile, m):
            continue
        measured = model_latency(profile, m, calibration.metric)
        raw = m.latency.metric(calibration.metric)
        pred = calibration.predict(profile, m.blocks)
        rows.append({"spec": m.spec, "measured_ms": measured, "predicted_ms": pred,
                     "rel_error": (pred - measured) / measured if measured > 0 else math.inf,
                     "measured_raw_ms": raw, "rel_error_raw": (pred - raw) / raw if raw > 0 else math.inf})
    errs = np.abs([r["rel_error"] for r in rows], dtype=np.float64) if rows else np.zeros(0)
    raws = np.abs([r["rel_error_raw"] for r in rows], dtype=np.float64) if rows else np.zeros(0)
    return {
        "metric": calibration.metric,
        "method": calibration.method,
        "cache": list(calibration.cache),
        "n_heldout": len(rows),
        "fraction_within_10pct": float(np.mean(errs <= WITHIN)) if rows else None,
        "p95_rel_error": float(np.percentile(errs, 95)) if rows else None,
        "max_rel_error": float(errs.max()) if rows else None,
        # against the readings as measured, before model_latency takes the drift out
        "fraction_within_10pct_raw": float(np.mean(raws <= WITHIN)) if rows else None,
        "p95_rel_error_raw": float(np.percentile(raws, 95)) if rows else None,
        "heldout": rows,
    }


def fit_profile(profile: Profile) -> tuple[dict, dict]:
    """(calibration, validation) dicts as stored in the profile, for every metric in METRICS.

    The top level of the validation is the p50 one (docs/LATENCY.md's headline number); each metric's
    own is under ``by_metric``.
    """
    calibration: dict = {}
    by_metric: dict = {}
    reading = choose_reading(profile)
    for metric in METRICS:
        cal = calibrate(profile, metric, reading)
        if cal is None:
            continue
        calibration[metric] = cal.to_dict()
        by_metric[metric] = validate(profile, cal)
    if not by_metric:
        return {}, {}
    head = dict(by_metric.get("p50") or next(iter(by_metric.values())))
    head["by_metric"] = {k: {kk: vv for kk, vv in v.items() if kk != "heldout"}
                         for k, v in by_metric.items()}
    head["heldout_specs"] = [r["spec"] for r in head["heldout"]]
    return calibration, head


def refit(profile: Profile) -> None:
    """Fit the predictor to the profile's entries now: its calibration and validation."""
    profile.calibration, profile.validation = fit_profile(profile)


def save_profile(profile: Profile, path: "str | Path", *, refit: bool = True) -> Path:
    """Refit the predictor and write the whole profile atomically (never half-written)."""
    if refit:
        profile.calibration, profile.validation = fit_profile(profile)
    return write_profile_file(profile, path)


def load_profile(path: "str | Path") -> Profile:
    """Read a profile (BadInputError for a missing, truncated, corrupt or foreign file); one
    calibrated by another version of the predictor is fitted again (not written back)."""
    prof = read_profile_file(path)
    if any(c.get("predictor") != PREDICTOR_VERSION or "cache" not in c
           for c in (prof.calibration or {}).values()):
        refit(prof)
    return prof
