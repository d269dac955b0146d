"""Blocks and pairs measured in alternation with the profile's probe: the machine's drift is
taken out of their readings (cost.drift_factor), as the reference takes it out of whole models."""
import pytest

from edgekd.latency.cost import block_sum_ms, context_sum_ms, drift_factor, in_pair_ms, net_block_ms
from edgekd.latency.fit import fit_profile
from edgekd.latency.profile import BlockEntry, ModelEntry, PairEntry, Profile, pair_key
from synthetic_profiles import const  # noqa: F401 - tests/ is on sys.path under pytest

NET = {"A": 0.1, "B": 0.2, "C": 0.3, "D": 0.4}
PROBE = 0.05  # the probe's reading on a still machine


def slowed(slow: dict, loads: dict | None = None) -> Profile:
    """Blocks of net cost NET, each measured while the machine ran ``slow[k]`` times slower (the
    block, its overhead, its cold copies and the probe beside it alike); pairs add exactly the
    second block; whole models (no drift) cost 2 x the sum of their blocks + 0.05 ms."""
    prof = Profile(target={"name": "t"}, family="fam", protocol={"l2_bytes": 1 << 30}, grid=[])
    prof.overhead = const(0.01)
    for k, v in NET.items():
        f = slow.get(k, 1.0)
        load = (loads or {}).get(k, "one")
        prof.blocks[k] = BlockEntry(key=k, signature={"params": 1}, latency=const((v + 0.01) * f),
                                    overhead=const(0.01 * f), latency_cold=const(1.5 * v * f), copies=4,
                                    probe=const(PROBE * f * (1.2 if load == "second" else 1.0)), probe_load=load)
    for a, b in (("A", "B"), ("B", "C"), ("C", "D"), ("A", "C"), ("B", "D")):
        f = slow.get(a + b, 1.0)
        prof.pairs[pair_key(a, b)] = PairEntry(first=a, second=b, latency=const((NET[a] + NET[b] + 0.01) * f),
                                              first_alone=const((NET[a] + 0.01) * f), probe=const(PROBE * f),
                                              probe_load="one")
    for i, keys in enumerate([("A", "B"), ("A", "C"), ("B", "C"), ("A", "B", "C"), ("B", "C", "D"),
                              ("A", "B", "C", "D"), ("B", "D"), ("C", "D")]):
        y = 2 * sum(NET[k] for k in keys) + 0.05
        prof.models.append(ModelEntry(family="fam", spec=f"fam:i={i}", params=i + 1, macs=i + 1, blocks=keys,
                                      latency=const(y)))
        prof.grid.append(f"fam:i={i}")
    return prof


def test_a_block_measured_in_a_slow_phase_reads_its_typical_cost():
    prof = slowed({"C": 1.6})  # C's seconds ran 1.6x slow: its reading and its probe's alike
    assert prof.blocks["C"].latency.p50 == pytest.approx(0.31 * 1.6)
    assert drift_factor(prof, prof.blocks["C"]) == pytest.approx(1 / 1.6)
    assert drift_factor(prof, prof.blocks["A"]) == pytest.approx(1.0)
    for k, v in NET.items():
        assert net_block_ms(prof, k, "p50") == pytest.approx(v)
    assert block_sum_ms(prof, ["A", "B", "C", "D"], "p50") == pytest.approx(1.0)
    # the cold copies are scaled by the same factor (cache 0-0: every block cold)
    assert block_sum_ms(prof, ["C"], "p50", cache=(0.0, 1e-12)) == pytest.approx(1.5 * 0.3)
    # so the fit is exact again: every held-out model within 10%, no error
    _, val = fit_profile(prof)
    assert val["fraction_within_10pct"] == 1.0 and val["p95_rel_error"] == pytest.approx(0.0, abs=1e-9)
    # without the probe's readings (a profile made before), the slow phase stays in the sum
    for e in prof.blocks.values():
        e.probe = None
    prof._typical_probe_cache = None
    assert net_block_ms(prof, "C", "p50") == pytest.approx(0.3 * 1.6)
    _, val = fit_profile(prof)
    assert val["p95_rel_error"] > 0.05


def test_a_pair_measured_in_a_slow_phase_adds_its_typical_cost():
    prof = slowed({"BC": 1.5})
    assert (prof.pairs["B -> C"].latency.p50 - prof.pairs["B -> C"].first_alone.p50) == pytest.approx(0.45)
    assert in_pair_ms(prof, "B -> C", "p50") == pytest.approx(0.3)
    assert context_sum_ms(prof, ["A", "B", "C", "D"], "p50") == pytest.approx(1.0)


def test_each_load_of_the_probe_is_its_own_scale():
    # a resumed run opened the probe again, and that load reads 20% slower on a still machine:
    # its blocks are scaled by their own load's typical reading, not the first one's
    prof = slowed({}, loads={"C": "second", "D": "second"})
    for k, v in NET.items():
        assert net_block_ms(prof, k, "p50") == pytest.approx(v)


def test_probe_readings_round_trip(tmp_path):
    from edgekd.latency.profile import load_profile, save_profile

    prof = slowed({"C": 1.6})
    back = load_profile(save_profile(prof, tmp_path / "p.json"))
    assert back.blocks["C"].probe.p50 == pytest.approx(PROBE * 1.6) and back.blocks["C"].probe_load == "one"
    assert back.pairs["B -> C"].probe.p50 == pytest.approx(PROBE)
    assert net_block_ms(back, "C", "p50") == pytest.approx(0.3)


def test_a_slow_phase_over_part_of_a_whole_model_is_taken_out_by_rounds():
    # 100 rounds of slices; in the first 55 the machine runs 1.5x slow. A 5 ms slice holds three
    # runs of the model when fast and two when slow; the reference (2 ms, 3 ms slow) one run per
    # slice. The ratio of the two medians then compares the model's fast median (its slow runs are
    # fewer than half) with the reference's slow one, and reads the model a third low; divided
    # round by round, every sample says the same.
    import numpy as np

    from edgekd.latency.cost import model_latency
    from edgekd.latency.measure import Measurement
    from edgekd.latency.profile import steady_stats
    from edgekd.latency.stats import LatencyStats

    def meas(values, rounds):
        x = np.asarray(values, float)
        return Measurement(stats=LatencyStats.from_samples(x), samples_ms=x, first_inference_ms=x[0],
                           warmup_iters=0, warmup_s=0.0, disturbed=np.zeros(x.size, bool),
                           rounds=np.asarray(rounds))

    slow = lambda r: r < 55  # noqa: E731
    m_vals, m_rounds, r_vals, r_rounds = [], [], [], []
    for r in range(100):
        n = 2 if slow(r) else 3
        m_vals += [1.5 if slow(r) else 1.0] * n
        m_rounds += [r] * n
        r_vals.append(3.0 if slow(r) else 2.0)
        r_rounds.append(r)
    m, ref = meas(m_vals, m_rounds), meas(r_vals, r_rounds)
    steady = steady_stats(m, ref)
    assert steady.p50 == pytest.approx(1.5)  # on the scale of the reference's median (3.0)
    prof = Profile(target={"name": "t"}, family="fam")
    entry = ModelEntry(family="fam", spec="fam:a", params=1, macs=1, blocks=("A",), latency=m.stats,
                       reference=const(2.0), reference_load="one")
    prof.models.append(entry)  # the typical reference reading of the run: 2.0 ms
    entry.reference = ref.stats
    prof.models.append(ModelEntry(family="fam", spec="fam:b", params=2, macs=2, blocks=("A",),
                                  latency=const(1.0), reference=const(2.0), reference_load="one"))
    prof.models.append(ModelEntry(family="fam", spec="fam:c", params=3, macs=3, blocks=("A",),
                                  latency=const(1.0), reference=const(2.0), reference_load="one"))
    # the ratio of medians: the model's fast median against the reference's slow one
    assert model_latency(prof, entry, "p50") == pytest.approx(1.0 * 2.0 / 3.0)
    entry.steady = steady
    assert model_latency(prof, entry, "p50") == pytest.approx(1.0)  # what it costs at the run's typical speed
    back = ModelEntry.from_dict(entry.to_dict())
    assert back.steady.p50 == pytest.approx(1.5)
