"""Adaptive re-measurement, FAIL confirmation, drift-corrected samples, --baseline-model and the gate history."""
from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest

from edgekd.config import Budget
from edgekd.errors import BadInputError
from edgekd.gate import decide, gate_one
from edgekd.gate.history import GateHistory, source_revision, trend_table


def lat(n=400, median=1.0, spread=0.02, seed=0):
    rng = np.random.default_rng(seed)
    return median * np.exp(rng.normal(0.0, spread, n))


class Clock:
    """An injected clock: each measurement takes ``step`` seconds."""

    def __init__(self, step):
        self.t, self.step = 0.0, step

    def __call__(self):
        return self.t


class Rounds:
    """measure_fn handing out blocks in order (advancing a Clock), counting calls."""

    def __init__(self, blocks, clock=None, **extra):
        self.blocks, self.clock, self.extra, self.calls = list(blocks), clock, extra, 0

    def __call__(self, model, target):
        self.calls += 1
        if self.clock:
            self.clock.t += self.clock.step
        extra = {k: (v.pop(0) if isinstance(v, list) else v) for k, v in self.extra.items()}
        return SimpleNamespace(samples_ms=self.blocks.pop(0), environment={}, model_sha256="abc", **extra)


def straddling(seed):
    return lat(60, seed=seed)


BUDGET_AT_P90 = Budget(budget_ms=float(np.percentile(lat(200000, seed=99), 90)))


def test_rounds_stop_as_soon_as_decided():
    blocks = [lat(60, seed=s) for s in range(10)]
    _, hi_one = decide(blocks[0], 10.0).ci
    b = Budget(budget_ms=hi_one * 0.995)  # the first round alone can't pass; a few pooled do
    blocks += [lat(60, seed=s) for s in range(10, 30)]
    fm = Rounds(blocks)
    r = gate_one("m.onnx", "ort-cpu", b, measure_fn=fm, max_rounds=30, max_time_s=None)
    assert r.status == "PASS" and 3 <= r.rounds < 30 and fm.calls == r.rounds
    first = r.round_verdicts.index("PASS")  # pooled PASS, then the rounds after it confirm it on their own
    assert first >= 1 and set(r.round_verdicts[:first]) == {"INCONCLUSIVE"}
    one = Rounds([lat(400, seed=s) for s in range(5)])
    r1 = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=5), measure_fn=one)
    assert r1.status == "PASS" and r1.rounds == 2 and one.calls == 2 and r1.round_verdicts == ["PASS", "PASS"]
    single = Rounds([lat(400, seed=1)])
    assert gate_one("m.onnx", "ort-cpu", Budget(budget_ms=5), measure_fn=single, max_rounds=1).status == "PASS"


def test_time_cap_respected_with_an_injected_clock():
    clock = Clock(step=10.0)
    fm = Rounds([straddling(s) for s in range(20)], clock=clock)
    r = gate_one("m.onnx", "ort-cpu", BUDGET_AT_P90, measure_fn=fm, max_rounds=20, max_time_s=25.0, clock=clock)
    # after 2 rounds (20 s) a third of 10 s would end at 30 s > 25 s: not started
    assert r.status == "INCONCLUSIVE" and r.rounds == 2 and fm.calls == 2
    assert r.elapsed_s == 20.0 and any("--max-time-s 25" in w for w in r.warnings)
    fm = Rounds([straddling(s) for s in range(20)], clock=Clock(10.0))
    r = gate_one("m.onnx", "ort-cpu", BUDGET_AT_P90, measure_fn=fm, max_rounds=4, max_time_s=1e9, clock=fm.clock)
    assert r.rounds == 4 and r.status == "INCONCLUSIVE"  # --max-rounds caps too
    with pytest.raises(BadInputError, match="max-time-s"):
        gate_one("m.onnx", "ort-cpu", BUDGET_AT_P90, measure_fn=fm, max_time_s=0)


def test_fail_is_confirmed_on_a_later_independent_block():
    burst = lat(300, 2.0, seed=1)
    calm = [lat(300, 1.0, seed=s) for s in range(2, 12)]
    r = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.5), measure_fn=Rounds([burst] + calm), max_rounds=11,
                 max_time_s=None)
    assert r.round_verdicts[0] == "FAIL" and r.status != "FAIL"  # one burst of load fails nothing
    assert r.decision.n_eff < r.decision.n / 10  # the burst is one block of correlated samples, not 300
    slow = Rounds([lat(300, 2.0, seed=s) for s in (4, 5, 6)])
    r2 = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.5), measure_fn=slow, max_time_s=None)
    assert r2.status == "FAIL" and r2.rounds == 2 and slow.calls == 2
    r3 = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.5), measure_fn=Rounds([burst]), max_rounds=1)
    assert r3.status == "FAIL"
    r4 = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.5), measure_fn=Rounds([burst, lat(300, 1.4, seed=7)]),
                  max_rounds=2)
    assert r4.status == "INCONCLUSIVE" and any("not confirmed" in w for w in r4.warnings)


def test_unstable_clear_results_decide_in_one_round():
    noisy = Rounds([lat(2000, 0.02, spread=0.3, seed=s) for s in (3, 4)])
    r = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=0.5), measure_fn=noisy)
    assert r.status == "PASS" and r.decision.unstable and r.rounds == 2  # one look and its confirmation
    slow = Rounds([lat(2000, 2.0, spread=0.3, seed=s) for s in (5, 6)])
    r2 = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.0), measure_fn=slow)
    assert r2.status == "FAIL" and r2.decision.unstable and r2.rounds == 2


def test_drift_corrected_samples_are_judged_only_with_a_calibration():
    raw = lat(400, 1.4, seed=2)  # the machine ran 1.4x slow
    corrected = raw / 1.4
    drift = SimpleNamespace(factor=1.4, calibrated=True)
    fm = Rounds([raw, raw[::-1]], drift=drift, corrected_samples_ms=corrected)
    r = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.2), measure_fn=fm)
    assert r.status == "PASS" and r.judged == "corrected" and r.decision.judged == "corrected"
    assert r.drift_factor == pytest.approx(1.4) and "judged on corrected" in r.decision.numbers()
    assert r.to_dict()["judged"] == "corrected"
    uncal = Rounds([raw, raw[::-1]], drift={"factor": 1.4}, corrected_samples_ms=corrected)
    r2 = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.2), measure_fn=uncal)
    assert r2.judged == "raw" and r2.status == "FAIL"
    assert r2.drift_factor == pytest.approx(1.4)
    # a BenchResult from latency.bench with a calibration: a DriftReading and corrected figures, no
    # per-sample corrected samples: the samples divided by the run's speed factor are judged
    from edgekd.latency.drift import DriftReading
    from edgekd.latency.stats import LatencyStats

    reading = DriftReading(factor=1.4, reference_p50_ms=0.14, calibrated_p50_ms=0.1, source="calibration x")
    bench_like = Rounds([raw, raw[::-1]], drift=reading, corrected=LatencyStats.from_samples(corrected))
    r3 = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.2), measure_fn=bench_like)
    assert r3.judged == "corrected" and r3.status == "PASS"
    assert r3.decision.value == pytest.approx(np.percentile(raw, 90) / 1.4)
    plain = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=5), measure_fn=Rounds([raw, raw]))
    assert plain.judged == "raw" and plain.drift_factor is None


def test_baseline_model_measured_alongside_with_a_fake_pair_measurement():
    base_blocks = [lat(400, 1.0, seed=s) for s in (10, 11)]
    slower = Rounds([lat(400, 1.12, seed=s) for s in (12, 13)], baseline_samples_ms=list(base_blocks))
    r = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=5), measure_fn=slower)
    reg = r.decision.regression
    assert r.status == "FAIL" and r.baseline_used and reg.source == "alternated" and reg.median_ratio > 1.05
    assert "measured alongside" in r.decision.reason and reg.baseline_n == 800  # confirmed on round 2
    same = Rounds([lat(400, 1.0, seed=s) for s in (14, 16)], baseline_samples_ms=[lat(400, 1.0, seed=s) for s in (15, 17)])
    r2 = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=5), measure_fn=same)
    assert r2.status == "PASS" and not r2.decision.regression.significant


def test_baseline_model_through_check_models(tmp_path, monkeypatch):
    from edgekd.gate import ab, check

    model, base = tmp_path / "m.onnx", tmp_path / "main.onnx"
    model.write_bytes(b"x")
    base.write_bytes(b"x")
    seen = {}

    def fake_pair_measure(baseline_model, **kw):
        seen["baseline"] = baseline_model
        return Rounds([lat(400, 1.2, seed=s) for s in (1, 2)], baseline_samples_ms=[lat(400, 1.0, seed=s) for s in (3, 4)])

    with pytest.raises(BadInputError, match="does not exist"):
        ab.pair_measure(str(tmp_path / "missing.onnx"))
    monkeypatch.setattr(ab, "pair_measure", fake_pair_measure)
    res = check.check_models([str(model)], budget_ms=5.0, baseline_model=str(base), record_history=False)
    assert seen["baseline"] == str(base) and res[0].status == "FAIL" and res[0].decision.regression.source == "alternated"


def _result(model, value, verdict="PASS", factor=None):
    d = decide(lat(400, value, seed=int(value * 100)), 5.0)
    return SimpleNamespace(model=model, target="ort-cpu", decision=d, status=verdict, rounds=1, model_sha256="ab12",
                           judged="raw", drift_factor=factor)


def test_history_round_trip_and_trend(tmp_path):
    h = GateHistory(tmp_path / "h.sqlite")
    assert h.record([_result("models/a.onnx", 1.0)], branch="main", commit="c0ffee0001") == 1
    h.record([_result("models/a.onnx", 1.1, factor=1.25), _result("models/b.onnx", 2.0)], branch="feat",
             commit="deadbeef02")
    rows = h.rows()
    assert [(r["model"], r["branch"], r["commit_sha"]) for r in rows] == [
        ("models/a.onnx", "main", "c0ffee0001"), ("models/a.onnx", "feat", "deadbeef02"), ("models/b.onnx", "feat", "deadbeef02")]
    a = h.rows(["a.onnx"])
    assert len(a) == 2 and a[1]["drift_factor"] == 1.25 and a[0]["verdict"] == "PASS" and a[0]["model_sha256"] == "ab12"
    assert a[0]["lower_ms"] <= a[0]["value_ms"] <= a[0]["upper_ms"] and a[0]["metric"] == "p90"
    text = trend_table(a)
    ratio = a[1]["value_ms"] / a[0]["value_ms"]
    assert "models/a.onnx on ort-cpu:" in text and "c0ffee00" in text and f"x{ratio:.3f}" in text and "1.25" in text
    with pytest.raises(BadInputError, match="no gate history"):
        GateHistory(tmp_path / "none.sqlite").rows()
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database, just text" * 100)
    with pytest.raises(BadInputError, match="not a gate history"):
        GateHistory(bad).rows()


def test_source_revision_from_ci_variables():
    assert source_revision({"GITHUB_REF_NAME": "main", "GITHUB_SHA": "abc123"}) == ("main", "abc123")
    assert source_revision({"GITHUB_HEAD_REF": "feature", "GITHUB_REF_NAME": "7/merge", "GITHUB_SHA": "f"})[0] == "feature"


def test_cli_records_history_and_prints_it(tmp_path, monkeypatch, capsys):
    from edgekd.cli.main import main
    from edgekd.gate import check

    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    db = tmp_path / "hist.sqlite"
    monkeypatch.setenv("GITHUB_REF_NAME", "main")
    monkeypatch.setenv("GITHUB_SHA", "0123456789abcdef")
    monkeypatch.setattr(check, "bench_measure", lambda **kw: Rounds([lat(400, 1.0, seed=s) for s in range(3)]))
    for _ in range(2):
        assert main(["gate", str(model), "--budget-ms", "5", "--history-db", str(db), "--json"]) == 0
    capsys.readouterr()
    assert main(["gate", "--history", "m.onnx", "--history-db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == "edgekd.gate-history/v1" and len(out["rows"]) == 2
    assert {r["branch"] for r in out["rows"]} == {"main"} and out["rows"][0]["commit_sha"] == "0123456789abcdef"
    assert main(["gate", "--history", "--history-db", str(db)]) == 0
    assert "m.onnx on ort-cpu:" in capsys.readouterr().out
    assert main(["gate", str(model), "--budget-ms", "5", "--history-db", str(db), "--no-history"]) == 0
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM gate_results").fetchone()[0] == 2
    assert main(["gate", "--history", "--history-db", str(tmp_path / "nothing.sqlite")]) == 2


def test_a_bench_result_s_per_sample_corrected_samples_are_judged_not_raw_over_the_run_factor():
    # the machine ran 2x slow for the second half of the run; the reference saw it round by round,
    # so each corrected sample reads 1.0, while raw / the run's factor (1.5) would read 0.67 and 1.33
    from edgekd.latency.drift import DriftReading
    from edgekd.latency.measure import BenchResult
    from edgekd.latency.stats import LatencyStats

    raw = np.concatenate([lat(200, 1.0, seed=7), lat(200, 2.0, seed=8)])
    fixed = np.concatenate([raw[:200], raw[200:] / 2.0])
    reading = DriftReading(factor=1.5, reference_p50_ms=0.15, calibrated_p50_ms=0.1, source="calibration x")

    def result(corrected_samples):
        return BenchResult(target="ort-cpu", model="m.onnx", model_sha256="", artifact_format="onnx",
                           stats=LatencyStats.from_samples(raw), samples_ms=raw, first_inference_ms=0.0,
                           build_s=0.0, load_s=0.0, input_shape=(1, 1, 16, 16), drift=reading,
                           corrected=LatencyStats.from_samples(fixed), corrected_samples_ms=corrected_samples)

    r = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.2), measure_fn=lambda m, t: result(fixed))
    assert r.judged == "corrected" and r.status == "PASS"
    assert r.decision.value == pytest.approx(np.percentile(np.concatenate([fixed, fixed]), 90), rel=0.02)
    whole_run = gate_one("m.onnx", "ort-cpu", Budget(budget_ms=1.2), measure_fn=lambda m, t: result(None))
    assert whole_run.status == "FAIL"  # without them: raw / 1.5, whose upper half reads 1.33
