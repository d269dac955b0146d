"""The gate's decisions on synthetic samples, re-measure pooling, baselines, budgets.yaml and outputs."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from edgekd.config import Budget, load_budgets
from edgekd.errors import BadInputError
from edgekd.gate import (BaselineStore, Verdict, decide, gate_one, github_lines, junit_xml, markdown_table,
                         append_step_summary, exit_code, metric_bounds)
from edgekd.gate.run import ERROR, GateResult

ENV = {"cpu": "cpu-a", "logical_cores": 2, "threads": 1, "runtime": "onnxruntime", "runtime_version": "1.0",
       "precision": "fp32", "batch": 1, "device": "cpu"}


def lat(n=400, median=1.0, spread=0.02, seed=0):
    """Latency-like samples: a lognormal body around ``median`` ms (IQR/median about 1.35*spread)."""
    rng = np.random.default_rng(seed)
    return median * np.exp(rng.normal(0.0, spread, n))


# --- decide ----------------------------------------------------------------------------------

def test_clear_pass():
    x = lat()
    d = decide(x, 1.5)
    assert d.verdict == Verdict.PASS
    assert d.ci[1] <= 1.5 and d.ci[0] <= d.value <= d.ci[1]
    assert d.metric == "p90" and d.n == 400 and not d.unstable


def test_clear_fail():
    d = decide(lat(), 0.8)
    assert d.verdict == Verdict.FAIL
    assert d.ci[0] > 0.8 and "lower bound" in d.reason


def test_budget_inside_interval_is_inconclusive():
    x = lat()
    p90 = float(np.percentile(x, 90))
    d = decide(x, p90)
    assert d.verdict == Verdict.INCONCLUSIVE
    assert d.ci[0] <= p90 < d.ci[1] and "inside" in d.reason


def test_unstable_but_clearly_under_budget_passes():
    x = lat(2000, median=0.02, spread=0.3)  # IQR/median ~0.4, 23x under the budget
    d = decide(x, 0.5)
    assert d.unstable and d.iqr_over_median > 0.10
    assert d.verdict == Verdict.PASS and "unstable" in d.numbers()


def test_unstable_but_clearly_over_budget_fails():
    x = lat(2000, median=2.0, spread=0.3)
    d = decide(x, 1.0)
    assert d.unstable and d.verdict == Verdict.FAIL and d.ci[0] > 1.0


def test_bursty_samples_widen_the_bounds():
    """Samples slowed in one long burst are not independent: the bounds use fewer effective samples."""
    from edgekd.gate.decide import effective_n

    calm = lat(2000, seed=5)
    bursty = calm.copy()
    bursty[500:800] *= 1.5
    assert effective_n(bursty, "p90") < 0.3 * bursty.size
    _, lo_iid, hi_iid = metric_bounds(bursty, "p90", 0.95)
    d = decide(bursty, 10.0)
    assert d.n_eff < d.n and d.ci[0] <= lo_iid and d.ci[1] >= hi_iid and (d.ci[1] - d.ci[0]) > (hi_iid - lo_iid)
    shuffled = np.random.default_rng(0).permutation(bursty)  # the same values, no bursts
    assert effective_n(shuffled, "p90") > 0.6 * shuffled.size


def test_bounds_are_one_sided_order_statistics():
    from edgekd.latency.stats import quantile_ci_ranks

    x = np.sort(lat(300))
    lo_rank, _ = quantile_ci_ranks(300, 0.9, 0.95, sided="lower")
    _, hi_rank = quantile_ci_ranks(300, 0.9, 0.95, sided="upper")
    d = decide(x, 10.0, autocorrelated=False)
    assert d.ci == (x[lo_rank - 1], x[hi_rank - 1])
    assert 270 < hi_rank < 282 and 258 < lo_rank < 270  # tighter than the two-sided 95% ranks


def test_p99_needs_enough_samples_and_mean_metric():
    d = decide(lat(50), 100.0, metric="p99")
    assert d.verdict == Verdict.INCONCLUSIVE and d.ci[1] == math.inf and "too few" in d.reason
    m = decide(lat(), 1.1, metric="mean")
    assert m.verdict == Verdict.PASS and m.ci[0] < m.value < m.ci[1]


def test_significant_regression_vs_baseline_fails_within_budget():
    base = lat(400, 1.0, seed=1)
    cur = lat(400, 1.10, seed=2)
    d = decide(cur, 5.0, baseline_samples=base)
    assert d.verdict == Verdict.FAIL
    assert d.regression.significant and d.regression.p_value < 0.002 and d.regression.median_ratio > 1.05
    assert "baseline" in d.reason


def test_noise_vs_baseline_is_not_a_regression():
    base = lat(400, 1.0, seed=1)
    cur = lat(400, 1.0, seed=3)
    d = decide(cur, 5.0, baseline_samples=base)
    assert d.verdict == Verdict.PASS and not d.regression.significant
    small = decide(lat(400, 1.03, seed=4), 5.0, baseline_samples=base)  # real but allowed (< 5%)
    assert small.verdict == Verdict.PASS and small.regression.p_value < 0.002


def test_bad_inputs():
    with pytest.raises(BadInputError):
        decide([], 1.0)
    with pytest.raises(BadInputError):
        decide(lat(), -1.0)
    with pytest.raises(BadInputError, match="metric"):
        decide(lat(), 1.0, metric="p95")


# --- gate_one: pooling, confirmation, runtime missing ----------------------------------------

class FakeMeasure:
    """measure_fn returning prepared blocks in order, counting calls."""

    def __init__(self, blocks, env=ENV):
        self.blocks, self.env, self.calls = list(blocks), env, 0

    def __call__(self, model, target):
        self.calls += 1
        return SimpleNamespace(samples_ms=self.blocks.pop(0), environment=dict(self.env), model_sha256="abc")


def test_pooling_remeasures_while_inconclusive():
    from edgekd.gate import metric_bounds

    blocks = [lat(60, seed=s) for s in range(3)]
    _, _, hi_one = metric_bounds(blocks[0], "p90", 0.95)
    _, _, hi_all = metric_bounds(np.concatenate(blocks), "p90", 0.95)
    assert hi_all < hi_one  # pooling narrows the interval
    b = Budget(budget_ms=(hi_one + hi_all) / 2)
    assert decide(blocks[0], b.budget_ms).verdict == Verdict.INCONCLUSIVE
    fm = FakeMeasure(blocks + [lat(60, seed=s) for s in range(3, 20)])
    r = gate_one("m.onnx", "ort-cpu", b, measure_fn=fm, max_rounds=20)
    assert r.round_verdicts[0] == "INCONCLUSIVE" and r.status == "PASS"
    assert r.decision.n == 60 * r.rounds and fm.calls == r.rounds >= 3  # a PASS, then rounds that confirm it


def test_inconclusive_after_max_rounds():
    fm = FakeMeasure([lat(60, seed=s) for s in range(2)])
    p90 = float(np.percentile(lat(100000, seed=9), 90))
    r = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=p90), measure_fn=fm, max_rounds=2)
    assert r.status == "INCONCLUSIVE" and r.rounds == 2


def test_fail_needs_confirmation_by_an_independent_round():
    burst = lat(300, 2.0, seed=1)  # one round under heavy load
    calm = [lat(300, 1.0, seed=s) for s in (2, 3)]
    r = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.5), measure_fn=FakeMeasure([burst] + calm), max_rounds=3)
    assert r.round_verdicts[0] == "FAIL" and r.status != "FAIL"
    slow = [lat(300, 2.0, seed=s) for s in (4, 5)]
    r2 = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.5), measure_fn=FakeMeasure(slow), max_rounds=3)
    assert r2.status == "FAIL" and r2.rounds == 2
    r3 = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.5), measure_fn=FakeMeasure([burst]), max_rounds=1)
    assert r3.status == "FAIL"


def test_runtime_missing_propagates():
    from edgekd.errors import RuntimeMissingError

    def missing(model, target):
        raise RuntimeMissingError("no tensorrt here")

    with pytest.raises(RuntimeMissingError):
        gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.0), measure_fn=missing)


# --- baselines ---------------------------------------------------------------------------------

def _store_with(tmp_path, env):
    r = GateResult(model="models/a.onnx", target="ort-cpu", budget=Budget(budget_ms=5), status="PASS",
                   environment=env, samples_ms=lat(400, 1.0, seed=1))
    s = BaselineStore()
    s.update(r)
    path = s.save(tmp_path / "base.json")
    return BaselineStore.load(path)


def test_baseline_regression_through_gate_one(tmp_path):
    store = _store_with(tmp_path, ENV)
    fm = FakeMeasure([lat(400, 1.2, seed=s) for s in (7, 8)])
    r = gate_one("models/a.onnx", "ort-cpu", Budget(budget_ms=5), measure_fn=fm, baselines=store)
    assert r.baseline_used and r.status == "FAIL" and r.decision.regression.median_ratio > 1.05


def test_baseline_with_other_fingerprint_is_ignored(tmp_path):
    store = _store_with(tmp_path, {**ENV, "cpu": "another-cpu"})
    fm = FakeMeasure([lat(400, 1.2, seed=7), lat(400, 1.2, seed=8)])
    r = gate_one("models/a.onnx", "ort-cpu", Budget(budget_ms=5), measure_fn=fm, baselines=store)
    assert not r.baseline_used and r.status == "PASS" and r.decision.regression is None
    assert any("ignored" in w and "another-cpu" in w for w in r.warnings)


def test_baseline_stores_quantiles_for_many_samples(tmp_path):
    r = GateResult(model="a.onnx", target="ort-cpu", budget=Budget(budget_ms=5), status="PASS",
                   environment=ENV, samples_ms=lat(5000))
    s = BaselineStore()
    s.update(r)
    loaded = BaselineStore.load(s.save(tmp_path / "b.json"))
    vals, warn = loaded.lookup("a.onnx", "ort-cpu", ENV)
    assert warn is None and len(vals) == 2000 and np.all(np.diff(vals) >= 0)


# --- budgets.yaml --------------------------------------------------------------------------------

def test_budgets_file_defaults_and_matching(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.onnx").write_bytes(b"x")
    (tmp_path / "models" / "b.onnx").write_bytes(b"x")
    f = tmp_path / "budgets.yaml"
    f.write_text("defaults: {metric: p90, confidence: 0.95, max_regression: 1.05}\n"
                 "budgets:\n"
                 "  - models: \"models/*.onnx\"\n    targets: [ort-cpu, openvino-cpu]\n    budget_ms: 2.5\n"
                 "  - models: models/b.onnx\n    targets: ort-cpu\n    budget_ms: 1.0\n    metric: p50\n")
    cfg = load_budgets(f)
    pairs = cfg.pairs()
    assert len(pairs) == 4
    b = cfg.budget_for(tmp_path / "models" / "b.onnx", "ort-cpu")
    assert b.budget_ms == 1.0 and b.metric == "p50" and b.confidence == 0.95  # last match wins
    assert cfg.budget_for(tmp_path / "models" / "a.onnx", "openvino-cpu").budget_ms == 2.5
    assert cfg.budget_for(tmp_path / "models" / "a.onnx", "tensorrt-fp16") is None


@pytest.mark.parametrize("text,needle", [
    ("budgets:\n  - models: a.onnx\n    targets: [ort-cpu]\n    budget_ms: -2\n", ":4: field 'budgets.0.budget_ms'"),
    ("budgets:\n  - models: a.onnx\n    targets: [ort-cpu]\n    budget_ms: 2\n    metric: p95\n",
     ":5: field 'budgets.0.metric'"),
    ("budgets:\n  - models: a.onnx\n    budget_ms: 2\n", "field 'budgets.0.targets'"),
    ("budgets:\n  - models: a.onnx\n    targets: [ort-cpu]\n    budget_ms: 2\n    budjet: 3\n",
     ":5: field 'budgets.0.budjet'"),
    ("budgets: [\n  {models: a\n", "not valid YAML"),
    ("- 1\n- 2\n", "must be a mapping"),
])
def test_budgets_file_errors_name_file_line_and_field(tmp_path, text, needle):
    f = tmp_path / "budgets.yaml"
    f.write_text(text)
    with pytest.raises(BadInputError) as ei:
        load_budgets(f)
    assert "budgets.yaml" in str(ei.value) and needle in str(ei.value)


# --- outputs ---------------------------------------------------------------------------------------

def _results():
    b = Budget(budget_ms=1.5)
    out = []
    for name, med in (("a.onnx", 1.0), ("b.onnx", 2.0)):
        x = lat(300, med)
        d = decide(x, 1.5)
        out.append(GateResult(model=name, target="ort-cpu", budget=b, status=d.verdict.value, decision=d,
                              rounds=1, round_verdicts=[d.verdict.value]))
    x = lat(300, 1.0)
    d = decide(x, float(np.percentile(x, 90)))
    out.append(GateResult(model="c.onnx", target="ort-cpu", budget=b, status="INCONCLUSIVE", decision=d, rounds=3))
    out.append(GateResult(model="d.onnx", target="tensorrt-fp16", budget=b, status=ERROR, error="no tensorrt here"))
    return out


def test_junit_xml_parses_with_numbers(tmp_path):
    from junitparser import Error, Failure, JUnitXml, Skipped

    res = _results()
    path = tmp_path / "gate.xml"
    path.write_text(junit_xml(res))
    suites = list(JUnitXml.fromfile(str(path)))
    assert len(suites) == 1
    cases = list(suites[0])
    assert len(cases) == 4 and all(c.classname == "edgekd.gate" for c in cases)
    fail = [c for c in cases if any(isinstance(r, Failure) for r in c.result)]
    assert [c.name for c in fail] == ["b.onnx [ort-cpu]", "c.onnx [ort-cpu]"]
    msg = fail[0].result[0].message
    d = res[1].decision
    for part in (f"p90={d.value:.4g}", f"{d.ci[0]:.4g}", f"{d.ci[1]:.4g}", "budget 1.5 ms"):
        assert part in msg
    assert any(isinstance(r, Error) for r in cases[3].result)
    # an INCONCLUSIVE that exits non-zero (3 by default, 1 with fail) is a failure, never skipped;
    # only --on-inconclusive warn (exit 0) reports it skipped
    for mode, code in (("exit3", 3), ("fail", 1), ("warn", 0)):
        case = [c for suite in JUnitXml.fromstring(junit_xml(res, on_inconclusive=mode)) for c in suite][2]
        kinds = {type(r) for r in case.result}
        assert exit_code([res[0], res[2]], mode) == code
        assert kinds == ({Skipped} if code == 0 else {Failure}), mode


def test_junit_failure_message_has_baseline_ratio_and_p():
    base = lat(400, 1.0, seed=1)
    d = decide(lat(400, 1.1, seed=2), 5.0, baseline_samples=base)
    r = GateResult(model="a.onnx", target="ort-cpu", budget=Budget(budget_ms=5), status="FAIL", decision=d)
    xml = junit_xml([r])
    assert f"ratio vs baseline {d.regression.median_ratio:.3f}" in xml and "p=" in xml


def test_github_lines_format():
    lines = github_lines(_results())
    errors = [ln for ln in lines if ln.startswith("::error ")]
    warns = [ln for ln in lines if ln.startswith("::warning ")]
    assert len(errors) == 3 and not warns  # the INCONCLUSIVE exits 3: an error line
    warns = [ln for ln in github_lines(_results(), "warn") if ln.startswith("::warning ")]
    assert len(warns) == 1
    assert errors[0].startswith("::error file=b.onnx,title=edgekd gate%3A b.onnx [ort-cpu] FAIL::FAIL: ")
    assert all("\n" not in ln for ln in lines)
    assert "95%25 bounds" in errors[0]  # '%' escaped per the workflow-command rules
    assert warns[0].startswith("::warning file=c.onnx,")


def test_step_summary_is_appended(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    append_step_summary(_results())
    text = summary.read_text()
    assert text.startswith("# earlier step\n") and "| model | target | verdict |" in text
    assert text.count("| a.onnx |") == 1 and "FAIL" in text and "d.onnx" in text
    assert markdown_table(_results()).count("\n|") == 2 + 4  # header, rule, one row per result


def test_exit_code_rules():
    res = _results()
    assert exit_code(res) == 1
    assert exit_code([res[0]]) == 0
    assert exit_code([res[0], res[2]]) == 3
    assert exit_code([res[0], res[2]], "warn") == 0
    assert exit_code([res[0], res[2]], "fail") == 1
    assert exit_code([res[0], res[3]]) == 4
