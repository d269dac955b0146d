"""edgekd verify: exit 0 when requirements hold, 1 on a missed budget or accuracy (with the
numbers), 2 on an artifact that no longer matches its manifest; the p90 interval rule."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

@pytest.fixture(scope="module")
def run_dir(tiny_assets):
    """One finished compress run (tiny teacher, given student, one epoch) on a fast target."""
    from edgekd.pipeline import CompressConfig, compress

    root = tiny_assets
    cfg = CompressConfig.make(teacher=str(root / "teacher.pt"), data="digits", target=str(root / "fast-cpu.yaml"),
                              budget_ms=50, student="convnet:width=8,depth=2,res=16", epochs=1)
    res = compress(cfg, root / "run", show=False)
    assert res.verdict == "pass"
    return root


def _verify(run_cli, root, artifact, *extra):
    return run_cli("verify", artifact, "--target", root / "fast-cpu.yaml", "--data", "digits", *extra)


def test_verify_passes_with_parity_and_manifest(run_dir, run_cli):
    art = run_dir / "run" / "fast-cpu" / "model.onnx"
    r = _verify(run_cli, run_dir, art, "--budget-ms", "100", "--reference", run_dir / "run" / "student.pt",
                "--max-drop", "0.01", "--json")
    assert r.returncode == 0, r.stderr
    import json

    d = json.loads(r.stdout)
    assert d["verdict"] == "PASS" and d["manifest"].endswith("manifest.json")
    assert {c["name"] for c in d["checks"]} == {"latency", "accuracy_drop", "parity"}
    assert d["n_val"] > 100 and 0 <= d["accuracy"] <= 1
    assert abs(d["accuracy"] - d["reference_accuracy"]) < 0.01


def test_verify_missed_budget_exits_1_with_numbers(run_dir, run_cli):
    art = run_dir / "run" / "fast-cpu" / "model.onnx"
    r = _verify(run_cli, run_dir, art, "--budget-ms", "0.0001")
    assert r.returncode == 1
    assert "p90" in r.stderr and "budget 0.0001 ms" in r.stderr


def test_verify_missed_accuracy_exits_1(run_dir, run_cli):
    art = run_dir / "run" / "fast-cpu" / "model.onnx"
    r = _verify(run_cli, run_dir, art, "--min-accuracy", "1.0")
    assert r.returncode == 1
    assert "minimum 1.0000" in r.stderr


def test_verify_refuses_tampered_artifact(run_dir, tmp_path, run_cli):
    copy = tmp_path / "run"
    shutil.copytree(run_dir / "run", copy)
    art = copy / "fast-cpu" / "model.onnx"
    data = bytearray(art.read_bytes())
    data[-1] ^= 0xFF
    art.write_bytes(bytes(data))
    r = _verify(run_cli, run_dir, art, "--budget-ms", "100")
    assert r.returncode == 2
    assert str(art) in r.stderr and "manifest.json" in r.stderr


def test_verify_missing_artifact_is_bad_input(run_dir, run_cli):
    r = _verify(run_cli, run_dir, run_dir / "nope.onnx")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_latency_verdict_interval_rule():
    from edgekd.latency.stats import LatencyStats
    from edgekd.verify import FAIL, INCONCLUSIVE, PASS, latency_verdict

    rng = np.random.default_rng(0)
    stats = LatencyStats.from_samples(1.0 + 0.01 * rng.standard_normal(400))
    lo, hi = stats.p90_ci
    assert latency_verdict(stats, hi + 1e-6) == PASS
    assert latency_verdict(stats, lo - 1e-6) == FAIL
    assert latency_verdict(stats, (lo + hi) / 2) == INCONCLUSIVE
    assert latency_verdict(stats, stats.p50 + 1e-9, metric="p50") == PASS
