"""edgekd compress: the chain end to end on digits with a tiny teacher, the plan, refusing a used
--out, and resuming after SIGKILL during distillation and during export."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
    assert state["stages"]["prune"]["result"] == {"status": "skipped", "reason": "not available yet",
                                                  "budget_needs_pruning": False}
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
    assert "not available yet" in r.stdout
    assert not out.exists()


def test_refuses_used_out_and_foreign_dir(assets, tmp_path, run_cli):
    out = tmp_path / "run"
    r = run_cli(*_args(assets, out, epochs="1"))
    assert r.returncode == 0, r.stderr
    again = run_cli(*_args(assets, out, epochs="1"))
    assert again.returncode == 2 and "already holds a compress run" in again.stderr
    other = run_cli(*_args(assets, out, "--resume", epochs="3"))
    assert other.returncode == 2 and "epochs" in other.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r2 = run_cli(*_args(assets, foreign, "--force", epochs="1"))
    assert r2.returncode == 2 and "holds no edgekd compress run" in r2.stderr
    assert (foreign / "notes.txt").read_text() == "mine"


def test_missed_budget_exits_1_with_reports(assets, tmp_path, run_cli):
    out = tmp_path / "run"
    r = run_cli(*_args(assets, out, budget="0.0001", epochs="1"))
    assert r.returncode == 1, r.stderr
    assert "latency" in r.stderr and "0.0001" in r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["verdict"] == "fail"


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
