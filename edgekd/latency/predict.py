"""The latency predictor (LATENCY.md "Profiles and prediction").

A candidate's latency is predicted from the blocks the runtime executes, measured on the
target: ``predicted = a * sum(block cost) + b``, fitted by least squares (``a`` scale, ``b``
overhead once per inference) on a few whole-model measurements of the same family (the
calibration set).

A block's cost is read in one of two ways (the "method"):

- ``alone``: the block measured on its own, less the per-inference overhead.
- ``context``: the first block alone, then each next block as the smaller of its cost alone
  and ``pair(prev, block) - alone(prev)``, where the pair is the two blocks measured together.
  A runtime that changes the memory layout at a model's inputs and outputs, or fuses across
  blocks (OpenVINO's CPU plugin does both), pays those costs once per model, but once per block
  when blocks run alone; the pair difference removes them. A block inside a model never pays
  more than alone; a pair whose weights spill out of L2 pays weight traffic that the cold
  correction below adds again, so the smaller of the two readings is kept. These differences
  are a few microseconds taken from readings ten times larger, summed over ~20 blocks: the
  profiler measures each pair in alternation with its first block alone, and each block with
  the overhead model, so that the machine's drift between one entry and the next does not
  enter them (profiles made before keep the readings of the separate entries).

A block's cost depends on where its weights are when it runs. Measured alone, its weights stay
in the core's L2 cache between runs ("hot", less the runtime's per-inference overhead measured
on a trivial model); measured as several copies with their own weights, run back to back, its
weights come from beyond L2 ("cold", per copy). In a whole model the weights of all blocks
share L2 with each other and with the runtime's code and state: a model whose footprint
(its weights) is small runs its blocks hot; one well beyond L2 runs them cold (a
model's weights are read in the same order every inference, so once they overflow the cache
each block evicts the next one's); in between the cold extra is interpolated linearly. Where
the runtime starts and stops paying (the "cache model": footprint / L2 at which blocks start to
run cold, and at which they all do) depends on how it lays weights out and what else it keeps
in cache, so it is chosen per profile too, from CACHE_MODELS.

The reading (method and cache model) is chosen once per profile, by the lower leave-one-out
error of the median (p50) fit on the calibration set, and every metric is fitted with it: the
cost structure of a model does not change with the percentile, and p90s are too noisy to choose
by. Readings whose error is within TIE of the chosen one are fitted too and the prediction is
the mean of all of them: a few calibration models cannot rank readings that close. The other
whole-model measurements are held out and give the validation stored in the
profile: the fraction within +-10% of the measured value and the 95th percentile of the
relative error.

Whole models are measured one after another over minutes while the machine's speed drifts by
several percent; each is measured in alternation with one reference model held loaded through
the run, and the value fitted and judged (model_latency) is its reading scaled by how fast the
reference ran at that moment against how fast it ran typically over the run. The validation
also says how the predictions compare with the readings as measured (``..._raw``).

Pure arithmetic on a Profile; nothing here measures or imports a runtime.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from ..errors import BadInputError

if TYPE_CHECKING:  # pragma: no cover
    from .profile import Profile

METRICS = ("p50", "p90")
METHODS = ("alone", "context")
# Blocks are summed by their medians for every metric: a whole model's p90 is not the sum of its
# blocks' p90s; its tail is fitted (a, b per metric) on the calibration set instead.
FEATURE = "p50"
WITHIN = 0.10  # the validation tolerance: +-10%


# How features are computed; a calibration stored by another version is refitted when its
# profile is loaded (its a, b were fitted to other features). 2: footprint = weights only, whole
# models read through their reference (model_latency).
PREDICTOR_VERSION = 3  # 3: near-tied readings averaged (Calibration.also)

# Readings whose leave-one-out error is within this factor of the best one are averaged: a few
# calibration models cannot rank them (two ort-cpu mobilenetv2 runs whose whole models agreed
# within 5% chose different ones, scoring 96% and 86% held-out). On 17 stored profiles of this
# machine, averaging those within 1.25x scored 93-100% held-out (mean 97.9%); the best alone,
# 86-100% (97.3%); within 1.1x, 93-100% (97.7%); within 1.5x, 86-100% (97.9%).
TIE = 1.25

# (hot below, all cold from): footprint / L2. The first is the default of profiles calibrated
# before the cache model was chosen per profile.
CACHE_MODELS = ((0.5, 1.5), (0.25, 1.0), (0.5, 1.0), (0.25, 1.5))
Cache = tuple  # (hot_below, cold_above)


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

    def feature(self, profile: "Profile", block_keys: Sequence[str]) -> float:
        """The block-cost sum of the first reading."""
        return feature_ms(profile, block_keys, self.method, self.cache)

    def predict(self, profile: "Profile", block_keys: Sequence[str]) -> float:
        """The mean of the readings' predictions: the first, and those of ``also`` the profile can
        give for these blocks (a reading in context needs every adjacent pair measured)."""
        preds = [self.apply(self.feature(profile, block_keys))]
        preds += [r["a"] * feature_ms(profile, block_keys, r["method"], r["cache"]) + r["b"] for r in self.also
                  if has_feature(profile, block_keys, r["method"])]
        return float(sum(preds) / len(preds))

    def has_feature(self, profile: "Profile", block_keys: Sequence[str]) -> bool:
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


def model_latency(profile: "Profile", model, metric: str) -> float:
    """A whole model's measured ``metric`` with the machine's drift taken out: its reading times
    ``typical / reference``, where ``reference`` is the profile's reference model measured in
    alternation with it (median) and ``typical`` the median of the reference's readings over
    every model measured with the same load of it (one per profiling process; a reference's
    level also moves with its load). The result is on the scale of the run's typical moment.
    Models measured without a reference (profiles made before) keep their reading."""
    raw = model.latency.metric(metric)
    ref = getattr(model, "reference", None)
    if ref is None or not ref.p50 > 0:
        return raw
    return raw * _typical_reference(profile, model.reference_load) / ref.p50


def _typical_reference(profile: "Profile", load: str) -> float:
    vals = [m.reference.p50 for m in profile.models
            if m.reference is not None and m.reference.p50 > 0 and m.reference_load == load]
    return float(np.median(vals))


DEFAULT_L2_BYTES = 2 << 20
BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


def net_block_ms(profile: "Profile", key: str, metric: str) -> float:
    """A block's latency alone (weights in cache) less the per-inference overhead (>= 0): the
    overhead measured in alternation with the block where the profile has it, else the
    profile's one overhead entry."""
    block = profile.blocks.get(key)
    if block is None:
        raise KeyError(key)
    overhead = block.overhead.metric(metric) if block.overhead is not None else profile.overhead_metric(metric)
    return max(block.latency.metric(metric) - overhead, 0.0)


def in_pair_ms(profile: "Profile", pair_key: str, metric: str) -> float:
    """What the pair's second block adds to its first: ``pair - first alone``, with the first
    alone measured in alternation with the pair where the profile has it (else its block entry).
    May be negative: the pair drops the layout change after the first block that it paid alone."""
    pair = profile.pairs[pair_key]
    head = pair.first_alone if pair.first_alone is not None else profile.blocks[pair.first].latency
    return pair.latency.metric(metric) - head.metric(metric)


def footprint_bytes(profile: "Profile", block_keys: Sequence[str]) -> float:
    """What a model has to keep in cache from one inference to the next: its weights (bytes at
    the target's precision). Activations are not counted: a block's are written and read again
    at once and stay near the core whatever the model's size; it is the weights, read once per
    inference in the same order, that the next inference finds evicted or not. (Counting twice
    the largest activation working set too, as before, put models with few wide blocks too far
    up the ramp: on 20 stored profiles of this machine, weights alone scored 88-100% held-out,
    mean 97.5%, against 71-100%, mean 93%.)"""
    per = BYTES_PER_WEIGHT.get(str(profile.target.get("precision", "fp32")), 4)
    return float(per * sum(int(profile.blocks[k].signature.get("params", 0) or 0) for k in block_keys))


def cold_fraction(profile: "Profile", block_keys: Sequence[str], cache: Cache = CACHE_MODELS[0]) -> float:
    """0 while the model's footprint is at most cache[0] x L2, 1 from cache[1] x L2 up, linear
    in between."""
    hot_below, cold_above = cache
    l2 = float((profile.protocol or {}).get("l2_bytes") or DEFAULT_L2_BYTES)
    frac = (footprint_bytes(profile, block_keys) / l2 - hot_below) / (cold_above - hot_below)
    return min(max(frac, 0.0), 1.0)


def _require(profile: "Profile", keys: Sequence[str], stored: Mapping, what: str) -> None:
    """BadInputError naming the first of ``keys`` the profile has no ``what`` measurement for."""
    missing = [k for k in keys if k not in stored]
    if missing:
        raise BadInputError(f"profile {profile.label} has no measurement for {what} '{missing[0]}' "
                            f"({len(missing)} missing)",
                            hint="re-run `edgekd profile --resume` with a grid that contains this candidate")


def _cold_shift(profile: "Profile", block_keys: Sequence[str], metric: str, cache: Cache) -> float:
    """What the blocks add when their weights come from beyond L2 (cold_fraction of the way)."""
    f = cold_fraction(profile, block_keys, cache)
    if f == 0.0:
        return 0.0
    total = 0.0
    for k in block_keys:
        cold = profile.blocks[k].latency_cold
        if cold is not None:
            total += f * (cold.metric(metric) - net_block_ms(profile, k, metric))
    return total


def block_sum_ms(profile: "Profile", block_keys: Sequence[str], metric: str,
                 cache: Cache = CACHE_MODELS[0]) -> float:
    """Sum of the blocks' costs measured alone, for a model made of them (method ``alone``)."""
    block_keys = list(block_keys)
    _require(profile, block_keys, profile.blocks, "block")
    hot = sum(net_block_ms(profile, k, metric) for k in block_keys)
    return float(hot + _cold_shift(profile, block_keys, metric, cache))


def context_sum_ms(profile: "Profile", block_keys: Sequence[str], metric: str,
                   cache: Cache = CACHE_MODELS[0]) -> float:
    """The blocks' costs in context (method ``context``): the first alone, each next one as
    min(alone, pair(prev, it) - alone(prev))."""
    from .profile import model_pairs

    block_keys = list(block_keys)
    _require(profile, block_keys, profile.blocks, "block")
    pairs = model_pairs(block_keys)
    _require(profile, pairs, profile.pairs, "block pair")
    total = net_block_ms(profile, block_keys[0], metric) if block_keys else 0.0
    for key, pk in zip(block_keys[1:], pairs):
        total += min(in_pair_ms(profile, pk, metric), net_block_ms(profile, key, metric))
    return float(total + _cold_shift(profile, block_keys, metric, cache))


def has_feature(profile: "Profile", block_keys: Sequence[str], method: str) -> bool:
    from .profile import model_pairs

    if not all(k in profile.blocks for k in block_keys):
        return False
    return method == "alone" or all(k in profile.pairs for k in model_pairs(block_keys))


def feature_ms(profile: "Profile", block_keys: Sequence[str], method: str = "alone",
               cache: Cache = CACHE_MODELS[0]) -> float:
    """The block-cost sum a calibration of ``method`` and ``cache`` applies to (by medians: FEATURE)."""
    if method == "context":
        return context_sum_ms(profile, block_keys, FEATURE, cache)
    if method == "alone":
        return block_sum_ms(profile, block_keys, FEATURE, cache)
    raise BadInputError(f"unknown predictor method '{method}'", hint=f"use one of {', '.join(METHODS)}")


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


def cache_label(cache: Sequence[float]) -> str:
    """A cache model as text, e.g. 0.25-1: footprint / L2 where blocks start to run cold, and
    where they all do."""
    return "-".join(f"{float(v):g}" for v in cache)


def reading_label(method: str, cache: Cache) -> str:
    return f"{method} {cache_label(cache)}"


def _calibration_set(profile: "Profile") -> list:
    usable = [m for m in profile.models_by_capacity() if all(k in profile.blocks for k in m.blocks)]
    return [usable[i] for i in calibration_indices(len(usable))]


def choose_reading(profile: "Profile") -> tuple[str, Cache, dict, list] | None:
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


def calibrate(profile: "Profile", metric: str, reading: tuple | None = None) -> Calibration | None:
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


def validate(profile: "Profile", calibration: Calibration) -> dict:
    """Prediction error on the held-out whole-model entries (those not in the calibration set)."""
    rows = []
    for m in profile.models_by_capacity():
        if m.spec in calibration.specs or not calibration.has_feature(profile, m.blocks):
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


def fit_profile(profile: "Profile") -> tuple[dict, dict]:
    """(calibration, validation) dicts as stored in the profile, for every metric in METRICS.

    The top level of the validation is the p50 one (LATENCY.md's headline number); each metric's
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


def epsilon(profile: "Profile", metric: str, default: float = WITHIN) -> float:
    """The profile's p95 relative error for ``metric`` (``default`` when nothing was held out)."""
    v = profile.validation or {}
    m = (v.get("by_metric") or {}).get(metric) or {}
    eps = m.get("p95_rel_error", v.get("p95_rel_error"))
    return float(eps) if eps is not None and math.isfinite(eps) else default


def get_calibration(profile: "Profile", metric: str) -> Calibration:
    d = (profile.calibration or {}).get(metric)
    if d is None:
        cal = calibrate(profile, metric)
        if cal is None:
            raise BadInputError(f"profile {profile.label} has no whole-model measurements to calibrate "
                                f"the {metric} predictor",
                                hint="profile at least one candidate (edgekd profile --resume)")
        return cal
    return Calibration.from_dict(d)


def predict_blocks(profile: "Profile", block_keys: Sequence[str], metric: str = "p90") -> float:
    """Predicted latency (ms) of a model made of these blocks."""
    if metric not in METRICS:
        raise BadInputError(f"unknown latency metric '{metric}'", hint=f"use one of {', '.join(METRICS)}")
    cal = get_calibration(profile, metric)
    return cal.predict(profile, block_keys)


def predict(profile: "Profile", spec: str, metric: str = "p90") -> float:
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
