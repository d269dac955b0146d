"""The CI latency-budget gate (docs/LATENCY.md, "The CI gate"): decisions on raw samples, re-measure
pooling, baselines, predict-only checks, and JUnit / GitHub outputs. Verdict and METRICS are
edgekd.verdict's (re-exported here)."""
from __future__ import annotations

from .check import check_models
from .decide import METRICS, Decision, Regression, Verdict, decide, metric_bounds, regression_test
from .outputs import append_step_summary, exit_code, github_lines, junit_xml, markdown_table, to_json
from .plan import plan_gate
from .run import ERROR, BaselineStore, GateResult, bench_measure, gate_one

__all__ = ["METRICS", "Decision", "Regression", "Verdict", "decide", "metric_bounds", "regression_test",
           "append_step_summary", "exit_code", "github_lines", "junit_xml", "markdown_table", "to_json",
           "ERROR", "BaselineStore", "GateResult", "bench_measure", "gate_one", "check_models", "plan_gate"]
