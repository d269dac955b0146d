"""`edgekd distill` and `edgekd train` end to end on tiny models and the built-in digits."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _stack_ready() -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in (
            "edgekd.data", "edgekd.models", "edgekd.models.checkpoint", "edgekd.models.teacher",
            "edgekd.distill.criterion", "edgekd.export"))
    except ImportError:
        return False


needs_stack = pytest.mark.skipif(not _stack_ready(), reason="data/models/export not installed")

TINY = ["--data", "digits", "--resolution", "8", "--batch-size", "64"]


# ---------------------------------------------------------------- bad input, no training

def test_bad_loss_option_syntax(run_cli, tmp_path):
    r = run_cli("distill", "--teacher", "x.pt", "--student", "convnet:width=4,res=8", *TINY,
                "--loss-opt", "T4", "--out", tmp_path / "o")
    assert r.returncode == 2 and "--loss-opt 'T4' is not key=value" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_training_setting(run_cli, tmp_path):
    r = run_cli("train", "--model", "convnet:width=4,res=8", *TINY[:4], "--batch-size", "1",
                "--out", tmp_path / "o")
    assert r.returncode == 2 and "batch_size" in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("cmd", ["train", "distill"])
def test_grad_clip_must_be_positive(run_cli, tmp_path, cmd):
    who = (["--model", "convnet:width=4,res=8"] if cmd == "train" else
           ["--teacher", "x.pt", "--student", "convnet:width=4,res=8"])
    r = run_cli(cmd, *who, *TINY, "--grad-clip", "0", "--out", tmp_path / "o")
    assert r.returncode == 2 and "grad_clip=0.0" in r.stderr and "greater than 0" in r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_finished_run_is_refused(run_cli, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    r = run_cli("train", "--model", "convnet:width=4,res=8", *TINY, "--out", out)
    assert r.returncode == 2 and "already holds a finished run" in r.stderr
    assert "--resume" in r.stderr and "--force" in r.stderr


# ---------------------------------------------------------------- real runs

@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    if not _stack_ready():
        pytest.skip("data/models/export not installed")
    out = tmp_path_factory.mktemp("teacher")
    p = subprocess.run([sys.executable, "-m", "edgekd", "train", "--model",
                        "convnet:width=8,res=8", *TINY, "--epochs", "2", "--out", str(out),
                        "--json"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return out


@needs_stack
def test_train_writes_model_onnx_log_summary(teacher_dir):
    summary = json.loads((teacher_dir / "summary.json").read_text())
    assert summary["command"] == "train" and summary["epochs"] == 2
    assert 0.0 <= summary["val_acc"] <= 1.0
    for name in ("model.pt", "model.onnx", "train.jsonl", "checkpoints/last.pt"):
        assert (teacher_dir / name).exists(), name
    lines = (teacher_dir / "train.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]


@needs_stack
def test_distill_then_refuse_then_resume(run_cli, teacher_dir, tmp_path):
    out = tmp_path / "kd"
    args = ("distill", "--teacher", teacher_dir / "model.pt", "--student",
            "convnet:width=4,res=8", *TINY, "--epochs", "1", "--loss", "kd",
            "--loss-opt", "T=4", "--labelled-fraction", "0.5", "--out", out)
    r = run_cli(*args, "--grad-clip", "0.5", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["loss"] == "kd" and summary["cache"] in ("hit", "miss")
    assert summary["config"]["grad_clip"] == 0.5
    epoch = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert epoch["clipped_steps"] >= 0 and epoch["grad_norm_max"] > 0
    r = run_cli(*args, "--resume")  # without --grad-clip: not the saved run's settings
    assert r.returncode == 2 and "grad_clip=None" in r.stderr and "grad_clip=0.5" in r.stderr
    assert (out / "student.pt").exists() and (out / "student.onnx").exists()
    r = run_cli(*args)
    assert r.returncode == 2 and "already holds a finished run" in r.stderr
    r = run_cli(*args, "--grad-clip", "0.5", "--resume", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["val_acc"] == summary["val_acc"]
    r = run_cli(*args, "--force", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["cache"] == "hit"


@needs_stack
@pytest.mark.parametrize("extra, needle", [
    (("--loss", "no_such_loss"), "no_such_loss"),
    (("--loss", "kd", "--loss-opt", "bogus=1"), "bogus"),
    (("--loss", "kd", "--data", "npz:/nonexistent/file.npz"), "does not exist"),
])
def test_distill_bad_input_exit_2(run_cli, teacher_dir, tmp_path, extra, needle):
    r = run_cli("distill", "--teacher", teacher_dir / "model.pt", "--student",
                "convnet:width=4,res=8", *TINY, "--epochs", "1", *extra, "--out", tmp_path / "o")
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@needs_stack
def test_teacher_student_class_mismatch(run_cli, teacher_dir, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "three.npz"
    np.savez(data, x_train=rng.random((30, 1, 8, 8), dtype=np.float32),
             y_train=np.arange(30) % 3, x_val=rng.random((9, 1, 8, 8), dtype=np.float32),
             y_val=np.arange(9) % 3)
    r = run_cli("distill", "--teacher", teacher_dir / "model.pt", "--student",
                "convnet:width=4,res=8", "--data", f"npz:{data}", "--epochs", "1",
                "--out", tmp_path / "o")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@needs_stack
def test_sigterm_exits_130_with_resumable_last(teacher_dir, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "edgekd", "train", "--model", "convnet:width=4,res=8",
            *TINY, "--epochs", "200", "--no-export", "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "EDGEKD_DEBUG"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    last = out / "checkpoints" / "last.pt"
    try:
        for _ in range(1200):  # wait for the first epoch's checkpoint
            if last.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "--resume" in err
    lines = (out / "train.jsonl").read_text().splitlines()
    done = len(lines)
    assert 1 <= done < 200
    import torch

    state = torch.load(last, weights_only=True)
    assert state["format"] == "edgekd-train-state" and state["epoch"] == done
