"""Budget decisions on raw latency samples: PASS, FAIL or INCONCLUSIVE (docs/LATENCY.md, "The CI gate").

Pure functions on numpy arrays, no runtime needed, so every rule is testable on synthetic samples.

Why one-sided bounds, each at ``confidence`` (default 0.95), and not one two-sided interval:
PASS ("upper bound <= budget") and FAIL ("lower bound > budget") are disjoint claims and each
only needs its own one-sided bound. With a true metric exactly at the budget, a single look
passes wrongly with probability <= 5% and fails wrongly with probability <= 5%; a two-sided 95%
interval would spend 2.5% per side, widening the interval and raising the INCONCLUSIVE rate for
no gain. A false FAIL is the costly error (it blocks a merge), so ``gate_one`` confirms a FAIL on
a fresh, independent block of samples before reporting it: the worst-case false-fail rate (true
metric exactly at the budget) becomes <= 0.05 x 0.05 = 0.25%, and far below that further from
the budget. tools/bench_gate.py measures it on the 2-core dev machine (1000 bootstrap trials,
1000 samples per round): 0.0% false fails at 80% of the budget and at 100% of it, 100% detection
at 120%. The price is that a truly over-budget model passes a single look with
<= 5% when it sits exactly at the budget; anything clearly over (e.g. 120%) is caught.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..errors import BadInputError
from ..latency.stats import quantile_ci
from ..verdict import METRICS, Metric, Verdict, judge  # noqa: F401 (METRICS, Verdict re-exported)


@dataclass(frozen=True)
class Regression:
    """Current vs baseline: median ratio and the one-sided Mann-Whitney p ("current is slower")."""

    median_ratio: float
    p_value: float
    baseline_n: int
    significant: bool  # p < alpha and median_ratio > max_regression


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
                f"budget {_fmt(self.budget_ms)} ms, n={self.n}, IQR/median={self.iqr_over_median:.3f}")
        if self.regression is not None:
            r = self.regression
            text += f", median ratio vs baseline {r.median_ratio:.3f}, p={r.p_value:.2g}"
        return text


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _fmt(v: float) -> str:
    return "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:.4g}"


def metric_bounds(samples_ms: np.ndarray, metric: str, confidence: float) -> tuple[float, float, float]:
    """(value, one-sided lower bound, one-sided upper bound), each bound at ``confidence``.

    Quantiles use the distribution-free order-statistic bounds (stats.quantile_ci); too few
    samples give -inf/+inf, which can never decide. The mean uses the normal approximation
    mean +- z * s / sqrt(n), fair for the few hundred samples the gate takes.
    """
    x = np.sort(np.asarray(samples_ms, dtype=np.float64))
    if metric == "mean":
        from scipy.stats import norm

        mean = float(x.mean())
        if x.size < 2:
            return mean, -math.inf, math.inf
        half = float(norm.ppf(confidence)) * float(x.std(ddof=1)) / math.sqrt(x.size)
        return mean, mean - half, mean + half
    q = Metric(metric).quantile
    value = float(np.percentile(x, q * 100))
    lo, _ = quantile_ci(x, q, confidence, sided="lower")
    _, hi = quantile_ci(x, q, confidence, sided="upper")
    return value, lo, hi


def regression_test(samples_ms, baseline_ms, *, max_regression: float = 1.05,
                    alpha: float = 0.002) -> Regression:
    from scipy.stats import mannwhitneyu

    cur = np.asarray(samples_ms, dtype=np.float64)
    base = np.asarray(baseline_ms, dtype=np.float64)
    ratio = float(np.median(cur) / np.median(base)) if np.median(base) > 0 else math.inf
    p = float(mannwhitneyu(cur, base, alternative="greater").pvalue)
    return Regression(median_ratio=ratio, p_value=p, baseline_n=int(base.size),
                      significant=bool(p < alpha and ratio > max_regression))


def decide(samples_ms: Sequence[float], budget_ms: float, *, metric: str = "p90", confidence: float = 0.95,
           baseline_samples: Sequence[float] | None = None, max_regression: float = 1.05,
           alpha: float = 0.002, unstable_iqr: float = 0.10) -> Decision:
    """PASS when the upper bound of ``metric`` <= budget and no significant regression; FAIL when
    the lower bound > budget, or the baseline test gives p < alpha with median ratio >
    max_regression; otherwise INCONCLUSIVE (budget inside the interval, or an unstable run)."""
    metric = Metric.parse(metric).value  # BadInputError naming METRICS
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise BadInputError("the gate needs a non-empty list of finite latency samples")
    if not (budget_ms > 0 and math.isfinite(budget_ms)):
        raise BadInputError(f"budget {budget_ms} ms must be a positive number of milliseconds")
    if not 0.5 < confidence < 1.0:
        raise BadInputError(f"confidence {confidence} must lie between 0.5 and 1")
    value, lo, hi = metric_bounds(x, metric, confidence)
    p25, p50, p75 = np.percentile(x, [25, 50, 75])
    iqr_med = float((p75 - p25) / p50) if p50 > 0 else math.inf
    unstable = iqr_med > unstable_iqr
    reg = None
    if baseline_samples is not None and len(baseline_samples) > 0:
        reg = regression_test(x, baseline_samples, max_regression=max_regression, alpha=alpha)

    def make(verdict: Verdict, reason: str) -> Decision:
        return Decision(verdict=verdict, reason=reason, metric=metric, value=value, ci=(lo, hi),
                        confidence=confidence, budget_ms=float(budget_ms), n=int(x.size),
                        iqr_over_median=iqr_med, unstable=unstable, regression=reg)

    bounds = judge(lo, hi, budget_ms)  # the bounds alone; a regression or an unstable run overrides a PASS
    if bounds is Verdict.FAIL:
        return make(Verdict.FAIL, f"{metric} lower bound {_fmt(lo)} ms is over the budget {_fmt(budget_ms)} ms")
    if reg is not None and reg.significant:
        return make(Verdict.FAIL, f"median {reg.median_ratio:.3f}x the baseline (allowed {max_regression:.3f}x, "
                                  f"p={reg.p_value:.2g} < {alpha:g})")
    if unstable:
        return make(Verdict.INCONCLUSIVE, f"unstable run: IQR/median {iqr_med:.3f} > {unstable_iqr:g}")
    if bounds is Verdict.PASS:
        return make(Verdict.PASS, f"{metric} upper bound {_fmt(hi)} ms is within the budget {_fmt(budget_ms)} ms")
    if hi == math.inf:
        return make(Verdict.INCONCLUSIVE, f"too few samples ({x.size}) for an upper bound on {metric}")
    return make(Verdict.INCONCLUSIVE, f"budget {_fmt(budget_ms)} ms lies inside the {metric} interval "
                                      f"[{_fmt(lo)}, {_fmt(hi)}] ms")
