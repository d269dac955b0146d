"""gate_one: measure one model on one target, re-measuring while INCONCLUSIVE; baselines."""
from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import Budget
from ..errors import BadInputError
from ..latency.environment import describe_mismatch
from ..verdict import Verdict
from .decide import Decision, decide

log = logging.getLogger(__name__)

BASELINE_SCHEMA = "edgekd.gate-baseline/v1"
ERROR = "ERROR"  # status of a pair whose target can't run here (exit 4)
_MAX_STORED = 2000  # more samples than this are stored as this many sorted quantiles
# Samples per round. The one-sided 95% lower bound of p90 is the order statistic near quantile
# 0.9 - 1.645 * sqrt(0.09 / n): p86.5 at n = 300, p88.4 at n = 1000. Latency on a shared machine
# is heavy-tailed (on the 2-core dev box p87 is 0.83 x p90), so with 300 samples a model at 120%
# of its budget is caught only ~20% of the time; with 1000 it is caught in every trial
# (tools/bench_gate.py). 1000 also makes p99 usable (>= 662).
GATE_MIN_SAMPLES = 1000


@dataclass
class GateResult:
    model: str
    target: str
    budget: Budget
    status: str  # Verdict value, or ERROR
    decision: Decision | None = None
    rounds: int = 0
    round_verdicts: list[str] = field(default_factory=list)
    environment: Mapping[str, Any] = field(default_factory=dict)
    model_sha256: str = ""
    baseline_used: bool = False
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    source: str = "measured"  # or "predicted" (--predict-only)
    elapsed_s: float = 0.0
    samples_ms: np.ndarray | None = None
    judged: str = "raw"  # "raw" samples, or "corrected" for the machine's drift (judged_samples)
    drift_factor: float | None = None  # the machine's speed factor over the run, when measured
    memory: dict | None = None  # latency.memory.MemoryUse.to_dict(), when memory budgets were given

    @property
    def name(self) -> str:
        return f"{self.model} [{self.target}]"

    @property
    def message(self) -> str:
        if self.error:
            return self.error
        d = self.decision
        return f"{self.status}: {d.reason} ({d.numbers()})" if d else self.status

    def to_dict(self) -> dict:
        return {"model": self.model, "target": self.target, "status": self.status,
                "budget": self.budget.model_dump(), "decision": self.decision.to_dict() if self.decision else None,
                "rounds": self.rounds, "round_verdicts": list(self.round_verdicts), "source": self.source,
                "baseline_used": self.baseline_used, "warnings": list(self.warnings), "error": self.error,
                "model_sha256": self.model_sha256, "elapsed_s": round(self.elapsed_s, 3),
                "judged": self.judged, "drift_factor": self.drift_factor, "memory": self.memory,
                "environment": dict(self.environment)}


# --- measurement ---------------------------------------------------------------------------

def bench_measure(*, min_iters: int | None = None, work_dir: "str | Path | None" = None,
                  **settings_update: Any) -> Callable:
    """The real measure_fn: edgekd.latency.bench.bench with the target's protocol, at least
    GATE_MIN_SAMPLES samples per round unless ``min_iters`` says otherwise, and any other
    MeasureSettings field overridden. Returns (model, TargetSpec) -> BenchResult."""
    update = dict(settings_update)

    def measure(model: str, target):
        from ..latency.bench import bench

        return bench(model, target, work_dir=work_dir, settings=gate_settings(target, min_iters, update))
    return measure


def gate_settings(target, min_iters: int | None, update: "Mapping[str, Any]") -> Any:
    """The target's MeasureSettings for one gate round: at least GATE_MIN_SAMPLES samples unless
    ``min_iters`` says otherwise, and the fields in ``update`` overridden."""
    settings = target.measure
    want = min_iters if min_iters is not None else max(settings.min_iters, GATE_MIN_SAMPLES)
    return type(settings).model_validate({**settings.model_dump(), "min_iters": want, **update})


# Adaptive re-measurement: rounds while undecided, up to this many seconds per model x target
# (--max-time-s) and --max-rounds rounds.
DEFAULT_MAX_TIME_S = 60.0
DEFAULT_MAX_ROUNDS = 20


def _number(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def judged_samples(m: Any) -> tuple[np.ndarray, str, float | None]:
    """(samples to judge, "raw" or "corrected", machine speed factor or None) of one measurement.

    A BenchResult measured with the target's reference workload against a stored calibration
    (latency.bench, `edgekd calibrate`) carries ``drift`` (its ``factor``: reference p50 now /
    at calibration, > 1 when the machine ran slower) and ``corrected`` figures; the gate then
    judges corrected samples: per-sample corrected ones when the measurement carries them
    (``corrected_samples_ms``, as latency.bench's BenchResult does), else the samples divided
    by the run's speed factor. Without a calibration the raw samples are judged. Read defensively: anything missing means raw."""
    raw = np.asarray(m.samples_ms, dtype=np.float64)
    drift = getattr(m, "drift", None)
    if drift is None:
        return raw, "raw", None
    get = drift.get if isinstance(drift, Mapping) else (lambda k, d=None: getattr(drift, k, d))
    factor = _number(get("factor"))
    calibrated = bool(getattr(m, "corrected", None) is not None or get("calibrated", False)
                      or _number(get("calibrated_p50_ms")))
    if not calibrated:
        return raw, "raw", factor
    c = getattr(m, "corrected_samples_ms", None)
    if c is not None:
        c = np.asarray(c, dtype=np.float64)
        if c.size and np.all(np.isfinite(c)):
            return c, "corrected", factor
    if factor is not None:
        return raw / factor, "corrected", factor
    return raw, "raw", None


def gate_one(model: str, target, budget: Budget, *, measure_fn: Callable | None = None,
             baselines: "BaselineStore | None" = None, max_rounds: int = DEFAULT_MAX_ROUNDS,
             max_time_s: float | None = DEFAULT_MAX_TIME_S, alpha: float = 0.002,
             unstable_iqr: float | None = None, clock: Callable[[], float] = time.monotonic,
             autocorrelated: bool = True) -> GateResult:
    """Measure and decide; while undecided, measure another round and decide on all rounds pooled.

    Stops as soon as a verdict is confirmed: a PASS or FAIL of the pooled samples is reported
    only when the rounds measured after it, pooled on their own (independent of the samples
    that first gave it), give it too, so neither one burst of machine load nor one calm
    stretch decides the gate (with ``max_rounds`` 1 one look decides). No round starts after
    ``max_rounds`` rounds, or
    when another round of the mean length so far would end past ``max_time_s`` seconds since
    the first began (``clock``, injectable). Undecided then: INCONCLUSIVE.

    ``measure_fn(model, target_spec)`` returns an object with ``samples_ms`` and
    ``environment`` (default: bench); optional ``drift`` / corrected samples (judged_samples),
    and ``baseline_samples_ms``: a baseline artifact measured in alternation with the model in
    the same round (--baseline-model), which then stands in for a stored baseline.
    ``autocorrelated=False`` computes bounds as if samples were independent (for comparison).
    RuntimeMissingError (exit 4) propagates: never a pass."""
    from ..targets import load_target

    if max_rounds < 1:
        raise BadInputError(f"--max-rounds {max_rounds} must be at least 1")
    if max_time_s is not None and not max_time_s > 0:
        raise BadInputError(f"--max-time-s {max_time_s} must be a positive number of seconds")
    spec = load_target(target)
    measure_fn = measure_fn or bench_measure()
    iqr = unstable_iqr if unstable_iqr is not None else spec.measure.unstable_iqr
    res = GateResult(model=str(model), target=spec.name, budget=budget, status=Verdict.INCONCLUSIVE.value)
    blocks: list[np.ndarray] = []
    alt_blocks: list[np.ndarray] = []
    stored = None
    factors: list[float] = []
    labels: set[str] = set()

    def run_decide(x, base):
        return decide(x, budget.budget_ms, metric=budget.metric, confidence=budget.confidence,
                      baseline_samples=base, max_regression=budget.max_regression, alpha=alpha,
                      unstable_iqr=iqr, baseline_source="alternated" if alt_blocks else "stored",
                      judged="corrected" if labels == {"corrected"} else "raw", autocorrelated=autocorrelated)

    d = None
    candidate: Verdict | None = None  # a verdict of the pooled samples awaiting confirmation
    confirm_from = 0  # first round of the independent block that must confirm it
    confirmed = False
    t0 = clock()
    for r in range(1, max_rounds + 1):
        if r > 1 and max_time_s is not None and (clock() - t0) * r / (r - 1) > max_time_s:
            res.warnings.append(f"time cap --max-time-s {max_time_s:g} s reached after {r - 1} rounds")
            break
        m = measure_fn(str(model), spec)
        block, label, factor = judged_samples(m)
        labels.add(label)
        if factor is not None:
            factors.append(factor)
        alt = getattr(m, "baseline_samples_ms", None)
        if alt is not None:
            alt_blocks.append(np.asarray(alt, dtype=np.float64))
        if r == 1:
            res.environment = dict(getattr(m, "environment", {}) or {})
            res.model_sha256 = str(getattr(m, "model_sha256", "") or "")
            if baselines is not None and alt is None:
                stored, warn = baselines.lookup(str(model), spec.name, res.environment)
                res.baseline_used = stored is not None
                if warn:
                    res.warnings.append(warn)
                    log.warning(warn)
        blocks.append(block)
        base = np.concatenate(alt_blocks) if alt_blocks else stored
        d = run_decide(np.concatenate(blocks), base)
        res.rounds = r
        res.round_verdicts.append(d.verdict.value)
        if d.verdict == Verdict.INCONCLUSIVE:
            candidate = None
            continue
        if max_rounds == 1:
            confirmed = True
            break
        if d.verdict != candidate:
            candidate, confirm_from = d.verdict, r  # blocks[r:] (the rounds after this one) must agree
            continue
        alt_conf = np.concatenate(alt_blocks[confirm_from:]) if alt_blocks else stored
        if run_decide(np.concatenate(blocks[confirm_from:]), alt_conf).verdict == candidate:
            confirmed = True
            break
    res.baseline_used = res.baseline_used or bool(alt_blocks)
    res.decision = d
    res.elapsed_s = clock() - t0
    res.samples_ms = np.concatenate(blocks)
    res.judged = "corrected" if labels == {"corrected"} else "raw"
    res.drift_factor = float(np.median(factors)) if factors else None
    res.status = d.verdict.value
    if d.verdict != Verdict.INCONCLUSIVE and not confirmed:
        res.status = Verdict.INCONCLUSIVE.value
        res.warnings.append(f"{d.verdict.value} on the pooled samples was not confirmed by an independent later "
                            f"block within {res.rounds} rounds (machine load?): reported INCONCLUSIVE")
    return res


# --- baselines -----------------------------------------------------------------------------

class BaselineStore:
    """Per model x target samples (or sorted quantiles) with the environment they were taken in."""

    def __init__(self, entries: list[dict] | None = None, path: "str | Path | None" = None):
        self.entries = list(entries or [])
        self.path = path

    @classmethod
    def load(cls, path: "str | Path") -> "BaselineStore":
        from ..util_io import read_versioned_json

        p = Path(path)
        data = read_versioned_json(p, BASELINE_SCHEMA, what="gate baseline", hint="write it with --save-baseline")
        entries = data.get("entries") or []
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or not e.get("model") or not e.get("target") or not (
                    e.get("samples_ms") or e.get("quantiles_ms")):
                raise BadInputError(f"{p}: entries[{i}] needs model, target and samples_ms or quantiles_ms")
        return cls(entries, p)

    def _find(self, model: str, target: str) -> dict | None:
        m = Path(model)
        exact = [e for e in self.entries if e["target"] == target and Path(e["model"]).as_posix() == m.as_posix()]
        if exact:
            return exact[-1]
        by_name = [e for e in self.entries if e["target"] == target and Path(e["model"]).name == m.name]
        return by_name[-1] if len(by_name) == 1 else None

    def lookup(self, model: str, target: str, environment: Mapping[str, Any]) -> tuple[np.ndarray | None, str | None]:
        """(baseline samples, None), or (None, warning) when the fingerprint differs; (None, None) if absent."""
        e = self._find(model, target)
        if e is None:
            return None, None
        diff = describe_mismatch(e.get("environment") or {}, environment)
        if diff:
            return None, f"baseline for {model} on {target} ignored: environment differs ({diff})"
        vals = e.get("samples_ms") or e.get("quantiles_ms")
        return np.asarray(vals, dtype=np.float64), None

    def update(self, result: GateResult) -> None:
        if result.samples_ms is None or result.samples_ms.size == 0:
            return
        x = np.sort(result.samples_ms)
        entry: dict[str, Any] = {"model": Path(result.model).as_posix(), "target": result.target,
                                 "model_sha256": result.model_sha256, "n": int(x.size),
                                 "environment": dict(result.environment)}
        if x.size > _MAX_STORED:
            qs = np.quantile(x, (np.arange(_MAX_STORED) + 0.5) / _MAX_STORED)
            entry["quantiles_ms"] = [round(float(v), 6) for v in qs]
        else:
            entry["samples_ms"] = [round(float(v), 6) for v in x]
        self.entries = [e for e in self.entries
                        if not (e["target"] == entry["target"] and Path(e["model"]).as_posix() == entry["model"])]
        self.entries.append(entry)

    def save(self, path: "str | Path") -> Path:
        from ..util_io import atomic_write_json

        return atomic_write_json(path, {"schema": BASELINE_SCHEMA,
                                        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                        "entries": self.entries})
