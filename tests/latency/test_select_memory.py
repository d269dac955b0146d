"""select under a size budget: the size estimate against measured artifacts, candidates over
the budget excluded (also when stepping up), a budget below every candidate named."""
import json

import pytest
from synthetic_profiles import synthetic  # noqa: E402 - tests/ is on sys.path under pytest

from edgekd.errors import BadInputError
from edgekd.latency.fit import refit
from edgekd.latency.profile import save_profile
from edgekd.latency.select import select_student
from edgekd.latency.size_estimate import estimate_size_bytes
from edgekd.targets import load_target

# synthetic(): predicted p90 per model i: 0.25, 0.65, 0.85, 1.05, 1.25, 1.85 ms. Params are set
# to 10,000 x (i + 1): on ort-cpu (fp32, 4 KB + 0.08 B/param) 43.8, 83.7, 123.5, 163.4, ... KB.


def _prof():
    prof = synthetic()
    for i, m in enumerate(prof.models):
        m.params = 10_000 * (i + 1)
    refit(prof)
    prof.validation["p95_rel_error"] = 0.10
    for m in prof.validation["by_metric"].values():
        m["p95_rel_error"] = 0.10
    return prof


def test_size_budget_excludes_candidates_and_says_how_many():
    free = select_student(_prof(), 1.3, target="ort-cpu")
    assert free.chosen.spec == "fam:i=3" and free.memory_note == ""
    sel = select_student(_prof(), 1.3, target="ort-cpu", max_size_kb=100)
    assert sel.chosen.spec == "fam:i=1"
    assert sel.chosen.size_kb == pytest.approx((4.08 * 20_000 + 4096) / 1024)
    assert [c.over_memory for c in sel.candidates] == [False, False, True, True, True, True]
    assert sel.memory_note.startswith("4 of 6 candidates excluded") and "100 KB" in sel.memory_note
    assert sel.to_dict()["max_size_kb"] == 100


def test_int8_target_estimates_a_smaller_artifact():
    sel = select_student(_prof(), 1.3, target="ort-cpu-int8", max_size_kb=100)
    assert sel.chosen.spec == "fam:i=3"  # 1.18 B/param: 50.1 KB


def test_step_up_never_passes_the_size_budget():
    measured = {"fam:i=1": 0.3, "fam:i=2": 0.4, "fam:i=3": 0.5}
    sel = select_student(_prof(), 1.3, target="ort-cpu", max_size_kb=100, verify=True,
                         measure=measured.__getitem__)
    assert [a.spec for a in sel.attempts] == ["fam:i=1"]
    assert sel.chosen.spec == "fam:i=1"


def test_size_budget_below_every_candidate_names_the_smallest():
    with pytest.raises(BadInputError) as err:
        select_student(_prof(), 1.3, target="ort-cpu", max_size_kb=20)
    msg = str(err.value)
    assert "--max-size-kb 20 is below every candidate" in msg
    assert "smallest reachable is 43.8 KB estimated (fam:i=0" in msg


def test_budgets_that_cannot_both_be_met():
    # a latency budget below every candidate: the latency message, as without a size budget
    with pytest.raises(BadInputError, match="smallest reachable is 0.250 ms"):
        select_student(_prof(), 0.2, target="ort-cpu", max_size_kb=100)
    prof = _prof()
    prof.models[0].params = 1_000_000  # the fast one is too big, the small ones too slow
    with pytest.raises(BadInputError, match="meets both 0.5 ms"):
        select_student(prof, 0.5, target="ort-cpu", max_size_kb=100)


def test_cli_size_budget(run_cli, tmp_path):
    prof = _prof()
    prof.target = load_target("ort-cpu").model_dump(mode="json")
    p = tmp_path / "prof.json"
    save_profile(prof, p, refit=False)
    r = run_cli("select", "--profile", p, "--budget-ms", "1.3", "--max-size-kb", "100", "--no-recalibrate",
                "--grid-only", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["chosen"]["spec"] == "fam:i=1" and "4 of 6" in out["memory_note"]
    r = run_cli("select", "--profile", p, "--budget-ms", "1.3", "--max-size-kb", "10", "--no-recalibrate")
    assert r.returncode == 2 and "smallest reachable is 43.8 KB" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("select", "--profile", p, "--budget-ms", "1.3", "--max-size-kb", "-1", "--no-recalibrate")
    assert r.returncode == 2 and "positive number of kilobytes" in r.stderr


@pytest.mark.parametrize("target", ["ort-cpu", "openvino-cpu"])
def test_estimate_is_calibrated_on_measured_artifacts(tmp_path, target):
    """The rule against the real artifact of two tiny students: never under it, and over it by
    at most 15% + 16 KB."""
    if target == "openvino-cpu":
        pytest.importorskip("openvino")
    from edgekd.deploy import export_ref
    from edgekd.models import build_model

    spec = load_target(target)
    for i, s in enumerate(["convnet:width=8,depth=1,res=8", "convnet:width=8,depth=4,res=16"]):
        params = sum(p.numel() for p in build_model(s, num_classes=10, in_channels=1).parameters())
        out = tmp_path / f"m{i}"
        export_ref(s, spec, out, in_channels=1)
        files = [f for f in out.iterdir() if f.is_file() and (target == "ort-cpu" or f.suffix != ".onnx")]
        size = sum(f.stat().st_size for f in files)
        est = estimate_size_bytes(params, spec)
        assert size <= est <= size * 1.15 + 16 * 1024, (s, size, est)
