"""What verify reports: its checks, each with a verdict, and the report they make up.

Verdicts here are written in lower case ("pass", "fail", "inconclusive"), as verify's JSON has
always had them; they are edgekd.verdict's Verdict, and a report's verdict is the worst check's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..latency.stats import LatencyStats
from ..verdict import Metric, Verdict, judge, worst

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass
class Check:
    name: str
    verdict: str
    value: Optional[float]
    limit: Optional[float]
    detail: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "verdict": self.verdict, "value": self.value,
                "limit": self.limit, "detail": self.detail}


@dataclass
class VerifyReport:
    artifact: str
    artifact_sha256: str
    target: str
    accuracy: float
    n_val: int
    latency: LatencyStats
    metric: str = "p90"
    budget_ms: Optional[float] = None
    reference_accuracy: Optional[float] = None
    parity: Optional[dict] = None
    checks: list[Check] = field(default_factory=list)
    samples_ms: Any = None
    first_inference_ms: Optional[float] = None
    manifest: Optional[str] = None
    remote: Optional[dict] = None  # set when it ran on a remote target's device: host, port, user, ...

    @property
    def where(self) -> str:
        """'' here, else ' (on device D via user@host:port)'."""
        if not self.remote:
            return ""
        r = self.remote
        who = f"{r['user']}@{r['host']}" if r.get("user") else str(r.get("host"))
        device = self.latency.environment.get("host") or r.get("device_host")
        return f" (on device {device} via {who}:{r.get('port')})"

    @property
    def verdict(self) -> str:
        return as_check(worst(c.verdict for c in self.checks))

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.verdict != PASS]

    def one_line(self) -> str:
        s = self.latency
        parts = [f"accuracy {self.accuracy:.4f} on {self.n_val} samples",
                 f"{self.metric} {s.metric(self.metric):.4f} ms (CI {s.p90_ci[0]:.4f}..{s.p90_ci[1]:.4f}, "
                 f"n {s.n})"]
        if self.budget_ms is not None:
            parts.append(f"budget {self.budget_ms:g} ms")
        return f"{self.verdict.upper()}: " + ", ".join(parts) + self.where

    def to_dict(self, include_samples: bool = False) -> dict:
        d = {"artifact": self.artifact, "artifact_sha256": self.artifact_sha256,
             "target": self.target, "verdict": self.verdict, "passed": self.passed,
             "accuracy": self.accuracy, "n_val": self.n_val, "metric": self.metric,
             "budget_ms": self.budget_ms, "reference_accuracy": self.reference_accuracy,
             "parity": self.parity, "latency": self.latency.to_dict(),
             "first_inference_ms": self.first_inference_ms, "manifest": self.manifest,
             "remote": self.remote, "checks": [c.to_dict() for c in self.checks]}
        if include_samples and self.samples_ms is not None:
            d["samples_ms"] = [round(float(v), 6) for v in self.samples_ms]
        return d


def latency_verdict(stats: LatencyStats, budget_ms: float, metric: str = "p90") -> str:
    """pass/fail/inconclusive of ``metric`` against a budget: the one rule (edgekd.verdict) on the
    p90's confidence interval; other metrics are taken at their reading."""
    if Metric.parse(metric) is Metric.p90:
        lo, hi = stats.p90_ci
    else:
        lo = hi = stats.metric(metric)
    return as_check(judge(lo, hi, budget_ms))


def as_check(verdict: Verdict) -> str:
    """A Verdict as a check's word: pass, fail, inconclusive."""
    return verdict.value.lower()


def check(passed: bool) -> str:
    """A check that is decided by one comparison: pass or fail."""
    return PASS if passed else FAIL
