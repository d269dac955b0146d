"""The latency predictor's arithmetic on a synthetic profile (exact values)."""
import numpy as np
import pytest

from edgekd.errors import BadInputError
from edgekd.latency.predict import (Calibration, calibration_indices, epsilon, fit_line, fit_profile,
                                    predict, predict_blocks)
from edgekd.latency.profile import BlockEntry, ModelEntry, Profile
from edgekd.latency.stats import LatencyStats


def const(ms: float, spread: float = 0.0) -> LatencyStats:
    """Stats whose p50 is ``ms`` and p90 is ``ms + spread`` (ten samples)."""
    return LatencyStats.from_samples([ms] * 5 + [ms + spread] * 5) if spread else LatencyStats.from_samples([ms] * 10)


def synthetic(true_a=2.0, true_b=0.05, overhead=0.01, distort=None) -> Profile:
    """Blocks of net latency 0.1, 0.2, 0.3 ms; models latency = a*sum(net) + b exactly."""
    prof = Profile(target={"name": "ort-cpu"}, family="fam", grid=[])
    prof.overhead = const(overhead)
    net = {"A": 0.1, "B": 0.2, "C": 0.3}
    for k, v in net.items():
        prof.blocks[k] = BlockEntry(key=k, signature={"key": k}, latency=const(v + overhead))
    combos = [("A",), ("A", "B"), ("A", "A", "B"), ("B", "C"), ("A", "B", "C"), ("C", "C", "C")]
    for i, keys in enumerate(combos):
        y = true_a * sum(net[k] for k in keys) + true_b
        if distort and i in distort:
            y *= distort[i]
        spec = f"fam:i={i}"
        prof.models.append(ModelEntry(family="fam", spec=spec, params=100 * (i + 1), macs=1000 * (i + 1),
                                      blocks=keys, latency=const(y)))
        prof.grid.append(spec)
    return prof


def test_fit_line_exact_and_degenerate():
    a, b, rms = fit_line([1.0, 2.0, 3.0], [2.5, 4.5, 6.5])
    assert a == pytest.approx(2.0) and b == pytest.approx(0.5) and rms == pytest.approx(0.0, abs=1e-12)
    a, b, _ = fit_line([1.0], [1.3])  # one point: scale 1, offset only
    assert (a, b) == (1.0, pytest.approx(0.3))
    a, b, _ = fit_line([1.0, 2.0], [3.0, 1.0])  # would be a negative scale: offset only
    assert a == 1.0 and b == pytest.approx(0.5)


def test_calibration_set_spread_and_ends():
    assert calibration_indices(1) == [0]
    assert calibration_indices(3) == [0, 2]
    assert calibration_indices(6) == [0, 3, 5]
    assert calibration_indices(20) == [0, 6, 13, 19]


def test_predictor_recovers_scale_and_overhead_and_validates_heldout():
    prof = synthetic()
    cal, val = fit_profile(prof)
    c50 = cal["p50"]
    assert c50["a"] == pytest.approx(2.0) and c50["b"] == pytest.approx(0.05)
    # 6 models: the calibration set is 3 of them (both ends); 3 held out, all exact
    assert len(c50["specs"]) == 3 and val["n_heldout"] == 3
    assert val["fraction_within_10pct"] == 1.0
    assert val["p95_rel_error"] == pytest.approx(0.0, abs=1e-9)
    prof.calibration, prof.validation = cal, val
    # (A, A, C): never measured whole; 2 * (0.1 + 0.1 + 0.3) + 0.05
    assert predict_blocks(prof, ["A", "A", "C"], "p50") == pytest.approx(1.05)
    assert predict(prof, "fam:i=3", "p50") == pytest.approx(2 * 0.5 + 0.05)
    assert epsilon(prof, "p50") == pytest.approx(0.0, abs=1e-9)


def test_heldout_error_numbers():
    # model 2 (held out) measured 25% above the truth -> predicted is 20% low
    prof = synthetic(distort={2: 1.25})
    cal, val = fit_profile(prof)
    assert cal["p50"]["specs"] == ["fam:i=0", "fam:i=3", "fam:i=5"]
    rows = {r["spec"]: r for r in val["heldout"]}
    assert "fam:i=2" in rows
    assert rows["fam:i=2"]["rel_error"] == pytest.approx(1 / 1.25 - 1)
    errs = np.abs([r["rel_error"] for r in val["heldout"]])
    assert val["fraction_within_10pct"] == pytest.approx(np.mean(errs <= 0.10))
    assert val["p95_rel_error"] == pytest.approx(np.percentile(errs, 95))
    assert val["by_metric"]["p90"]["n_heldout"] == val["n_heldout"]


def test_overhead_is_subtracted_per_block():
    # same truth with a bigger overhead: the net sums, hence a and b, do not change
    cal, _ = fit_profile(synthetic(overhead=0.2))
    assert cal["p50"]["a"] == pytest.approx(2.0) and cal["p50"]["b"] == pytest.approx(0.05)


def test_missing_block_is_bad_input():
    prof = synthetic()
    prof.calibration, prof.validation = fit_profile(prof)
    with pytest.raises(BadInputError, match="no measurement for block 'Z'"):
        predict_blocks(prof, ["A", "Z"], "p50")


def test_calibration_roundtrip():
    c = Calibration(metric="p90", a=1.5, b=0.25, specs=("x", "y"), residual_ms=0.01)
    assert Calibration.from_dict(c.to_dict()) == c
    assert c.apply(2.0) == pytest.approx(3.25)


def test_block_cost_blends_hot_and_cold_by_weight_bytes():
    from edgekd.latency.predict import block_sum_ms, cold_fraction

    prof = Profile(target={"name": "t", "precision": "fp32"}, family="fam", protocol={"l2_bytes": 1000})
    prof.overhead = const(0.0)
    prof.blocks["S"] = BlockEntry(key="S", signature={"params": 50}, latency=const(1.0),
                                  latency_cold=const(2.0))  # 200 bytes
    prof.blocks["L"] = BlockEntry(key="L", signature={"params": 200}, latency=const(1.0),
                                  latency_cold=const(3.0))  # 800 bytes
    assert cold_fraction(prof, ["S", "S"]) == 0.0  # 400 B <= L2/2: hot
    assert block_sum_ms(prof, ["S", "S"], "p50") == pytest.approx(2.0)
    assert cold_fraction(prof, ["S", "S", "S"]) == pytest.approx(0.1)  # 600 B: (600-500)/1000
    assert block_sum_ms(prof, ["S", "S", "S"], "p50") == pytest.approx(3 * (0.9 * 1.0 + 0.1 * 2.0))
    assert cold_fraction(prof, ["L", "L"]) == 1.0  # 1600 B >= 1.5 x L2: cold
    assert block_sum_ms(prof, ["L", "L"], "p50") == pytest.approx(6.0)
    # activations count too: twice the largest block working set (here 4 * (8 + 8) bytes)
    prof.blocks["S"].signature.update(in_shape=[2, 2, 2], out_shape=[2, 2, 2])
    assert cold_fraction(prof, ["S", "S", "S"]) == pytest.approx((600 + 128 - 500) / 1000)
