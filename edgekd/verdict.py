"""The latency metrics a budget can name, and the one rule that turns a bound into a verdict.

verify, gate, prune, select and the pipeline all judge "is this model within its budget?" the
same way: with a lower and an upper bound on the metric (a confidence interval of measured
samples, a prediction's error band, or a single reading whose bounds are the reading itself),

    PASS          the upper bound is at or under the budget,
    FAIL          the lower bound is over the budget,
    INCONCLUSIVE  the budget lies between the two.

A set of verdicts (a report's checks, a gate's models) combines to its worst: FAIL over
INCONCLUSIVE over PASS.
"""
from __future__ import annotations

from enum import Enum
from typing import Iterable

from .errors import BadInputError


class Metric(str, Enum):
    """A latency figure a budget is held to. Compares equal to its name ("p90" == Metric.p90)."""

    p50 = "p50"
    p90 = "p90"
    p99 = "p99"
    mean = "mean"

    @property
    def quantile(self) -> float | None:
        """0.5 / 0.9 / 0.99 for the percentiles, None for the mean."""
        return _QUANTILE.get(self.value)

    @classmethod
    def parse(cls, value: "str | Metric", allowed: "Iterable[Metric | str] | None" = None,
              what: str = "latency metric") -> "Metric":
        """``value`` as a Metric, or BadInputError naming the metrics allowed here."""
        names = [str(Metric(m).value) for m in allowed] if allowed is not None else [m.value for m in cls]
        text = value.value if isinstance(value, Metric) else str(value)
        if text not in names:
            raise BadInputError(f"unknown {what} '{text}'", hint=f"use one of {', '.join(names)}")
        return cls(text)

    def __str__(self) -> str:  # f"{metric}" prints p90, not Metric.p90
        return self.value


_QUANTILE = {"p50": 0.50, "p90": 0.90, "p99": 0.99}

METRICS: tuple[str, ...] = tuple(m.value for m in Metric)

# The metrics a latency profile predicts, and so the ones select, compress and verify budgets take
# (the gate measures every metric).
PREDICTED: tuple[Metric, ...] = (Metric.p50, Metric.p90)
PREDICTED_METRICS: tuple[str, ...] = tuple(m.value for m in PREDICTED)


class Verdict(str, Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"

    @property
    def passed(self) -> bool:
        return self is Verdict.PASS

    def __str__(self) -> str:
        return self.value


def judge(lower: float, upper: float, budget: float) -> Verdict:
    """The one rule: PASS when ``upper`` <= budget, FAIL when ``lower`` > budget, else INCONCLUSIVE."""
    if upper <= budget:
        return Verdict.PASS
    if lower > budget:
        return Verdict.FAIL
    return Verdict.INCONCLUSIVE


def judge_value(value: float, budget: float) -> Verdict:
    """A single reading taken at its word (its bounds are itself): PASS or FAIL."""
    return judge(value, value, budget)


def worst(verdicts: "Iterable[Verdict | str]") -> Verdict:
    """FAIL if any failed, else INCONCLUSIVE if any was, else PASS (an empty set passes)."""
    got = {Verdict(str(v).upper()) for v in verdicts}
    if Verdict.FAIL in got:
        return Verdict.FAIL
    if Verdict.INCONCLUSIVE in got:
        return Verdict.INCONCLUSIVE
    return Verdict.PASS
