"""Drift correction with a reference workload, disturbed samples, the calibration store and the
re-calibration of a profile: fake sessions on an injected clock, no runtime."""
import json

import numpy as np
import pytest
from synthetic_profiles import const, synthetic  # noqa: E402 - tests/ is on sys.path under pytest

from edgekd.errors import BadInputError
from edgekd.latency.drift import (Calibration, calibration_path, correct, load_calibration, machine_key,
                                  save_calibration)
from edgekd.latency.measure import Measurement, measure_interleaved, measure_session
from edgekd.latency.recalibrate import check_factor, recalibrate
from edgekd.latency.select import select_from_file, select_student
from edgekd.latency.stats import LatencyStats
from edgekd.targets import MeasureSettings, load_target

SETTINGS = MeasureSettings(warmup_s=0.0, warmup_iters=2, min_iters=200, min_time_s=0.6)


class Machine:
    """A fake clock (ns) whose speed doubles once ``slow_after_ns`` of it have passed."""

    def __init__(self, slow_after_ns=None):
        self.now, self.slow_after = 0, slow_after_ns
        self.switches = 0

    def clock(self):
        return self.now

    def speed(self):
        return 2.0 if self.slow_after is not None and self.now >= self.slow_after else 1.0


class FakeSession:
    def __init__(self, machine, cost_us, preempt_every=0, preempt_us=0.0):
        self.m, self.cost, self.every, self.extra = machine, cost_us, preempt_every, preempt_us
        self.calls, self.preempted = 0, []

    def run(self, x):
        self.calls += 1
        t = self.cost * self.m.speed()
        hit = bool(self.every) and self.calls % self.every == 0
        if hit:  # descheduled during this call: it takes longer and the switch count grows
            t += self.extra
            self.m.switches += 1
        self.preempted.append(hit)
        self.m.now += int(t * 1000)


def test_a_machine_that_slows_mid_run_is_corrected_by_the_reference():
    m = Machine(slow_after_ns=150_000_000)
    model, ref = FakeSession(m, 100.0), FakeSession(m, 50.0)
    mm, rm = measure_interleaved([model, ref], [None, None], SETTINGS, slices=[0.005, 0.001], clock=m.clock,
                                 switches=lambda: m.switches)
    assert mm.stats.min == pytest.approx(0.1) and mm.stats.p50 == pytest.approx(0.2)  # raw: mostly slow
    reading, fixed, _ = correct(mm, rm, 0.05, source="test")
    assert reading.factor == pytest.approx(2.0)  # the reference saw the slowdown
    assert fixed.p50 == pytest.approx(0.1, rel=0.01)
    assert fixed.p90 == pytest.approx(0.1, rel=0.01)
    assert 0.05 < reading.share < 0.3  # the reference's part of the timed time


def test_a_steady_machine_gives_factor_one_and_unchanged_figures():
    m = Machine()
    mm, rm = measure_interleaved([FakeSession(m, 100.0), FakeSession(m, 50.0)], [None, None], SETTINGS,
                                 slices=[0.005, 0.001], clock=m.clock, switches=lambda: m.switches)
    reading, fixed, _ = correct(mm, rm, 0.05, source="test")
    assert reading.factor == pytest.approx(1.0)
    assert fixed.p50 == pytest.approx(mm.stats.p50)
    # against a calibration made on a machine twice as fast, everything reads half
    reading, fixed, _ = correct(mm, rm, 0.025, source="test")
    assert reading.factor == pytest.approx(2.0) and fixed.p50 == pytest.approx(0.05)


def test_disturbed_samples_are_counted_and_left_out_of_corrected_figures():
    m = Machine()
    model = FakeSession(m, 100.0, preempt_every=7, preempt_us=5000.0)
    got = measure_session(model, None, SETTINGS, clock=m.clock, switches=lambda: m.switches)
    n = got.stats.n
    assert got.stats.disturbed == sum(model.preempted[-n:]) > 0
    assert got.disturbed.sum() == got.stats.disturbed
    assert got.stats.p90 > 5  # the preempted samples are in the raw figures
    steady = Measurement(stats=const(0.05), samples_ms=np.full(n, 0.05), first_inference_ms=0.0, warmup_iters=0,
                         warmup_s=0.0, disturbed=np.zeros(n, bool), rounds=None)
    reading, fixed, _ = correct(got, steady, 0.05, source="test")
    assert fixed.p90 == pytest.approx(0.1) and reading.kept == n - got.stats.disturbed


def test_without_a_switch_source_nothing_counts_as_disturbed():
    m = Machine()
    got = measure_session(FakeSession(m, 100.0, preempt_every=3, preempt_us=10.0), None, SETTINGS, clock=m.clock,
                          switches=None)
    assert got.stats.disturbed == 0 and got.disturbed is None


def test_calibration_store_round_trip(tmp_path):
    target = load_target("ort-cpu")
    key = machine_key(target)
    ref = tmp_path / "ref.onnx"
    ref.write_bytes(b"reference bytes")
    from edgekd.util_io import sha256_file

    cal = Calibration(target="ort-cpu", fingerprint={**key, "runtime": "onnxruntime", "runtime_version": "1"},
                      reference="spec", reference_sha256=sha256_file(ref),
                      stats=LatencyStats.from_samples([0.05] * 20), measured_at="now")
    path = save_calibration(cal, root=tmp_path)
    assert path == calibration_path("ort-cpu", key, tmp_path) and path.exists()
    back = load_calibration("ort-cpu", key, ref, root=tmp_path)
    assert back is not None and back.p50_ms == pytest.approx(0.05) and back.reference_sha256 == cal.reference_sha256
    assert load_calibration("ort-cpu", {**key, "threads": 4}, root=tmp_path) is None  # another machine/threads
    ref.write_bytes(b"another reference")
    assert load_calibration("ort-cpu", key, ref, root=tmp_path) is None  # made with another reference
    path.write_text("{not json")
    assert load_calibration("ort-cpu", key, root=tmp_path) is None


def test_bench_reference_without_calibration_is_bad_input(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path))
    r = run_cli("bench", "mobilenetv2:width=0.25,res=16", "--target", "ort-cpu", "--reference")
    assert r.returncode == 2, r.stderr
    assert "edgekd calibrate --target ort-cpu" in r.stderr and "Traceback" not in r.stderr


def referenced(ref_p50=0.05):
    prof = synthetic()
    prof.protocol["reference"] = "fam:i=2"
    for m in prof.models:
        m.reference = const(ref_p50)
    return prof


def fake_reference(p50):
    def measure(spec):
        x = np.full(50, p50)
        return Measurement(stats=LatencyStats.from_samples(x), samples_ms=x, first_inference_ms=0.0,
                           warmup_iters=0, warmup_s=0.0, disturbed=np.zeros(50, bool))
    return measure


def test_recalibration_scales_predictions():
    prof = referenced(0.05)
    rc = recalibrate(prof, measure=fake_reference(0.065))
    assert rc.factor == pytest.approx(1.3)
    base = select_student(prof, 1.3, metric="p50")
    slow = select_student(prof, 1.3, metric="p50", speed_factor=rc.factor)
    by_spec = {c.spec: c.predicted_ms for c in base.candidates}
    for c in slow.candidates:
        assert c.predicted_ms == pytest.approx(by_spec[c.spec] * 1.3)
    assert slow.chosen.params < base.chosen.params  # a slower machine gets a smaller student
    assert check_factor(rc, prof) is None


def test_strict_refuses_a_factor_far_from_one_and_a_profile_without_reference_warns(tmp_path):
    from edgekd.latency.profile import save_profile

    prof = referenced(0.05)
    prof.fingerprint = {}
    path = tmp_path / "p.json"
    save_profile(prof, path)
    with pytest.raises(BadInputError, match=r"2\.00x"):
        select_from_file(path, 1.3, strict=True, metric="p50", measure_reference=fake_reference(0.1))
    warned = []
    sel = select_from_file(path, 1.3, metric="p50", measure_reference=fake_reference(0.1), on_warning=warned.append)
    assert sel.speed_factor == pytest.approx(2.0) and sel.recalibration.here_p50_ms == pytest.approx(0.1)
    assert any("outside [0.67, 1.5]" in w for w in warned)
    assert json.loads(json.dumps(sel.to_dict()))["recalibration"]["factor"] == pytest.approx(2.0)

    old = synthetic()  # made before references: warned, used as stored
    old.fingerprint = {}
    save_profile(old, path)
    warned.clear()
    sel = select_from_file(path, 1.3, metric="p50", measure_reference=fake_reference(0.1), on_warning=warned.append)
    assert sel.speed_factor == 1.0 and sel.recalibration is None
    assert any("no reference readings" in w for w in warned)


def test_a_budget_rests_on_a_robust_p90_and_an_unstable_measurement_is_said():
    from edgekd.latency.stats import instability_note, robust_p90
    from edgekd.report.markdown import render_markdown
    from edgekd.report.stages import unstable_flags

    quiet = LatencyStats.from_samples([1.0] * 80 + [1.05] * 20)
    assert robust_p90(quiet) == (pytest.approx(quiet.p90), "p90")
    assert instability_note(quiet, "the teacher") is None
    # the teacher of the issue: p50 0.43 ms, p90 of interference 3.97 ms
    busy = LatencyStats.from_samples([0.43] * 60 + [0.6] * 25 + [3.97] * 15)
    value, how = robust_p90(busy)
    assert value == pytest.approx(0.43 * 1.10) and how.startswith("p50 x 1.1")
    note = instability_note(busy, "the teacher")
    assert "unstable" in note and "x its p50" in note
    flags = unstable_flags({"context": {"demo": {"teacher_latency": {"warning": note, "basis": how}}}})
    assert any("the measurement of the teacher was unstable" in f for f in flags)  # the report says it
    assert "| unstable | yes" in render_markdown({"verdict": "pass", "latency": busy.to_dict()})


def test_gate_predict_only_scales_by_the_recalibration(monkeypatch):
    import edgekd.gate.predict_only as po
    import edgekd.latency.profile as lp
    import edgekd.latency.recalibrate as lr
    from edgekd.config import Budget

    prof = referenced(0.05)
    prof.validation = {"p95_rel_error": 0.1}
    spec = prof.models[-1].spec
    monkeypatch.setattr(po, "model_spec", lambda model: spec)
    monkeypatch.setattr(lp, "check_here", lambda profile, strict=False: None)  # this machine's kind
    real = lr.recalibrate
    monkeypatch.setattr(lr, "recalibrate", lambda profile: real(profile, measure=fake_reference(0.075)))
    stored = prof.models[-1].latency.p90
    res = po.gate_predicted("m.onnx", "ort-cpu", Budget(budget_ms=stored * 1.2), prof)
    assert res.decision.value == pytest.approx(stored * 1.5)
    assert res.status == "FAIL"  # 1.5 x stored is over 1.2 x stored even at the bottom of its band
    assert any("scaled by 1.500" in w for w in res.warnings)


FAST = ("name: fast-ort\nruntime: onnxruntime\ndevice: cpu\nprecision: fp32\nthreads: 1\nbatch: 1\n"
        "measure: {warmup_s: 0.02, warmup_iters: 5, min_iters: 60, min_time_s: 0.05}\n")


def test_calibrate_then_bench_and_verify_measure_carry_raw_and_corrected(tmp_path, monkeypatch):
    from edgekd.deploy import open_model
    from edgekd.latency.bench import bench, calibrate, measure_session_drift
    from edgekd.latency.measure import make_inputs

    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    yaml = tmp_path / "fast.yaml"
    yaml.write_text(FAST)
    target = load_target(str(yaml))
    assert bench("mobilenetv2:width=0.25,res=16", target).drift is None  # no calibration: as before
    cal = calibrate(target)
    assert cal.p50_ms > 0 and cal.path.startswith(str(tmp_path / "cache"))
    r = bench("mobilenetv2:width=0.25,res=16", target)
    assert r.drift is not None and r.corrected is not None and r.judged == "corrected"
    assert r.drift.calibrated_p50_ms == pytest.approx(cal.p50_ms) and 0 < r.drift.share < 0.5
    # the corrected samples themselves, in order, are what the corrected figures were made of
    assert r.corrected_samples_ms is not None and r.corrected_samples_ms.size == r.corrected.n
    assert LatencyStats.from_samples(r.corrected_samples_ms).p90 == pytest.approx(r.corrected.p90)
    d = r.to_dict()
    assert d["judged"] == "corrected" and d["corrected_latency_ms"]["p90"] > 0 and "disturbed_samples" in d
    assert bench("mobilenetv2:width=0.25,res=16", target, reference=False).drift is None
    opened = open_model("mobilenetv2:width=0.25,res=16", target, work_dir=tmp_path / "m")
    m, drift, fixed = measure_session_drift(opened.session, make_inputs(opened.session, tuple(opened.input_shape)),
                                            target, target.measure)
    assert drift is not None and fixed.n > 0 and m.stats.n >= 60


def test_cli_calibrate_json_and_bench_says_the_judged_figure(run_cli, tmp_path):
    yaml = tmp_path / "fast.yaml"
    yaml.write_text(FAST)
    env = {"EDGEKD_CACHE_DIR": str(tmp_path / "cache")}
    r = run_cli("calibrate", "--target", str(yaml), "--min-time", "0.05", "--json", env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["schema"] == "edgekd.calibration/v1" and d["stats"]["p50"] > 0
    assert d["path"].startswith(str(tmp_path / "cache")) and d["target"] == "fast-ort"
    b = run_cli("bench", "mobilenetv2:width=0.25,res=16", "--target", str(yaml), "--json", env=env)
    assert b.returncode == 0, b.stderr
    out = json.loads(b.stdout)
    out = out.get("result", out)  # the --json envelope, where there is one
    assert out["judged"] == "corrected" and out["drift"]["calibrated_p50_ms"] == pytest.approx(d["stats"]["p50"])
    bad = run_cli("calibrate", "--target", "no-such-target", env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
