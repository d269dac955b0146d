"""edgekd compress: the chain end to end on digits with a tiny teacher, the plan, refusing a used
--out, resuming after SIGKILL during distillation, pruning and export, and the prune stage
(--prune auto with an injected latency function, so no outcome depends on this machine's speed)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

STUDENT = "convnet:width=8,depth=2,res=16"


@pytest.fixture(scope="module")
def assets(tiny_assets):
    """A tiny (untrained) teacher checkpoint, a fast ONNX Runtime target file and a grid."""
    (tiny_assets / "grid.txt").write_text("convnet:width=8,depth=2,res=16\nconvnet:width=16,depth=2,res=16\n")
    return tiny_assets


def _args(assets, out, *extra, budget="50", student=STUDENT, epochs="2"):
    return ["compress", "--teacher", assets / "teacher.pt", "--data", "digits", "--target",
            assets / "fast-cpu.yaml", "--budget-ms", budget, "--student", student, "--epochs", epochs,
            "--out", out, *extra]


def _check_complete(out: Path) -> dict:
    from edgekd.manifest import verify_directory

    state = json.loads((out / "state.json").read_text())
    assert [s for s, r in state["stages"].items() if r["status"] == "done"] == [
        "select", "distill", "prune", "export", "quantize", "verify", "report"]
    assert verify_directory(out) == []
    man = json.loads((out / "manifest.json").read_text())
    paths = {e["path"] for e in man["artifacts"]}
    assert {"student.pt", "fast-cpu/model.onnx"} <= paths
    assert man["versions"]["edgekd"] and man["versions"]["torch"] and man["data_fingerprint"]
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema"] == "edgekd.report/v1"
    for name in ("report.md", "report.html"):
        assert (out / name).stat().st_size > 0
    return state


def test_compress_auto_student_end_to_end(assets, tmp_path, run_cli):
    out = tmp_path / "run"
    r = run_cli(*_args(assets, out, "--grid", assets / "grid.txt", student="auto"))
    assert r.returncode == 0, r.stderr
    assert "plan for" in r.stdout and "1. select" in r.stdout
    state = _check_complete(out)
    sel = state["stages"]["select"]["result"]
    assert sel["source"] == "profile" and sel["spec"] in (assets / "grid.txt").read_text()
    assert sel["selection"]["chosen"]["verified_ms"] > 0
    assert (out / sel["profile"]).is_file() if not Path(sel["profile"]).is_absolute() else Path(sel["profile"]).is_file()
    pru = state["stages"]["prune"]["result"]
    assert pru["status"] == "skipped" and pru["budget_needs_pruning"] is False
    assert pru["measured_ms"] <= 50
    assert pru["reason"] == f"the student meets the budget ({pru['measured_ms']:.4f} ms <= 50 ms)"
    assert state["stages"]["export"]["result"]["checkpoint"] == "student.pt"
    assert not (out / "pruned.pt").exists()
    rep = json.loads((out / "report.json").read_text())
    assert rep["verdict"] == "pass" and rep["selection"]["candidates"]
    assert len(rep["training"]) == 2 and rep["latency_samples_ms"]
    md = (out / "report.md").read_text()
    assert "PASS" in md and sel["spec"] in md


def test_dry_run_prints_plan_and_writes_nothing(assets, tmp_path, run_cli):
    out = tmp_path / "never"
    r = run_cli(*_args(assets, out, "--dry-run", "--quantize", "off"))
    assert r.returncode == 0, r.stderr
    for stage in ("select", "distill", "prune", "export", "quantize", "verify", "report"):
        assert stage in r.stdout
    assert "if the distilled student misses the budget: prune with torch-pruning to the budget, then " \
           "fine-tune 2 epochs by KD" in r.stdout  # max(2, 2 // 2)
    assert not out.exists()


@pytest.mark.parametrize("kw, needle", [({"prune": "off", "epochs": 8}, "prune     off"),
                                        ({"epochs": 8}, "then fine-tune 4 epochs by KD"),
                                        ({"epochs": 8, "prune_epochs": 3}, "then fine-tune 3 epochs by KD")])
def test_plan_says_what_pruning_will_do(assets, kw, needle):
    from edgekd.pipeline import CompressConfig, make_plan

    cfg = CompressConfig.make(teacher=str(assets / "teacher.pt"), data="digits", target=str(assets / "fast-cpu.yaml"),
                              budget_ms=1, student=STUDENT, **kw)
    assert needle in make_plan(cfg).text()


def test_missed_budget_exits_1_with_reports_and_its_folder_is_not_reused(assets, tmp_path, run_cli):
    out = tmp_path / "run"
    r = run_cli(*_args(assets, out, "--prune", "off", budget="0.0001", epochs="1"))
    assert r.returncode == 1, r.stderr
    assert "latency" in r.stderr and "0.0001" in r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["verdict"] == "fail"
    state = json.loads((out / "state.json").read_text())  # --prune off: as before pruning existed
    assert state["stages"]["prune"]["result"] == {"status": "skipped", "reason": "off (--prune off)"}
    assert state["stages"]["export"]["result"]["checkpoint"] == "student.pt" and not (out / "pruned.pt").exists()
    # the finished run's folder is not used again, nor resumed with other settings, and a folder
    # that holds something else is refused even with --force
    again = run_cli(*_args(assets, out, "--prune", "off", budget="0.0001", epochs="1"))
    assert again.returncode == 2 and "already holds a compress run" in again.stderr
    other = run_cli(*_args(assets, out, "--prune", "off", "--resume", budget="0.0001", epochs="3"))
    assert other.returncode == 2 and "epochs" in other.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r2 = run_cli(*_args(assets, foreign, "--force", epochs="1"))
    assert r2.returncode == 2 and "holds no edgekd compress run" in r2.stderr
    assert (foreign / "notes.txt").read_text() == "mine"


def _spawn(args, env=None):
    full = dict(os.environ)
    full.pop("EDGEKD_DEBUG", None)
    full.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "edgekd", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=full)


def _stage_status(out: Path, stage: str):
    try:
        state = json.loads((out / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return (state["stages"].get(stage) or {}).get("status")


def _kill_when(proc, cond, limit_polls=20000):
    for _ in range(limit_polls):
        if proc.poll() is not None:
            return False
        if cond():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    return False


@pytest.mark.parametrize("stage", ["distill", "export"])
def test_sigkill_then_resume_finishes_consistent(assets, tmp_path, run_cli, stage):
    out = tmp_path / "run"
    args = _args(assets, out, epochs="6")
    proc = _spawn(args)
    if stage == "distill":  # after at least one epoch checkpoint, before distillation ends
        cond = lambda: (_stage_status(out, "distill") == "running"  # noqa: E731
                        and (out / "distill" / "checkpoints" / "last.pt").exists())
    else:
        cond = lambda: _stage_status(out, "export") == "running"  # noqa: E731
    killed = _kill_when(proc, cond)
    assert killed, "the run finished before it could be killed"
    assert _stage_status(out, stage) == "running"
    r = run_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    state = _check_complete(out)
    assert state["stages"][stage]["resumed"] is True
    if stage == "distill":
        log = [json.loads(x) for x in (out / "distill" / "train.jsonl").read_text().splitlines()]
        assert [e["epoch"] for e in log] == list(range(1, 7))
        assert state["stages"]["select"]["resumed"] is False
    assert not list(out.rglob("*.tmp"))


def test_sigkill_during_prune_then_resume_reruns_it(assets, tmp_path, run_cli):
    out = tmp_path / "run"
    # no real student meets 0.0001 ms: the prune stage measures every ratio, then fine-tunes
    args = _args(assets, out, "--prune-epochs", "1", budget="0.0001", student=WIDE, epochs="1")
    killed = _kill_when(_spawn(args), lambda: _stage_status(out, "prune") == "running")
    assert killed, "the run finished before it could be killed"
    r = run_cli(*args, "--resume")
    assert r.returncode == 1, r.stderr  # verify reports the missed budget
    state = _check_complete(out)
    assert state["stages"]["prune"]["resumed"] is True and state["stages"]["distill"]["resumed"] is False
    pru = state["stages"]["prune"]["result"]
    assert pru["status"] == "pruned" and pru["met"] is False and "misses the 0.0001 ms budget" in pru["message"]
    assert (out / "pruned.pt").is_file() and not (out / "prune").exists()
    assert "misses the 0.0001 ms budget" in (out / "report.md").read_text()


# ------------------------------------------------------------------ the prune stage, in process

WIDE = "convnet:width=16,depth=2,res=16"


def _macs(model) -> int:
    from edgekd.models import count_macs_params

    return int(count_macs_params(model, (1, 16, 16))[0])


def _latency_by_macs(spec: str, ms: float):
    """A deterministic stand-in for measuring: latency proportional to MACs, ``ms`` for the
    unpruned ``spec``. Records every value it returns."""
    from edgekd.models import build_model

    m0 = _macs(build_model(spec, num_classes=10, in_channels=1))

    def fn(model):
        v = ms * _macs(model) / m0
        fn.calls.append(v)
        return types.SimpleNamespace(p50=v, p90=v, p99=v, mean=v)

    fn.calls = []
    return fn


def _cfg(assets, **kw):
    from edgekd.pipeline import CompressConfig

    base = dict(teacher=str(assets / "teacher.pt"), data="digits", target=str(assets / "fast-cpu.yaml"),
                budget_ms=1.0, student=WIDE, epochs=1, prune_epochs=1)
    return CompressConfig.make(**{**base, **kw})


def _onnx_params(path) -> int:
    import numpy as np
    import onnx

    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


@pytest.fixture(scope="module")
def pruned_run(assets, tmp_path_factory):
    """A finished run whose distilled student 'measures' 2 ms against a 1 ms budget."""
    from edgekd.pipeline import compress

    out = tmp_path_factory.mktemp("pruned") / "run"
    fn = _latency_by_macs(WIDE, 2.0)
    res = compress(_cfg(assets), out, show=False, latency_fn=fn)
    return out, res, fn.calls


def test_prune_stage_prunes_the_student_that_misses_the_budget(pruned_run):
    from edgekd.models import build_model, count_macs_params
    from edgekd.models.checkpoint import load_checkpoint

    out, res, calls = pruned_run
    state = _check_complete(out)
    pru = state["stages"]["prune"]["result"]
    assert calls[0] == 2.0  # the decision: the distilled student measured against the budget
    assert pru["status"] == "pruned" and pru["met"] is True and pru["budget_needs_pruning"] is True
    assert pru["why"] == "the distilled student measures p90 2.0000 ms > 1 ms"
    assert 0 < pru["ratio"] < 1 and pru["after"]["p90"] <= 1.0 < pru["before"]["p90"]
    assert pru["after"]["params"] < pru["before"]["params"] and pru["after"]["macs"] < pru["before"]["macs"]
    assert all(0 <= pru[k] <= 1 for k in ("acc_before", "acc_pruned", "acc_finetuned"))
    assert pru["finetune_epochs"] == 1 and pru["steps"][-1]["ratio"] == pru["ratio"]
    assert f"ratio {pru['ratio']:g}: params {pru['before']['params']:,} -> {pru['after']['params']:,}" in pru["reason"]
    # the pruned student is what gets exported and verified
    assert pru["checkpoint"] == "pruned.pt"
    model, meta = load_checkpoint(out / "pruned.pt")
    assert meta["extra"]["pruned"] and meta["extra"]["prune_ratio"] == pru["ratio"]
    assert count_macs_params(model, (1, 16, 16))[1] == pru["after"]["params"]
    spec_params = count_macs_params(build_model(WIDE, num_classes=10, in_channels=1), (1, 16, 16))[1]
    exp = state["stages"]["export"]["result"]
    assert exp["checkpoint"] == "pruned.pt" and _onnx_params(out / exp["onnx"]) < spec_params
    ver = state["stages"]["verify"]["result"]
    assert ver["artifact"] == exp["artifact"] and ver["artifact_sha256"] == exp["sha256"]
    assert ver["reference_accuracy"] == pytest.approx(pru["acc_finetuned"], abs=1e-9)
    assert {c["name"]: c["verdict"] for c in ver["checks"]}["parity"] == "pass"
    man = json.loads((out / "manifest.json").read_text())
    assert "pruned.pt" in {e["path"] for e in man["artifacts"]}
    assert "pruned: ratio" in (out / "report.md").read_text()


def test_resume_after_the_prune_stage_skips_it(assets, pruned_run, tmp_path):
    import shutil

    from edgekd.pipeline import compress

    src, _, _ = pruned_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    state = json.loads((out / "state.json").read_text())
    before = state["stages"]["prune"]
    for stage in ("export", "quantize", "verify", "report"):
        del state["stages"][stage]  # as if killed right after the prune stage finished
    (out / "state.json").write_text(json.dumps(state))

    def no_measuring(model):
        raise AssertionError("the finished prune stage ran again")

    lines = []
    res = compress(_cfg(assets), out, resume=True, echo=lines.append, latency_fn=no_measuring)
    after = json.loads((out / "state.json").read_text())
    assert after["stages"]["prune"] == before
    assert any(ln.startswith("[prune] done earlier") for ln in lines)
    assert after["stages"]["export"]["result"]["checkpoint"] == "pruned.pt"
    # the stages left were handed the finished ones' results, read back typed
    from edgekd.pipeline import ExportResult, PruneStageResult

    assert res.results["prune"] == PruneStageResult.from_dict(before["result"])
    assert res.results["prune"].checkpoint == "pruned.pt"
    assert isinstance(res.results["export"], ExportResult) and res.results["export"].checkpoint == "pruned.pt"
    assert {k: r.to_dict() for k, r in res.results.items()} == {k: v["result"] for k, v in after["stages"].items()}


def test_no_candidate_of_the_profile_meets_the_budget_so_the_fastest_is_pruned(assets, tmp_path):
    from edgekd.pipeline import compress

    grid = tmp_path / "grid.txt"
    grid.write_text(f"{WIDE}\nconvnet:width=64,depth=3,res=16\n")
    out = tmp_path / "run"
    fn = _latency_by_macs(WIDE, 0.0002)  # twice the budget below
    res = compress(_cfg(assets, student="auto", grid=str(grid), budget_ms=0.0001, profile_min_time_s=0.05),
                   out, show=False, latency_fn=fn)
    state = _check_complete(out)
    sel, pru = state["stages"]["select"]["result"], state["stages"]["prune"]["result"]
    assert sel["needs_pruning"] is True and sel["spec"] == WIDE  # no real candidate runs in 0.1 µs
    assert pru["why"].startswith("no candidate meets the budget (")
    assert fn.calls[0] == pytest.approx(0.0002)  # no separate decision measurement: the selection decided
    assert pru["status"] == "pruned" and pru["met"] and pru["after"]["params"] < pru["before"]["params"]
    assert state["stages"]["export"]["result"]["checkpoint"] == "pruned.pt"
    assert res.verdict == "fail"  # verify measures for real: the budget is out of reach
    assert "the fastest was distilled, then pruned" in (out / "report.md").read_text()


def test_bad_prune_epochs_is_bad_input():
    from edgekd.errors import BadInputError
    from edgekd.pipeline import CompressConfig

    with pytest.raises(BadInputError, match="prune_epochs=-1"):
        CompressConfig.make(teacher="t.pt", data="digits", target="ort-cpu", budget_ms=1, prune_epochs=-1)


def test_grid_points_move_to_the_data_resolution():
    from edgekd.pipeline import _at_resolution

    got = _at_resolution(["convnet:width=8,depth=2,res=32", "convnet:width=8,depth=2,res=16",
                          "convnet:width=16,depth=4,res=32"], 16)
    assert got == ["convnet:width=8,depth=2,res=16", "convnet:width=16,depth=4,res=16"]


def test_plan_takes_an_hf_teacher_directory_by_absolute_path(assets, tmp_path):
    """An hf:DIR teacher is a directory, not a file: an absolute path passes the plan's check,
    and a missing directory is one line naming it."""
    from edgekd.errors import BadInputError
    from edgekd.pipeline import CompressConfig, make_plan

    kw = dict(data="digits", target=str(assets / "fast-cpu.yaml"), budget_ms=1, student=STUDENT)
    (tmp_path / "hf-teacher").mkdir()
    assert "hf:" in make_plan(CompressConfig.make(teacher=f"hf:{tmp_path / 'hf-teacher'}", **kw)).text()
    with pytest.raises(BadInputError, match="teacher directory .*nope.* does not exist"):
        make_plan(CompressConfig.make(teacher=f"hf:{tmp_path / 'nope'}", **kw))
