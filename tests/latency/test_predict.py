"""The latency predictor's arithmetic on a synthetic profile (exact values)."""
import json

import numpy as np
import pytest

from edgekd.errors import BadInputError
from edgekd.latency.predict import (Calibration, calibration_indices, epsilon, feature_ms, fit_line,
                                    fit_profile, predict, predict_blocks)
from edgekd.latency.profile import BlockEntry, ModelEntry, Profile
from synthetic_profiles import const, synthetic  # noqa: F401 - tests/ is on sys.path under pytest


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
    assert calibration_indices(34) == [0, 7, 13, 20, 26, 33]  # a large grid: six


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
    # activations do not count (a block's are reused at once); weights at the target's precision
    prof.blocks["S"].signature.update(in_shape=[2, 2, 2], out_shape=[2, 2, 2], hidden=4)
    assert cold_fraction(prof, ["S", "S", "S"]) == pytest.approx(0.1)
    prof.target["precision"] = "int8"  # 50 B a block: 150 B of 1000, hot
    assert cold_fraction(prof, ["S", "S", "S"]) == 0.0


def boundary_profile(with_pairs=True):
    """Blocks that pay a layout change at their input and output when run alone (as OpenVINO's
    CPU plugin does at a model's edges), once per model when run inside one: net c, in-cost i,
    out-cost u per block. alone = o + i + c + u; pair(a, b) = o + i_a + c_a + c_b + u_b;
    whole = o + i_first + sum(c) + u_last."""
    from edgekd.latency.profile import PairEntry, pair_key

    o = 0.01
    c = {"A": 0.10, "B": 0.20, "C": 0.30, "D": 0.15}
    i = {"A": 0.02, "B": 0.25, "C": 0.05, "D": 0.40}
    u = {"A": 0.30, "B": 0.01, "C": 0.20, "D": 0.02}
    prof = Profile(target={"name": "openvino-cpu"}, family="fam", grid=[])
    prof.overhead = const(o)
    for k in c:
        prof.blocks[k] = BlockEntry(key=k, signature={"key": k}, latency=const(o + i[k] + c[k] + u[k]))
    if with_pairs:
        for a in c:
            for b in c:
                prof.pairs[pair_key(a, b)] = PairEntry(first=a, second=b,
                                                       latency=const(o + i[a] + c[a] + c[b] + u[b]))
    combos = [("A", "B"), ("D", "A", "C"), ("B", "B", "C"), ("C", "D", "A", "B"), ("A", "C", "C", "D"),
              ("D", "D", "B", "A", "C"), ("B", "C", "A", "D", "D", "C")]
    for n, keys in enumerate(combos):
        whole = o + i[keys[0]] + sum(c[k] for k in keys) + u[keys[-1]]
        prof.models.append(ModelEntry(family="fam", spec=f"fam:i={n}", params=100 * (n + 1), macs=1000 * (n + 1),
                                      blocks=keys, latency=const(whole)))
        prof.grid.append(f"fam:i={n}")
    return prof, (o, c, i, u)


def test_context_method_telescopes_to_the_whole_model_and_is_chosen():
    prof, (o, c, i, u) = boundary_profile()
    cal, val = fit_profile(prof)
    assert cal["p50"]["method"] == "context"
    loo = cal["p50"]["loo"]
    assert min(v for k, v in loo.items() if k.startswith("context")) < min(
        v for k, v in loo.items() if k.startswith("alone"))
    assert cal["p50"]["a"] == pytest.approx(1.0) and cal["p50"]["b"] == pytest.approx(o)
    assert val["method"] == "context" and val["fraction_within_10pct"] == 1.0
    assert val["max_rel_error"] == pytest.approx(0.0, abs=1e-9)
    prof.calibration, prof.validation = cal, val
    keys = ["C", "A", "D", "B"]  # never measured whole
    assert predict_blocks(prof, keys, "p50") == pytest.approx(o + i["C"] + sum(c[k] for k in keys) + u["B"])
    # the same numbers read alone: every block pays both edges, and no line through them fits
    _, val_alone = fit_profile(boundary_profile(with_pairs=False)[0])
    assert val_alone["method"] == "alone" and val_alone["max_rel_error"] > 0.10


def test_context_needs_every_adjacent_pair():
    prof, _ = boundary_profile()
    prof.calibration, prof.validation = fit_profile(prof)
    del prof.pairs["C -> A"]
    with pytest.raises(BadInputError, match="block pair 'C -> A'"):
        predict_blocks(prof, ["B", "C", "A"], "p50")


def test_fit_line_weighs_relative_error():
    # the 1-ms model runs 5% slow; the 30-us models sit on the line: a fit on absolute residuals
    # would move them by 7-13%, the relative fit keeps every point within 3%
    x = np.array([0.03, 0.05, 0.5, 1.0])
    y = x + 0.01
    y[3] = 1.06
    a, b, _ = fit_line(x, y)
    rel = (a * x + b) / y - 1
    assert np.max(np.abs(rel)) < 0.03


def test_context_never_counts_a_block_above_its_cost_alone():
    # a pair that pays more than both blocks alone (e.g. their weights together spill L2): the
    # second block counts at its cost alone, not pair - first
    from edgekd.latency.predict import context_sum_ms
    from edgekd.latency.profile import PairEntry, pair_key

    prof = Profile(target={"name": "t"}, family="fam", protocol={"l2_bytes": 1 << 30})
    prof.overhead = const(0.01)
    prof.blocks["A"] = BlockEntry(key="A", signature={"params": 1}, latency=const(0.11))
    prof.blocks["B"] = BlockEntry(key="B", signature={"params": 1}, latency=const(0.21))
    prof.pairs[pair_key("A", "B")] = PairEntry(first="A", second="B", latency=const(0.51))
    assert context_sum_ms(prof, ["A", "B"], "p50") == pytest.approx(0.10 + 0.20)
    prof.pairs[pair_key("A", "B")] = PairEntry(first="A", second="B", latency=const(0.26))
    assert context_sum_ms(prof, ["A", "B"], "p50") == pytest.approx(0.10 + 0.15)


def test_readings_measured_in_alternation_are_preferred():
    # the block and pair entries were measured while the machine ran slower (+0.02 ms on every
    # run) than when the profile's overhead was; the readings taken in alternation with them
    # carry the same drift, so the differences come out as without it
    from edgekd.latency.predict import context_sum_ms, in_pair_ms, net_block_ms
    from edgekd.latency.profile import PairEntry, pair_key

    prof = Profile(target={"name": "t"}, family="fam", protocol={"l2_bytes": 1 << 30})
    prof.overhead = const(0.01)
    prof.blocks["A"] = BlockEntry(key="A", signature={"params": 1}, latency=const(0.13))
    prof.blocks["B"] = BlockEntry(key="B", signature={"params": 1}, latency=const(0.23))
    prof.pairs[pair_key("A", "B")] = PairEntry(first="A", second="B", latency=const(0.32))
    # without them: the drift of each separate entry enters every difference
    assert net_block_ms(prof, "A", "p50") == pytest.approx(0.12)
    assert in_pair_ms(prof, "A -> B", "p50") == pytest.approx(0.32 - 0.13)
    prof.blocks["A"].overhead = const(0.03)
    prof.blocks["B"].overhead = const(0.03)
    prof.pairs["A -> B"].first_alone = const(0.15)  # A alone, a moment even slower
    assert net_block_ms(prof, "A", "p50") == pytest.approx(0.10)
    assert in_pair_ms(prof, "A -> B", "p50") == pytest.approx(0.17)
    assert context_sum_ms(prof, ["A", "B"], "p50") == pytest.approx(0.10 + 0.17)
    back = Profile.from_dict(prof.to_dict())  # stored and read back
    assert back.blocks["A"].overhead.p50 == pytest.approx(0.03)
    assert back.pairs["A -> B"].first_alone.p50 == pytest.approx(0.15)
    assert context_sum_ms(back, ["A", "B"], "p50") == pytest.approx(0.27)


def cache_profile(cache):
    """Models of S-blocks (hot 1 ms, cold 2 ms, 100 weight bytes) whose whole latency follows the
    cold fraction of ``cache`` exactly; L2 = 1000 bytes, footprints 0.1-9.6 x L2."""
    from edgekd.latency.predict import cold_fraction

    prof = Profile(target={"name": "t", "precision": "fp32"}, family="fam", grid=[],
                   protocol={"l2_bytes": 1000})
    prof.overhead = const(0.0)
    prof.blocks["S"] = BlockEntry(key="S", signature={"params": 25}, latency=const(1.0), latency_cold=const(2.0))
    for n in (1, 3, 5, 6, 8, 10, 12, 14, 16, 24, 32, 48, 64, 96):
        keys = ["S"] * n
        y = n * (1.0 + cold_fraction(prof, keys, cache)) + 0.05
        prof.models.append(ModelEntry(family="fam", spec=f"fam:n={n}", params=25 * n, macs=n,
                                      blocks=keys, latency=const(y)))
        prof.grid.append(f"fam:n={n}")
    return prof


@pytest.mark.parametrize("cache", [(0.25, 1.0), (0.5, 1.5), (1.0, 4.0), (2.0, 8.0)])
def test_cache_model_is_chosen_per_profile_and_stored(cache):
    from edgekd.latency.predict import CACHE_MODELS, get_calibration

    assert cache in CACHE_MODELS
    prof = cache_profile(cache)
    cal, val = fit_profile(prof)
    assert tuple(cal["p50"]["cache"]) == cache and tuple(cal["p90"]["cache"]) == cache
    assert cal["p50"]["a"] == pytest.approx(1.0) and cal["p50"]["b"] == pytest.approx(0.05)
    assert val["max_rel_error"] == pytest.approx(0.0, abs=1e-9) and val["cache"] == list(cache)
    # every other cache model misses some held-out model
    other = next(c for c in CACHE_MODELS if c != cache)
    for wrong in (c for c in CACHE_MODELS if c != cache):
        assert any(abs(feature_ms(prof, m.blocks, "alone", wrong) + 0.05 - m.latency.p50) > 0.02 * m.latency.p50
                   for m in prof.models), wrong
    prof.calibration, prof.validation = {"p50": Calibration(metric="p50", a=1.0, b=0.05, specs=(),
                                                            cache=other).to_dict()}, val
    assert any(abs(predict(prof, m.spec, "p50") / m.latency.metric("p50") - 1) > 0.02 for m in prof.models)
    assert get_calibration(prof, "p50").cache == other


def test_a_calibration_stored_without_a_cache_model_is_refitted_on_load(tmp_path):
    from edgekd.latency.predict import get_calibration
    from edgekd.latency.profile import load_profile, save_profile

    prof = cache_profile((0.25, 1.0))
    path = save_profile(prof, tmp_path / "p.json")
    data = json.loads(path.read_text())
    for c in data["calibration"].values():
        del c["cache"]
        c["a"] = 7.0  # what an older version might have stored
    path.write_text(json.dumps(data))
    loaded = load_profile(path)
    assert get_calibration(loaded, "p50").cache == (0.25, 1.0)
    assert get_calibration(loaded, "p50").a == pytest.approx(1.0)


def test_a_calibration_stored_by_another_predictor_version_is_refitted_on_load(tmp_path):
    from edgekd.latency.predict import PREDICTOR_VERSION, get_calibration
    from edgekd.latency.profile import load_profile, save_profile

    path = save_profile(cache_profile((0.25, 1.0)), tmp_path / "p.json")
    data = json.loads(path.read_text())
    assert all(c["predictor"] == PREDICTOR_VERSION for c in data["calibration"].values())
    for c in data["calibration"].values():
        c["a"] = 7.0
    path.write_text(json.dumps(data))
    assert get_calibration(load_profile(path), "p50").a == pytest.approx(7.0)  # same version: as stored
    for c in data["calibration"].values():
        c["predictor"] = PREDICTOR_VERSION - 1  # fitted to other features: fitted again
    path.write_text(json.dumps(data))
    assert get_calibration(load_profile(path), "p50").a == pytest.approx(1.0)
    assert json.loads(path.read_text())["calibration"]["p50"]["a"] == 7.0  # the file is not rewritten


def drifting(drift, loads=None) -> Profile:
    """synthetic() measured on a machine running ``drift[i]`` times slower while model i was, with
    the reference (0.4 ms on a still machine) measured alongside; ``loads[i]``: its load id."""
    prof = synthetic()
    for i, m in enumerate(prof.models):
        m.latency = const(m.latency.p50 * drift[i])
        m.reference = const(0.4 * drift[i] * (1.1 if loads and loads[i] == "second" else 1.0))
        m.reference_load = loads[i] if loads else "one"
    return prof


def test_the_reference_takes_the_machines_drift_out_of_whole_models():
    from edgekd.latency.predict import model_latency

    drift = [1.0, 1.0, 1.12, 0.9, 1.0, 1.15]
    prof = drifting(drift)
    truth = synthetic()
    for m, t in zip(prof.models, truth.models):  # the typical moment: drift 1.0 (the median)
        assert model_latency(prof, m, "p50") == pytest.approx(t.latency.p50)
        assert m.latency.p50 == pytest.approx(t.latency.p50 * drift[prof.models.index(m)])
    cal, val = fit_profile(prof)
    assert cal["p50"]["a"] == pytest.approx(2.0) and cal["p50"]["b"] == pytest.approx(0.05)
    assert val["fraction_within_10pct"] == 1.0 and val["p95_rel_error"] == pytest.approx(0.0, abs=1e-9)
    # the readings as measured: model 2 ran 12% slow
    assert val["fraction_within_10pct_raw"] < 1.0
    row = next(r for r in val["heldout"] if r["spec"] == "fam:i=2")
    assert row["rel_error_raw"] == pytest.approx(1 / 1.12 - 1) and row["measured_raw_ms"] > row["measured_ms"]
    # without references (a profile made before): the readings as they are
    plain = drifting(drift)
    for m in plain.models:
        m.reference = None
    assert model_latency(plain, plain.models[2], "p50") == pytest.approx(plain.models[2].latency.p50)


def test_each_load_of_the_reference_is_its_own_scale():
    from edgekd.latency.predict import model_latency

    # a resumed run loaded the reference again, and that load runs 10% slower on a still machine:
    # its models are scaled by their own load's typical reading, not the other's
    loads = ["one", "one", "one", "second", "second", "second"]
    drift = [1.0, 1.05, 0.95, 1.0, 1.05, 0.95]
    prof = drifting(drift, loads)
    truth = synthetic()
    for m, t in zip(prof.models, truth.models):
        assert model_latency(prof, m, "p50") == pytest.approx(t.latency.p50)


def resumed(machine: float, placement: float = 1.0, bridges: bool = True) -> Profile:
    """drifting(): models 0-2 in a first run, 3-5 in a resumed one (another load of the reference)
    on a machine ``machine`` times as slow, where the reloaded reference runs ``placement`` times
    as slow again on its own; with ``bridges``, the resumed run measured models 0 and 1 again."""
    import copy

    prof = drifting([1.0] * 6, ["one"] * 3 + ["second"] * 3)
    for m in prof.models[3:]:
        m.latency = const(m.latency.p50 * machine)
        m.reference = const(0.4 * machine * placement)
    if bridges:
        for m in prof.models[:2]:
            b = copy.deepcopy(m)
            b.latency, b.reference, b.reference_load = const(m.latency.p50 * machine), \
                const(0.4 * machine * placement), "second"
            prof.bridges.append(b)
    return prof


@pytest.mark.parametrize("machine,placement", [(0.75, 1.0), (1.33, 1.0), (1.0, 1.1), (0.8, 1.1)])
def test_a_resumed_runs_bridges_put_its_load_on_the_first_ones_scale(machine, placement):
    """The machine moved between the runs (its models and the reference as much), or only the
    reloaded reference's placement did, or both: the models measured again by the resumed run
    say by how much, and every model lands on the first run's scale."""
    from edgekd.latency.predict import model_latency

    truth = synthetic()
    prof = resumed(machine, placement)
    for m, t in zip(prof.models, truth.models):
        assert model_latency(prof, m, "p50") == pytest.approx(t.latency.p50)
    cal, val = fit_profile(prof)
    assert val["fraction_within_10pct"] == 1.0
    # without the bridges, each load is its own scale: right for a placement alone, off by the
    # machine's move otherwise
    plain = resumed(machine, placement, bridges=False)
    got = model_latency(plain, plain.models[4], "p50") / truth.models[4].latency.p50
    assert got == pytest.approx(machine)


def test_a_resumed_runs_block_bridges_scale_its_blocks_and_pairs():
    """Blocks measured by a resumed run (another load of the probe) on a machine 1.3x as slow:
    the stored blocks it measured again put its blocks on the first run's scale."""
    import copy

    from edgekd.latency.cost import drift_factor

    prof = synthetic()
    for b in prof.blocks.values():
        b.probe, b.probe_load = const(0.02), "one"
    moved = prof.blocks["C"]
    moved.latency, moved.probe, moved.probe_load = const(moved.latency.p50 * 1.3), const(0.026), "second"
    for k in ("A", "B"):
        b = copy.deepcopy(prof.blocks[k])
        b.latency, b.probe, b.probe_load = const(b.latency.p50 * 1.3), const(0.026), "second"
        prof.bridges.append(b)
    assert moved.latency.p50 * drift_factor(prof, moved) == pytest.approx(0.31)
    prof.bridges.clear()
    assert moved.latency.p50 * drift_factor(prof, moved) == pytest.approx(0.31 * 1.3)


def test_bridges_round_trip(tmp_path):
    from edgekd.latency.profile import load_profile, save_profile

    prof = resumed(1.33)
    prof.blocks["A"].probe, prof.blocks["A"].probe_load = const(0.02), "one"
    b = BlockEntry(key="A", signature={"key": "A"}, latency=const(0.2), probe=const(0.03), probe_load="second")
    prof.bridges.append(b)
    save_profile(prof, tmp_path / "p.json")
    back = load_profile(tmp_path / "p.json")
    assert [type(x).__name__ for x in back.bridges] == ["ModelEntry", "ModelEntry", "BlockEntry"]
    assert back.bridges[0].reference_load == "second" and back.bridges[2].probe_load == "second"
    assert back.bridges[2].probe.p50 == pytest.approx(0.03)


def test_reference_readings_round_trip(tmp_path):
    from edgekd.latency.profile import load_profile, save_profile

    prof = drifting([1.0, 1.1, 0.9, 1.0, 1.0, 1.0])
    save_profile(prof, tmp_path / "p.json")
    back = load_profile(tmp_path / "p.json")
    assert [(m.reference.p50, m.reference_load) for m in back.models] == [
        (m.reference.p50, m.reference_load) for m in prof.models]
    assert back.validation["fraction_within_10pct"] == prof.validation["fraction_within_10pct"]


def test_readings_the_calibration_cannot_rank_are_averaged(monkeypatch):
    from edgekd.latency import fit
    from edgekd.latency import predict as P

    prof = cache_profile((0.25, 1.0))
    # leave-one-out errors of alone x CACHE_MODELS, in their order: (0.5, 1.0) is within TIE of
    # the best, (0.25, 1.0); the other two are not
    errs = dict(zip(P.CACHE_MODELS, [0.10, 0.05, 0.06, 0.30, 0.40, 0.50]))
    assert len(errs) == len(P.CACHE_MODELS)
    assert P.CACHE_MODELS[1] == (0.25, 1.0) and P.CACHE_MODELS[2] == (0.5, 1.0) and 0.06 <= P.TIE * 0.05 < 0.10
    calls = iter(P.CACHE_MODELS)
    monkeypatch.setattr(fit, "loo_error", lambda x, y: errs[next(calls)])  # where choose_reading looks
    method, cache, _, tied = P.choose_reading(prof)
    assert (method, cache) == ("alone", (0.25, 1.0)) and tied == [("alone", (0.5, 1.0))]
    cal = P.calibrate(prof, "p50", (method, cache, {}, tied))
    (other,) = cal.also
    assert other["cache"] == (0.5, 1.0)
    keys = ["S"] * 8
    first = cal.a * P.feature_ms(prof, keys, "alone", (0.25, 1.0)) + cal.b
    second = other["a"] * P.feature_ms(prof, keys, "alone", (0.5, 1.0)) + other["b"]
    assert first != pytest.approx(second)  # the two lines differ here
    assert cal.predict(prof, keys) == pytest.approx((first + second) / 2)
    assert P.Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    # stored and used: predictions, validation and selection go through the average
    prof.calibration = {"p50": cal.to_dict(), "p90": cal.to_dict()}
    assert P.predict_blocks(prof, keys, "p50") == pytest.approx((first + second) / 2)
    row = P.validate(prof, cal)["heldout"][0]
    m = prof.model(row["spec"])
    assert row["predicted_ms"] == pytest.approx(cal.predict(prof, m.blocks))
