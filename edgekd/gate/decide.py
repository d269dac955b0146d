"""Budget decisions on raw latency samples: PASS, FAIL or INCONCLUSIVE (docs/LATENCY.md, "The CI gate").

Pure functions on numpy arrays, no runtime needed, so every rule is testable on synthetic samples.

One symmetric rule on two one-sided bounds, each at ``confidence`` (default 0.95): PASS when the
upper bound is at or under the budget (and no significant regression), FAIL when the lower bound
is over it, INCONCLUSIVE only when the budget lies between them. How spread out the samples are
(``unstable``) is reported and never vetoes a clear answer: a wide interval already says all
that the spread says about the decision.

Why one-sided bounds and not one two-sided interval: PASS and FAIL are disjoint claims and each
only needs its own bound; a two-sided 95% interval would spend 2.5% per side and widen both for
no gain.

Why an effective sample size: on a shared machine the samples come in bursts (a burst of load
slows hundreds of consecutive calls), so they are not independent and bounds computed as if
they were are too narrow. A quantile's bound rests on the count of samples below it; its
variance is estimated by batch means (the samples cut into ``BATCHES`` consecutive batches, the
variance of the batch fractions below the estimate), and the bound is the order statistic that
the binomial law gives for n_eff = n x p(1-p)/(n x that variance) samples (n_eff = n when the
batches agree as independent samples would; never more than n). The mean's bound uses the
batch means' standard error the same way. A FAIL is confirmed on an independent block of
samples by gate_one (gate/run.py) before it is reported.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..errors import BadInputError
from ..latency.stats import quantile_ci_ranks
from ..verdict import METRICS, Metric, Verdict, judge  # noqa: F401 (METRICS, Verdict re-exported)

# Consecutive batches for the batch-means variance (a fixed count: each batch spans a twentieth
# of the run, long enough to hold a burst of load of a round of the gate's size).
BATCHES = 20
# Below this many samples per batch the batch fractions are too coarse: bounds assume independence.
MIN_BATCH = 10


@dataclass(frozen=True)
class Regression:
    """Current vs baseline: median ratio and the one-sided Mann-Whitney p ("current is slower")."""

    median_ratio: float
    p_value: float
    baseline_n: int
    significant: bool  # p < alpha and median_ratio > max_regression
    source: str = "stored"  # "stored" (--baseline file) or "alternated" (--baseline-model, same job)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    metric: str
    value: float
    ci: tuple[float, float]  # (one-sided lower bound, one-sided upper bound), each at `confidence`
    confidence: float
    budget_ms: float
    n: int
    iqr_over_median: float
    unstable: bool
    regression: Regression | None = None
    n_eff: float | None = None  # effective sample size behind the bounds (batch means)
    judged: str = "raw"  # "raw" samples, or "corrected" for the machine's drift

    def to_dict(self) -> dict:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        d["ci"] = [_finite(v) for v in self.ci]
        d["iqr_over_median"] = _finite(self.iqr_over_median)
        return d

    def numbers(self) -> str:
        """One line with every number behind the verdict (JUnit messages, annotations)."""
        lo, hi = (_fmt(v) for v in self.ci)
        text = (f"{self.metric}={_fmt(self.value)} ms, {self.confidence:.0%} bounds [{lo}, {hi}] ms, "
                f"budget {_fmt(self.budget_ms)} ms, n={self.n}")
        if self.n_eff is not None and self.n_eff < self.n:
            text += f" (effective {self.n_eff:.0f})"
        text += f", IQR/median={self.iqr_over_median:.3f}" + (" unstable" if self.unstable else "")
        if self.judged != "raw":
            text += f", judged on {self.judged} samples"
        if self.regression is not None:
            r = self.regression
            text += f", median ratio vs baseline {r.median_ratio:.3f}, p={r.p_value:.2g}"
        return text


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _fmt(v: float) -> str:
    return "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:.4g}"


def _batch_var_ratio(y: np.ndarray, batches: int = BATCHES) -> float:
    """Batch-means variance of the mean of ``y`` over its i.i.d. variance (>= 1; 1 when it can't be told)."""
    m = y.size // batches
    if m < MIN_BATCH:
        return 1.0
    iid = float(y.var(ddof=1)) / y.size
    if iid <= 0:
        return 1.0
    means = y[: m * batches].reshape(batches, m).mean(axis=1)
    bm = float(means.var(ddof=1)) / batches
    return max(1.0, bm / iid)


def effective_n(samples_ms: Sequence[float], metric: str = "p90", value: float | None = None) -> float:
    """n over the batch-means variance inflation of the statistic behind ``metric`` (samples in
    measured order): the count below the quantile's estimate for a percentile, the samples for the mean."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size < 2:
        return float(x.size)
    q = Metric(metric).quantile
    if q is None:
        return x.size / _batch_var_ratio(x)
    v = float(np.percentile(x, q * 100)) if value is None else value
    return x.size / _batch_var_ratio((x <= v).astype(np.float64))


def metric_bounds(samples_ms: np.ndarray, metric: str, confidence: float,
                  n_eff: float | None = None) -> tuple[float, float, float]:
    """(value, one-sided lower bound, one-sided upper bound), each bound at ``confidence``.

    Percentiles use the distribution-free order-statistic bounds for ``n_eff`` samples (default:
    all of them, as if independent), placed at the same fraction of the n sorted samples; too
    few samples give -inf/+inf, which can never decide. The mean uses mean +- z * s / sqrt(n_eff).
    """
    x = np.sort(np.asarray(samples_ms, dtype=np.float64))
    n = x.size
    ne = float(n if n_eff is None else min(max(n_eff, 1.0), n))
    if metric == "mean":
        from scipy.stats import norm

        mean = float(x.mean())
        if n < 2:
            return mean, -math.inf, math.inf
        half = float(norm.ppf(confidence)) * float(x.std(ddof=1)) / math.sqrt(ne)
        return mean, mean - half, mean + half
    q = Metric(metric).quantile
    value = float(np.percentile(x, q * 100))
    k = int(math.floor(ne))
    lo_r, _ = quantile_ci_ranks(k, q, confidence, sided="lower")
    _, hi_r = quantile_ci_ranks(k, q, confidence, sided="upper")
    lo = float(x[max(1, int(math.floor(lo_r * n / k))) - 1]) if lo_r is not None else -math.inf
    hi = float(x[min(n, int(math.ceil(hi_r * n / k))) - 1]) if hi_r is not None else math.inf
    return value, lo, hi


def regression_test(samples_ms, baseline_ms, *, max_regression: float = 1.05,
                    alpha: float = 0.002, source: str = "stored") -> Regression:
    from scipy.stats import mannwhitneyu

    cur = np.asarray(samples_ms, dtype=np.float64)
    base = np.asarray(baseline_ms, dtype=np.float64)
    ratio = float(np.median(cur) / np.median(base)) if np.median(base) > 0 else math.inf
    p = float(mannwhitneyu(cur, base, alternative="greater").pvalue)
    return Regression(median_ratio=ratio, p_value=p, baseline_n=int(base.size),
                      significant=bool(p < alpha and ratio > max_regression), source=source)


def decide(samples_ms: Sequence[float], budget_ms: float, *, metric: str = "p90", confidence: float = 0.95,
           baseline_samples: Sequence[float] | None = None, max_regression: float = 1.05,
           alpha: float = 0.002, unstable_iqr: float = 0.10, autocorrelated: bool = True,
           baseline_source: str = "stored", judged: str = "raw") -> Decision:
    """PASS when the upper bound of ``metric`` <= budget and no significant regression; FAIL when
    the lower bound > budget, or the baseline test gives p < alpha with median ratio >
    max_regression; otherwise INCONCLUSIVE (the budget inside the interval). ``samples_ms`` in
    measured order: with ``autocorrelated`` the bounds use the batch-means effective sample
    size. ``unstable`` (IQR/median > unstable_iqr) is reported and decides nothing."""
    metric = Metric.parse(metric).value  # BadInputError naming METRICS
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise BadInputError("the gate needs a non-empty list of finite latency samples")
    if not (budget_ms > 0 and math.isfinite(budget_ms)):
        raise BadInputError(f"budget {budget_ms} ms must be a positive number of milliseconds")
    if not 0.5 < confidence < 1.0:
        raise BadInputError(f"confidence {confidence} must lie between 0.5 and 1")
    n_eff = effective_n(x, metric) if autocorrelated else float(x.size)
    value, lo, hi = metric_bounds(x, metric, confidence, n_eff=n_eff)
    p25, p50, p75 = np.percentile(x, [25, 50, 75])
    iqr_med = float((p75 - p25) / p50) if p50 > 0 else math.inf
    unstable = iqr_med > unstable_iqr
    reg = None
    if baseline_samples is not None and len(baseline_samples) > 0:
        reg = regression_test(x, baseline_samples, max_regression=max_regression, alpha=alpha,
                              source=baseline_source)

    def make(verdict: Verdict, reason: str) -> Decision:
        return Decision(verdict=verdict, reason=reason, metric=metric, value=value, ci=(lo, hi),
                        confidence=confidence, budget_ms=float(budget_ms), n=int(x.size),
                        iqr_over_median=iqr_med, unstable=unstable, regression=reg,
                        n_eff=round(float(n_eff), 1), judged=judged)

    bounds = judge(lo, hi, budget_ms)
    if bounds is Verdict.FAIL:
        return make(Verdict.FAIL, f"{metric} lower bound {_fmt(lo)} ms is over the budget {_fmt(budget_ms)} ms")
    if reg is not None and reg.significant:
        what = "the baseline measured alongside" if reg.source == "alternated" else "the baseline"
        return make(Verdict.FAIL, f"median {reg.median_ratio:.3f}x {what} (allowed {max_regression:.3f}x, "
                                  f"p={reg.p_value:.2g} < {alpha:g})")
    if bounds is Verdict.PASS:
        return make(Verdict.PASS, f"{metric} upper bound {_fmt(hi)} ms is within the budget {_fmt(budget_ms)} ms")
    if hi == math.inf:
        return make(Verdict.INCONCLUSIVE, f"too few samples ({x.size}) for an upper bound on {metric}")
    return make(Verdict.INCONCLUSIVE, f"budget {_fmt(budget_ms)} ms lies inside the {metric} interval "
                                      f"[{_fmt(lo)}, {_fmt(hi)}] ms")
