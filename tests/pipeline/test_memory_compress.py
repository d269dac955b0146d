"""compress's memory budgets: config fields (validated, in the config file, the digest of runs
without them unchanged), passed to verify, and a size failure of a kept INT8 artifact does not
fall back to the larger fp32 one."""
from __future__ import annotations

import numpy as np
import pytest

from edgekd.errors import BadInputError
from edgekd.latency.stats import LatencyStats
from edgekd.pipeline import CompressConfig, ExportResult, PruneStageResult, QuantizeResult, make_plan
from edgekd.pipeline import stages
from edgekd.pipeline.context import Context
from edgekd.verify.report import Check, VerifyReport

BASE = dict(data="digits", target="ort-cpu", budget_ms=50.0, student="convnet:width=8,depth=2,res=16")


def test_config_fields_validated_and_digest_kept(tiny_assets):
    t = str(tiny_assets / "teacher.pt")
    plain = CompressConfig.make(teacher=t, **BASE)
    assert plain.max_size_kb is None and plain.max_peak_mb is None
    with_mem = CompressConfig.make(teacher=t, max_size_kb=100, max_peak_mb=20, **BASE)
    assert with_mem.digest() != plain.digest()
    doc = plain.model_dump(mode="json")
    doc.pop("max_size_kb"), doc.pop("max_peak_mb"), doc.pop("rank")  # fields added later, unset
    import hashlib
    import json

    if not doc["loss_options"]:
        del doc["loss_options"]
    old = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
    assert plain.digest() == old  # runs written before the memory budgets (and --rank) resume
    assert CompressConfig.make(teacher=t, rank="macs", **BASE).digest() != plain.digest()
    with pytest.raises(BadInputError, match="max_size_kb"):
        CompressConfig.make(teacher=t, max_size_kb=0, **BASE)


def test_cli_print_config_has_the_budgets(run_cli, tiny_assets):
    r = run_cli("compress", "--teacher", tiny_assets / "teacher.pt", "--data", "digits", "-t", "ort-cpu",
                "--budget-ms", "5", "--max-size-kb", "80", "--max-peak-mb", "30", "--print-config")
    assert r.returncode == 0, r.stderr
    assert "max_size_kb: 80.0" in r.stdout and "max_peak_mb: 30.0" in r.stdout
    r = run_cli("compress", "--teacher", tiny_assets / "teacher.pt", "--data", "digits", "-t", "ort-cpu",
                "--budget-ms", "5", "--max-peak-mb", "-2", "--print-config")
    assert r.returncode == 2 and "max_peak_mb" in r.stderr and "Traceback" not in r.stderr


def _report(art, target, size_ok):
    stats = LatencyStats.from_samples(np.full(50, 1.0))
    checks = [Check("latency", "pass", 1.0, 50.0, "p90 1 ms"),
              Check("size", "pass" if size_ok else "fail", 120.0, 100.0, "120.0 KB (onnx) vs max 100 KB")]
    return VerifyReport(artifact=str(art), artifact_sha256="0" * 64, target=target.name, accuracy=0.9,
                        n_val=10, latency=stats, budget_ms=50.0, checks=checks)


def test_verify_stage_passes_the_budgets_and_keeps_int8_on_a_size_miss(tiny_assets, tmp_path, monkeypatch):
    import edgekd.verify as verify

    cfg = CompressConfig.make(teacher=str(tiny_assets / "teacher.pt"), quantize="int8", max_size_kb=100,
                              max_peak_mb=20, **BASE)
    ctx = Context(tmp_path, cfg, make_plan(cfg), show=False)
    ctx._bundle = object()
    seen = []

    def fake(art, target, data, **kw):
        seen.append((target.name, kw.get("max_size_kb"), kw.get("max_peak_mb")))
        return _report(art, target, size_ok=False)

    monkeypatch.setattr(verify, "verify_artifact", fake)
    exp = ExportResult(artifact="ort-cpu/model.onnx", extra=(), checkpoint="student.pt", onnx="ort-cpu/model.onnx",
                       format="onnx", target="ort-cpu", sha256="0", parity={})
    q = QuantizeResult(status="kept", artifact="ort-cpu-int8/model.int8.onnx", target="ort-cpu-int8", extra=())
    ver = stages.verify_stage(ctx, PruneStageResult(status="skipped", reason="off"), exp, q)
    assert seen == [("ort-cpu-int8", 100, 20)]  # no fallback to the larger fp32 artifact
    assert ver.verdict == "fail" and "fallback" not in ver.report
