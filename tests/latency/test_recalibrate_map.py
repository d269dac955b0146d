"""Re-calibration through several reference models (a speed map) and the correction of a
verification through it: injected fake measurements, no runtime."""
import json

import numpy as np
import pytest
from synthetic_profiles import const, synthetic  # noqa: E402 - tests/ is on sys.path under pytest

from edgekd.latency.drift import SpeedMap, correct_mapped
from edgekd.latency.measure import Measurement
from edgekd.latency.recalibrate import recalibrate, reference_points
from edgekd.latency.select import select_from_file, select_student
from edgekd.latency.stats import LatencyStats


def fake(here: dict, disturbed_every: int = 0):
    """measure(spec) -> a Measurement reading ``here[spec]`` ms (every ``disturbed_every``-th
    sample descheduled and 10x slower)."""
    def measure(spec):
        x = np.full(60, here[spec])
        hit = np.zeros(60, bool)
        if disturbed_every:
            hit[::disturbed_every] = True
            x[hit] *= 10
        return Measurement(stats=LatencyStats.from_samples(x), samples_ms=x, first_inference_ms=0.0,
                           warmup_iters=0, warmup_s=0.0, disturbed=hit)
    return measure


def profile_with_reference():
    """synthetic(): models of 0.25 .. 1.85 ms; the reference (fam:i=2, 0.85 ms) read alongside each."""
    prof = synthetic()
    prof.protocol["reference"] = "fam:i=2"
    for m in prof.models:
        m.reference = const(0.85)
    return prof


# under load a short model slows more, in proportion, than a long one
HERE = {"fam:i=0": 0.40, "fam:i=2": 1.02, "fam:i=5": 1.94}


def test_speed_map_is_linear_between_points_proportional_beyond_and_inverts():
    m = SpeedMap.build([(0.85, 1.02), (0.25, 0.40), (1.85, 1.94)])
    assert [p[0] for p in m.points] == [0.25, 0.85, 1.85]
    assert m.apply(0.55) == pytest.approx(0.40 + 0.5 * (1.02 - 0.40))
    assert m.apply(0.1) == pytest.approx(0.1 * 1.6) and m.apply(3.7) == pytest.approx(3.7 * 1.94 / 1.85)
    for v in (0.1, 0.3, 0.9, 1.5, 4.0):
        assert m.invert(m.apply(v)) == pytest.approx(v)
    np.testing.assert_allclose(m.apply(np.array([0.25, 1.85])), [0.40, 1.94])
    assert SpeedMap.build([(0.25, 0.5), (0.85, 0.45)]) is None  # readings that cross: no map
    assert SpeedMap.build([(0.25, 0.0)]) is None


def test_recalibration_measures_fastest_reference_and_slowest_and_maps_predictions():
    prof = profile_with_reference()
    assert [s for s, _ in reference_points(prof, 0.85)] == ["fam:i=0", "fam:i=2", "fam:i=5"]
    rc = recalibrate(prof, measure=fake(HERE, disturbed_every=7))
    assert rc.factor == pytest.approx(1.2)  # the reference's own, undisturbed samples
    assert [(s, h) for s, _, h in rc.points] == [(s, pytest.approx(v)) for s, v in HERE.items()]
    assert rc.scale(0.25) == pytest.approx(0.40) and rc.scale(1.85) == pytest.approx(1.94)
    base = select_student(prof, 1.5, metric="p50")
    mapped = select_student(prof, 1.5, metric="p50", speed_factor=rc.factor, scale=rc.scale)
    by_spec = {c.spec: c.predicted_ms for c in base.candidates}
    for c in mapped.candidates:
        assert c.predicted_ms == pytest.approx(rc.scale(by_spec[c.spec]))
    fastest = min(mapped.candidates, key=lambda c: c.predicted_ms)
    assert fastest.predicted_ms > by_spec[fastest.spec] * rc.factor * 1.2  # one factor under-predicts it
    assert "speed map" in rc.describe()


def test_select_from_file_carries_the_map_and_falls_back_to_the_factor(tmp_path):
    from edgekd.latency.profile import save_profile

    prof = profile_with_reference()
    prof.fingerprint = {}
    path = tmp_path / "p.json"
    save_profile(prof, path)
    sel = select_from_file(path, 1.5, metric="p50", measure_reference=fake(HERE))
    d = json.loads(json.dumps(sel.to_dict()))["recalibration"]
    assert d["mapped"] and [p["spec"] for p in d["points"]] == list(HERE)
    fast = next(c for c in sel.candidates if c.spec == "fam:i=0")
    assert fast.measured_ms == pytest.approx(0.40)  # stored readings go through the map too
    # every reference reading the same here: their order is lost, so one factor again
    flat = select_from_file(path, 1.5, metric="p50", measure_reference=fake(dict.fromkeys(HERE, 1.02)))
    assert flat.recalibration.speed_map is None and "out of order" in flat.recalibration.describe()
    assert next(c for c in flat.candidates if c.spec == "fam:i=0").measured_ms == pytest.approx(0.25 * 1.2)


def test_a_verification_is_corrected_through_the_map_now_and_at_recalibration():
    then = SpeedMap.build([(0.1, 0.1), (0.5, 0.5)])
    now = SpeedMap.build([(0.1, 0.15), (0.5, 0.55)])  # 50 us more per call than at re-calibration
    x = np.full(100, 0.35)
    hit = np.zeros(100, bool)
    hit[::10] = True
    x[hit] = 5.0  # descheduled samples: left out
    m = Measurement(stats=LatencyStats.from_samples(x), samples_ms=x, first_inference_ms=0.0, warmup_iters=0,
                    warmup_s=0.0, disturbed=hit)
    stats, fixed = correct_mapped(m, now, then)
    assert fixed.size == 90 and stats.p90 == pytest.approx(0.30)
    # one factor from the 0.1 ms point (1.5x) would have read it 0.233 ms
    assert 0.35 / 1.5 < stats.p90 * 0.8


def test_p90_predictions_go_through_the_p90_points():
    prof = profile_with_reference()
    tail = {"fam:i=0": 0.40, "fam:i=2": 1.02, "fam:i=5": 1.94}

    def measure(spec):  # the short model's tail widened here: a fifth of its samples 1.5x
        x = np.full(100, tail[spec])
        if spec == "fam:i=0":
            x[::5] *= 1.5
        return Measurement(stats=LatencyStats.from_samples(x), samples_ms=x, first_inference_ms=0.0,
                           warmup_iters=0, warmup_s=0.0, disturbed=np.zeros(100, bool))

    rc = recalibrate(prof, measure=measure)
    assert rc.scale(0.25, "p50") == pytest.approx(0.40)
    assert rc.scale(0.25, "p90") == pytest.approx(0.60) and rc.scaler("p90")(1.85) == pytest.approx(1.94)
    sel = select_student(prof, 3.0, metric="p90", scale=rc.scaler("p90"))
    assert next(c for c in sel.candidates if c.spec == "fam:i=0").predicted_ms == pytest.approx(0.60)


def test_the_map_anchors_on_predictions_not_on_an_outlying_stored_reading():
    # the fastest model's stored p90 is an outlier (1.6x its p50); the predictor, fitted through
    # every calibration model, says 0.25 ms. Here it reads 0.40: its prediction must map to 0.40,
    # not be scaled by 0.40 / 0.40 (the outlier's ratio) = 1.0 down to 0.25
    prof = profile_with_reference()
    from edgekd.latency.fit import refit

    refit(prof)
    prof.models[0].latency = LatencyStats.from_samples(np.r_[np.full(80, 0.25), np.full(20, 0.40)])
    rc = recalibrate(prof, measure=fake(HERE))
    fast_pred = next(st for s, st, _ in rc.points_p90 if s == "fam:i=0")
    assert fast_pred == pytest.approx(0.25, rel=0.05)  # the prediction, not the stored 0.40
    sel = select_student(prof, 3.0, metric="p90", scale=rc.scaler("p90"))
    fast = next(c for c in sel.candidates if c.spec == "fam:i=0")
    assert fast.predicted_ms == pytest.approx(0.40, rel=0.05)  # as measured here


def test_a_verified_p90_is_read_back_through_the_references_p90s_now_and_then():
    from edgekd.latency.recalibrate import Recalibration, _tail_corrected

    pts = (("s", 0.05, 0.07), ("r", 0.15, 0.18), ("l", 0.6, 0.66))
    rc = Recalibration(factor=1.2, here_p50_ms=0.18, stored_p50_ms=0.15, reference="r", profile="p",
                       points=pts, points_p90=(("s", 0.055, 0.09), ("r", 0.17, 0.21), ("l", 0.65, 0.70)))
    assert rc.tail_map is not None and "p90s through" in rc.describe()

    def meas(p90):  # 90 samples at 1.0 x p90 / 1.2, 10 at p90 x 1.5
        x = np.concatenate([np.full(85, p90 / 1.2), np.full(5, p90), np.full(10, p90 * 1.5)])
        return Measurement(stats=LatencyStats.from_samples(x), samples_ms=x, first_inference_ms=0.0,
                           warmup_iters=0, warmup_s=0.0, disturbed=np.zeros(100, bool))
    # now every tail is 1.3x what it was at re-calibration: a model whose p90 read 0.117 then reads it
    got = _tail_corrected(rc, meas(0.09 * 1.3), [meas(0.09 * 1.3), meas(0.21 * 1.3), meas(0.70 * 1.3)])
    assert got == pytest.approx(0.09, rel=0.02)
    busy = meas(0.21 * 1.3)
    busy = Measurement(stats=busy.stats, samples_ms=busy.samples_ms, first_inference_ms=0.0, warmup_iters=0,
                       warmup_s=0.0, disturbed=np.arange(100) >= 5)  # 5 clean samples: no tail read
    assert _tail_corrected(rc, meas(0.09 * 1.3), [meas(0.09 * 1.3), busy, meas(0.70 * 1.3)]) is None
    assert _tail_corrected(Recalibration(1.2, 0.18, 0.15, "r", "p", points=pts), meas(0.1), []) is None


def test_references_are_read_by_their_undisturbed_samples_as_the_model_is_on_a_busy_machine():
    from edgekd.latency.recalibrate import undisturbed_p50

    x = np.full(100, 0.2)
    hit = np.arange(100) % 10 < 7  # 70 of 100 descheduled, 5x slower: 30 clean remain
    x[hit] = 1.0
    m = Measurement(stats=LatencyStats.from_samples(x), samples_ms=x, first_inference_ms=0.0, warmup_iters=0,
                    warmup_s=0.0, disturbed=hit)
    assert undisturbed_p50(m) == pytest.approx(0.2)
    few = np.zeros(100, bool)
    few[:90] = True  # 10 clean: too few, every sample counts
    m2 = Measurement(stats=m.stats, samples_ms=np.where(few, 1.0, 0.2), first_inference_ms=0.0, warmup_iters=0,
                     warmup_s=0.0, disturbed=few)
    assert undisturbed_p50(m2) == pytest.approx(1.0)


def test_a_reference_model_read_mostly_descheduled_is_left_out_of_the_map():
    prof = profile_with_reference()
    good = fake(HERE)

    def measure(spec):
        if spec != "fam:i=5":
            return good(spec)
        x = np.full(60, 9.0)
        hit = np.ones(60, bool)
        hit[:5] = False  # 5 undisturbed samples of 60: its reading is the other work's
        return Measurement(stats=LatencyStats.from_samples(x), samples_ms=x, first_inference_ms=0.0,
                           warmup_iters=0, warmup_s=0.0, disturbed=hit)

    rc = recalibrate(prof, measure=measure)
    assert [p[0] for p in rc.points] == ["fam:i=0", "fam:i=2"] and rc.speed_map is not None
    assert rc.scale(1.85) == pytest.approx(1.85 * 1.2)  # beyond the last point: its ratio


def test_gate_predict_only_goes_through_the_speed_map_as_select_does(monkeypatch):
    """gate --predict-only scales a prediction as select does: through the speed map of the
    fastest, reference and slowest models, not by the reference's factor alone."""
    import edgekd.gate.predict_only as po
    import edgekd.latency.profile as lp
    import edgekd.latency.recalibrate as lr
    from edgekd.config import Budget

    prof = profile_with_reference()
    prof.validation = {"p95_rel_error": 0.05}
    spec = "fam:i=0"  # the fastest model: 1.6x here where the reference reads 1.2x
    monkeypatch.setattr(po, "model_spec", lambda model: spec)
    monkeypatch.setattr(lp, "check_here", lambda profile, strict=False: None)  # this machine's kind
    monkeypatch.setattr(lr, "recalibrate", lambda profile: recalibrate(profile, measure=fake(HERE)))
    rc = recalibrate(prof, measure=fake(HERE))
    pred = po.predicted_ms(prof, spec, "p50")
    mapped, by_factor = rc.scale(pred, "p50"), pred * rc.factor
    assert abs(mapped - by_factor) > 0.05 * by_factor  # the map and the factor disagree here
    res = po.gate_predicted("m.onnx", "ort-cpu", Budget(budget_ms=(mapped + by_factor) / 2, metric="p50"),
                            prof)
    assert res.decision.value == pytest.approx(mapped)
    assert any("speed map" in w for w in res.warnings)
