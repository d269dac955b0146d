"""Selection under a budget: max capacity under budget/(1+eps), step-down on verify, errors."""
import json

import pytest
from synthetic_profiles import synthetic  # noqa: E402 - tests/ is on sys.path under pytest

from edgekd.errors import BadInputError, VerdictError
from edgekd.latency.fit import refit
from edgekd.latency.profile import save_profile
from edgekd.latency.select import select_student
from edgekd.targets import load_target

# synthetic(): predicted (p50 = p90) per model i: 0.25, 0.65, 0.85, 1.05, 1.25, 1.85 ms;
# params 100 * (i + 1)


def with_eps(prof, eps):
    refit(prof)
    prof.validation["p95_rel_error"] = eps
    for m in prof.validation["by_metric"].values():
        m["p95_rel_error"] = eps
    return prof


def test_picks_max_capacity_under_budget_over_one_plus_eps():
    sel = select_student(with_eps(synthetic(), 0.10), 1.3, metric="p90")
    assert sel.epsilon == pytest.approx(0.10)
    assert sel.limit_ms == pytest.approx(1.3 / 1.1)
    assert sel.chosen.spec == "fam:i=3"  # 1.25 > 1.3/1.1 = 1.18: i=4 does not fit with the margin
    assert [c.fits for c in sel.candidates] == [True, True, True, True, False, False]
    sel0 = select_student(with_eps(synthetic(), 0.0), 1.3, metric="p90")
    assert sel0.chosen.spec == "fam:i=4"  # no margin: 1.25 <= 1.3


def test_capacity_is_macs_then_params_not_latency():
    prof = synthetic()
    prof.models[1].macs = 10**6  # a fast candidate with the most compute (0.65 ms)
    sel = select_student(with_eps(prof, 0.10), 1.3)
    assert sel.rank == "macs" and sel.chosen.spec == "fam:i=1"
    assert sel.chosen.predicted_ms == pytest.approx(0.65)
    assert [c.spec for c in sel.candidates][-2:] == ["fam:i=5", "fam:i=1"]  # ordered by MACs
    prof.models[2].macs = 10**6  # a tie in MACs: params decide
    assert select_student(with_eps(prof, 0.10), 1.3).chosen.spec == "fam:i=2"


def test_each_family_declares_its_rank():
    from edgekd.latency.select import family_rank

    assert family_rank("mobilenetv2") == "params" and family_rank("resnet") == "params"
    assert family_rank("hf-mobilenetv2") == "macs" and family_rank("hf-resnet") == "macs"
    assert family_rank("not-a-family") == "macs"  # the synthetic "fam" of these tests too
    prof = synthetic()
    prof.models[1].macs = 10**6
    prof.family = "convnet"  # edgekd's own: params first unless asked
    assert select_student(with_eps(prof, 0.10), 1.3, derive=False).rank == "params"


def test_rank_params_keeps_the_params_order():
    prof = synthetic()
    prof.models[1].macs = 10**6
    prof.models[2].params = 10**6
    assert select_student(with_eps(prof, 0.10), 1.3, rank="params").chosen.spec == "fam:i=2"
    assert select_student(with_eps(prof, 0.10), 1.3, rank="macs").chosen.spec == "fam:i=1"
    with pytest.raises(BadInputError, match="unknown capacity rank 'flops'"):
        select_student(with_eps(prof, 0.10), 1.3, rank="flops")


def test_step_up_follows_the_rank():
    # i=3 is picked (1.05 ms predicted) and measures 0.6: room for the larger i=5 (1.85 x 0.6/1.05,
    # which misses when measured), then i=4 (1.25); with i=4's MACs below i=3's, i=4 is no longer
    # "larger" and is not tried
    prof = synthetic()
    measured = {"fam:i=3": 0.6, "fam:i=4": 0.75, "fam:i=5": 1.4}
    sel = select_student(with_eps(prof, 0.10), 1.3, verify=True, measure=measured.__getitem__)
    assert [a.spec for a in sel.attempts] == ["fam:i=3", "fam:i=5", "fam:i=4"]
    assert sel.chosen.spec == "fam:i=4"
    prof.models[4].macs = 10
    sel = select_student(with_eps(prof, 0.10), 1.3, verify=True, measure=measured.__getitem__)
    assert [a.spec for a in sel.attempts] == ["fam:i=3", "fam:i=5"] and sel.chosen.spec == "fam:i=3"


def test_verify_steps_down_while_it_misses():
    measured = {"fam:i=3": 1.5, "fam:i=2": 1.31, "fam:i=1": 0.7}
    sel = select_student(with_eps(synthetic(), 0.10), 1.3, verify=True, measure=measured.__getitem__)
    assert [a.spec for a in sel.attempts] == ["fam:i=3", "fam:i=2", "fam:i=1"]
    assert sel.chosen.spec == "fam:i=1" and sel.chosen.verified_ms == 0.7 and sel.verified
    with pytest.raises(VerdictError, match="no candidate"):
        select_student(with_eps(synthetic(), 0.10), 1.3, verify=True, measure=lambda s: 9.9)


def test_budget_below_every_candidate():
    with pytest.raises(BadInputError) as err:
        select_student(with_eps(synthetic(), 0.10), 0.2)
    msg = str(err.value)
    assert "smallest reachable is 0.250 ms" in msg and "fam:i=0" in msg
    assert "0.275 ms" in msg  # 0.25 * (1 + eps)
    assert "smaller family" in msg and "pruning" in msg and "INT8" in msg


def _write(tmp_path, prof, **fp):
    prof.target = load_target("ort-cpu").model_dump(mode="json")
    prof.fingerprint = dict(fp)
    with_eps(prof, 0.10)
    p = tmp_path / "prof.json"
    save_profile(prof, p, refit=False)
    return p


def test_cli_select_json_and_too_small(run_cli, tmp_path):
    p = _write(tmp_path, synthetic())
    r = run_cli("select", "--profile", p, "--budget-ms", "1.3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["chosen"]["spec"] == "fam:i=3" and out["epsilon"] == pytest.approx(0.10)
    assert out["rank"] == "macs"
    r = run_cli("select", "--profile", p, "--budget-ms", "1.3", "--rank", "params", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["rank"] == "params"
    r = run_cli("select", "--profile", p, "--budget-ms", "0.1")
    assert r.returncode == 2
    assert "smallest reachable is 0.250 ms" in r.stderr and "Traceback" not in r.stderr


def test_cli_fingerprint_mismatch_warns_and_strict_refuses(run_cli, tmp_path):
    p = _write(tmp_path, synthetic(), cpu="Imaginary CPU 9000", logical_cores=999, threads=1)
    r = run_cli("select", "--profile", p, "--budget-ms", "1.3")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "Imaginary CPU 9000" in r.stderr
    r = run_cli("select", "--profile", p, "--budget-ms", "1.3", "--strict")
    assert r.returncode == 2
    assert "another environment" in r.stderr and "Imaginary CPU 9000" in r.stderr


def test_cli_truncated_profile(run_cli, tmp_path):
    p = _write(tmp_path, synthetic())
    text = p.read_text()
    p.write_text(text[: len(text) // 2])
    r = run_cli("select", "--profile", p, "--budget-ms", "1.3")
    assert r.returncode == 2 and "truncated" in r.stderr and "Traceback" not in r.stderr


def test_verify_steps_up_when_the_measurement_leaves_room():
    # i=3 predicted 1.05 runs at 0.8 (ratio 0.76): i=4 scaled 0.95 <= 0.95 x 1.3, i=5 scaled 1.41 not
    measured = {"fam:i=3": 0.8, "fam:i=4": 1.0}
    sel = select_student(with_eps(synthetic(), 0.10), 1.3, verify=True, measure=measured.__getitem__)
    assert [a.spec for a in sel.attempts] == ["fam:i=3", "fam:i=4"]
    assert sel.chosen.spec == "fam:i=4" and sel.chosen.verified_ms == 1.0
    # a larger candidate that misses when measured is not kept
    measured["fam:i=4"] = 1.35
    sel = select_student(with_eps(synthetic(), 0.10), 1.3, verify=True, measure=measured.__getitem__)
    assert [a.spec for a in sel.attempts] == ["fam:i=3", "fam:i=4"] and sel.chosen.spec == "fam:i=3"
    # no room: nothing more is measured; max_up=0 never steps up
    sel = select_student(with_eps(synthetic(), 0.10), 1.3, verify=True, measure={"fam:i=3": 1.2}.__getitem__)
    assert [a.spec for a in sel.attempts] == ["fam:i=3"]
    sel = select_student(with_eps(synthetic(), 0.10), 1.3, verify=True, measure={"fam:i=3": 0.8}.__getitem__,
                         max_up=0)
    assert [a.spec for a in sel.attempts] == ["fam:i=3"]


def test_verify_measures_over_as_many_loads_as_the_profile_did():
    from edgekd.latency.select import verify_settings

    prof = synthetic()
    ort = load_target("ort-cpu")
    assert verify_settings(prof, ort).sessions == 1  # an old profile without the field: one load
    prof.protocol = {"model": {"sessions": 3}, "block": {"sessions": 1}}
    s = verify_settings(prof, ort)
    assert s.sessions == 3 and s.min_time_s == ort.measure.min_time_s  # the rest is the target's


def mobilenet_profile():
    """A mobilenetv2 profile of widths 0.25 and 0.5 at depths 0.5 and 1 (16 px): each block's net
    latency 1 us + 1 ns per MAC, pairs the sum of their blocks, models the sum + 0.02 ms."""
    from edgekd.latency.profile import BlockEntry, ModelEntry, PairEntry, Profile, model_pairs
    from edgekd.models import block_signatures, parse_spec
    from synthetic_profiles import const

    prof = Profile(target={"name": "ort-cpu"}, family="mobilenetv2", grid=[])
    prof.overhead = const(0.01)
    net = {}
    for w in (0.25, 0.5):
        for d in (0.5, 1):
            spec = parse_spec(f"mobilenetv2:width={w},depth={d},res=16").spec
            sigs = block_signatures(spec, 1, num_classes=10)
            for g in sigs:
                net[g["key"]] = 0.001 + 1e-6 * g["macs"]
                prof.blocks[g["key"]] = BlockEntry(key=g["key"], signature={}, latency=const(net[g["key"]] + 0.01))
            keys = [g["key"] for g in sigs]
            for pk, (a, b) in zip(model_pairs(keys), zip(keys, keys[1:])):
                prof.pairs[pk] = PairEntry(first=a, second=b, latency=const(net[a] + net[b] + 0.01))
            prof.models.append(ModelEntry(family="mobilenetv2", spec=spec, params=sum(g["params"] for g in sigs),
                                          macs=sum(g["macs"] for g in sigs), blocks=tuple(keys),
                                          latency=const(sum(net[k] for k in keys) + 0.02)))
            prof.grid.append(spec)
    refit(prof)
    return prof


def _stage_blocks(spec):
    from edgekd.models import block_signatures

    return sum(1 for g in block_signatures(spec, 1, num_classes=10) if g["key"].startswith("ir:"))


def test_derived_depths_fill_in_between_a_widths_two_profiled_depths():
    from edgekd.latency.select import candidates, derived_specs

    prof = mobilenet_profile()
    derived = derived_specs(prof)
    for w in ("0.25", "0.5"):
        d06 = next(s for s in derived if f"width={w}," in s and "depth=0.6," in s)
        d067 = next(s for s in derived if f"width={w}," in s and "depth=0.67," in s)
        # inverted residuals per stage 1,2,2,3,2,2,1 and 1,2,3,3,3,3,1, between 11 (0.5) and 17 (1)
        assert (_stage_blocks(d06), _stage_blocks(d067)) == (13, 16)
    cands = {c.spec: c for c in candidates(prof, "p50", derive=True)}
    half, one, mid = (f"mobilenetv2:width=0.5,depth={d},res=16,expansion=6,stem_stride=1" for d in ("0.5", "1", "0.6"))
    assert cands[mid].derived and not cands[half].derived
    assert cands[half].predicted_ms < cands[mid].predicted_ms < cands[one].predicted_ms
    assert cands[half].params < cands[mid].params < cands[one].params
    # the same block list under two depths (0.75 runs as 0.67) is one candidate
    assert not any("depth=0.75," in s for s in cands)
