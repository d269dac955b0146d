"""Latency statistics from raw per-inference samples: percentiles, a distribution-free
confidence interval for any quantile from order statistics, and stability flags.

Pure numpy/scipy; shared by measurement, profiles and the CI gate.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

# p99 is only reported as trustworthy from this many samples (docs/LATENCY.md).
P99_MIN_SAMPLES = 662


def quantile_ci_ranks(n: int, q: float, confidence: float = 0.95,
                      sided: str = "two") -> tuple[int | None, int | None]:
    """1-based ranks (l, u) of the order statistics bounding the q-quantile.

    For X_(1) <= ... <= X_(n): P(X_(l) <= xi_q <= X_(u)) >= confidence, from the
    binomial law of the count of samples below xi_q (distribution-free). ``sided`` is
    "two" (alpha split), "upper" (only u, one-sided) or "lower" (only l). A rank that does
    not exist for this n (too few samples) is None.
    """
    from scipy.stats import binom

    if n <= 0:
        return None, None
    alpha = 1.0 - confidence
    a_lo = alpha / 2 if sided == "two" else alpha
    lo = hi = None
    if sided in ("two", "lower"):
        # largest l with P(B <= l-1) <= a_lo, B ~ Bin(n, q)
        k = int(binom.ppf(a_lo, n, q))
        while k >= 0 and binom.cdf(k - 1, n, q) > a_lo:
            k -= 1
        lo = k if k >= 1 else None
    if sided in ("two", "upper"):
        # smallest u with P(B >= u) <= a_lo, i.e. cdf(u-1) >= 1 - a_lo
        k = int(binom.ppf(1 - a_lo, n, q)) + 1
        while k - 1 >= 0 and binom.cdf(k - 2, n, q) >= 1 - a_lo:
            k -= 1
        hi = k if k <= n else None
    return lo, hi


def quantile_ci(sorted_samples: np.ndarray, q: float, confidence: float = 0.95,
                sided: str = "two") -> tuple[float, float]:
    """Values of the order-statistic bounds; -inf/+inf where the sample is too small."""
    n = len(sorted_samples)
    lo, hi = quantile_ci_ranks(n, q, confidence, sided)
    lo_v = float(sorted_samples[lo - 1]) if lo is not None else -math.inf
    hi_v = float(sorted_samples[hi - 1]) if hi is not None else math.inf
    if sided == "upper":
        lo_v = -math.inf
    if sided == "lower":
        hi_v = math.inf
    return lo_v, hi_v


def _json_float(x: float) -> float | None:
    return None if (x is None or not math.isfinite(x)) else float(x)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of n timed inferences, in milliseconds."""

    n: int
    warmup: int
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    cv: float
    iqr_over_median: float
    p90_ci: tuple[float, float]
    confidence: float
    unstable: bool
    p99_trustworthy: bool
    environment: Mapping[str, Any] = field(default_factory=dict)
    # samples during which the process was descheduled (involuntary context switches; 0 when
    # not observed); they are in these figures, and left out of drift-corrected ones
    disturbed: int = 0

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], *, warmup: int = 0, confidence: float = 0.95,
                     unstable_iqr: float = 0.10,
                     environment: Mapping[str, Any] | None = None, disturbed: int = 0) -> "LatencyStats":
        x = np.sort(np.asarray(samples_ms, dtype=np.float64))
        if x.size == 0:
            raise ValueError("no latency samples")
        if not np.all(np.isfinite(x)):
            raise ValueError("latency samples contain NaN or infinity")
        p25, p50, p75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
        mean = float(x.mean())
        std = float(x.std(ddof=1)) if x.size > 1 else 0.0
        iqr_med = float((p75 - p25) / p50) if p50 > 0 else math.inf
        return cls(
            n=int(x.size), warmup=int(warmup), p50=float(p50), p90=float(p90), p99=float(p99),
            mean=mean, std=std, min=float(x[0]), max=float(x[-1]),
            cv=(std / mean) if mean > 0 else math.inf,
            iqr_over_median=iqr_med,
            p90_ci=quantile_ci(x, 0.90, confidence),
            confidence=confidence,
            unstable=bool(iqr_med > unstable_iqr),
            p99_trustworthy=bool(x.size >= P99_MIN_SAMPLES),
            environment=dict(environment or {}),
            disturbed=int(disturbed),
        )

    def metric(self, name: str) -> float:
        if name not in ("p50", "p90", "p99", "mean", "min", "max"):
            raise ValueError(f"unknown latency metric '{name}'")
        return float(getattr(self, name))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["p90_ci"] = [_json_float(v) for v in self.p90_ci]
        d["cv"] = _json_float(self.cv)
        d["iqr_over_median"] = _json_float(self.iqr_over_median)
        d["environment"] = dict(self.environment)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LatencyStats":
        d = dict(d)
        ci = d.get("p90_ci") or [None, None]
        d["p90_ci"] = (-math.inf if ci[0] is None else float(ci[0]),
                       math.inf if ci[1] is None else float(ci[1]))
        d["cv"] = math.inf if d.get("cv") is None else d["cv"]
        d["iqr_over_median"] = math.inf if d.get("iqr_over_median") is None else d["iqr_over_median"]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


# A budget derived from a measurement (the demo's, compress's) rests on the model, not on
# interference: its p90, but never more than its p50 x this margin. On a quiet machine the small
# CNNs edgekd makes read p90/p50 of 1.02-1.10; on a busy one the p90 is the tail of other work
# (a teacher read p90 3.97 ms at p50 0.43 ms).
ROBUST_P90_MARGIN = 1.10


def robust_p90(stats: LatencyStats) -> tuple[float, str]:
    """(value, how): ``min(p90, p50 x ROBUST_P90_MARGIN)`` and which of the two it was."""
    capped = stats.p50 * ROBUST_P90_MARGIN
    if stats.p90 <= capped:
        return float(stats.p90), "p90"
    return float(capped), f"p50 x {ROBUST_P90_MARGIN:g} (p90 {stats.p90:.4g} ms was {stats.p90 / stats.p50:.2f}x p50)"


def instability_note(stats: LatencyStats, what: str) -> str | None:
    """A warning when a measurement something rests on was unstable or its tail was interference."""
    parts = []
    if stats.unstable:
        parts.append(f"unstable (IQR/median {stats.iqr_over_median:.3f})")
    if stats.p90 > stats.p50 * ROBUST_P90_MARGIN:
        parts.append(f"p90 {stats.p90:.4g} ms is {stats.p90 / stats.p50:.2f}x its p50")
    if stats.disturbed and stats.n and stats.disturbed / stats.n > 0.05:
        parts.append(f"{stats.disturbed} of {stats.n} samples disturbed")
    return f"the measurement of {what} was " + "; ".join(parts) if parts else None
