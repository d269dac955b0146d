"""compress ships what its own verify accepts: a kept INT8 artifact that verify rejects on parity
falls back to the fp32 export (and says why), the manifest names the shipped artifact's target,
a refused INT8 leaves no empty folder, and the report counts the deployed (pruned) model."""
from __future__ import annotations

import numpy as np

from edgekd.latency.stats import LatencyStats
from edgekd.pipeline import CompressConfig, ExportResult, PruneStageResult, QuantizeResult, make_plan
from edgekd.pipeline import stages
from edgekd.pipeline.context import Context
from edgekd.verify.report import Check, VerifyReport


def _ctx(tiny_assets, tmp_path):
    cfg = CompressConfig.make(teacher=str(tiny_assets / "teacher.pt"), data="digits", target="ort-cpu",
                              budget_ms=50.0, student="convnet:width=8,depth=2,res=16", quantize="int8")
    ctx = Context(tmp_path, cfg, make_plan(cfg), show=False)
    ctx._bundle = object()  # verify_artifact is replaced below; nothing loads data
    return ctx


def _report(art, target, parity_ok):
    stats = LatencyStats.from_samples(np.full(50, 1.0))
    checks = [Check("latency", "pass", 1.0, 50.0, "p90 1 ms"),
              Check("parity", "pass" if parity_ok else "fail", 0.5, 0.9, "top-1 agreement 0.5000")]
    return VerifyReport(artifact=str(art), artifact_sha256="0" * 64, target=target.name, accuracy=0.9,
                        n_val=10, latency=stats, budget_ms=50.0, checks=checks)


def test_int8_rejected_by_verify_falls_back_to_fp32(tiny_assets, tmp_path, monkeypatch):
    import edgekd.verify as verify

    ctx = _ctx(tiny_assets, tmp_path)
    seen = []

    def fake(art, target, data, **kw):
        seen.append(target.name)
        return _report(art, target, parity_ok=not target.is_int8)

    monkeypatch.setattr(verify, "verify_artifact", fake)
    exp = ExportResult(artifact="ort-cpu/model.onnx", extra=(), checkpoint="student.pt", onnx="ort-cpu/model.onnx",
                       format="onnx", target="ort-cpu", sha256="0", parity={})
    q = QuantizeResult(status="kept", artifact="ort-cpu-int8/model.int8.onnx", target="ort-cpu-int8", extra=())
    ver = stages.verify_stage(ctx, PruneStageResult(status="skipped", reason="off"), exp, q)
    assert seen == ["ort-cpu-int8", "ort-cpu"]
    assert ver.verdict == "pass" and ver.artifact == "ort-cpu/model.onnx"
    assert "parity" in ver.report["fallback"] and "fp32" in ver.report["fallback"]
    assert stages.shipped_target(ctx, ver).name == "ort-cpu"
    assert "fp32 shipped" in stages.summary("verify", ver)


def test_int8_that_verify_accepts_is_shipped(tiny_assets, tmp_path, monkeypatch):
    import edgekd.verify as verify

    ctx = _ctx(tiny_assets, tmp_path)
    monkeypatch.setattr(verify, "verify_artifact", lambda art, target, data, **kw: _report(art, target, True))
    exp = ExportResult(artifact="ort-cpu/model.onnx", extra=(), checkpoint="student.pt", onnx="ort-cpu/model.onnx",
                       format="onnx", target="ort-cpu", sha256="0", parity={})
    q = QuantizeResult(status="kept", artifact="ort-cpu-int8/model.int8.onnx", target="ort-cpu-int8", extra=())
    ver = stages.verify_stage(ctx, PruneStageResult(status="skipped", reason="off"), exp, q)
    assert ver.artifact == "ort-cpu-int8/model.int8.onnx" and "fallback" not in ver.report
    assert stages.shipped_target(ctx, ver).name == "ort-cpu-int8"


def test_empty_int8_folder_is_removed_and_a_full_one_kept(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    stages._drop_if_empty(tmp_path / "empty")
    stages._drop_if_empty(tmp_path / "full")
    stages._drop_if_empty(tmp_path / "missing")
    assert not (tmp_path / "empty").exists() and (tmp_path / "full" / "f").exists()


def test_report_counts_the_pruned_model(tmp_path):
    from edgekd.report import build_report
    from edgekd.report.markdown import render_markdown

    state = {"config": {"teacher": "t.pt", "budget_ms": 5}, "stages": {
        "distill": {"result": {"student_cost": {"macs": 1000, "params": 900}}},
        "prune": {"result": {"status": "pruned", "checkpoint": "pruned.pt",
                             "after": {"macs": 400, "params": 321}}},
        "verify": {"result": {"verdict": "pass", "fallback": "the int8 artifact failed verify"}}}}
    state["stages"]["quantize"] = {"result": {"status": "kept", "report": {"fp32": {"accuracy": 0.9},
                                                                        "int8": {"accuracy": 0.5}}}}
    state["stages"]["verify"]["result"]["accuracy"] = 0.9
    state["stages"]["distill"]["result"]["teacher_accuracy"] = 1.0
    doc = build_report(tmp_path, state)
    assert doc["accuracy_ratio"] == 0.9  # the fp32 artifact shipped, not the rejected int8 one
    assert doc["student"]["cost"] == {"macs": 400, "params": 321}
    assert doc["student"]["cost_distilled"]["params"] == 900
    md = render_markdown(doc)
    assert "| params student / teacher | 321 /" in md and "Shipped fp32" in md
