"""Selection under a budget: max capacity under budget/(1+eps), step-down on verify, errors."""
import json

import pytest
from test_predict import synthetic  # noqa: E402 - tests/ is on sys.path under pytest

from edgekd.errors import BadInputError, VerdictError
from edgekd.latency.profile import save_profile
from edgekd.latency.select import select_student
from edgekd.targets import load_target

# synthetic(): predicted (p50 = p90) per model i: 0.25, 0.65, 0.85, 1.05, 1.25, 1.85 ms;
# params 100 * (i + 1)


def with_eps(prof, eps):
    prof.refit()
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


def test_capacity_is_params_not_latency():
    prof = synthetic()
    prof.models[1].params = 10_000  # a slow-ish but big candidate (0.65 ms)
    sel = select_student(with_eps(prof, 0.10), 1.3)
    assert sel.chosen.spec == "fam:i=1"
    assert sel.chosen.predicted_ms == pytest.approx(0.65)


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
