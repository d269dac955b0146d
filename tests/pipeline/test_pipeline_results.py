"""compress's typed stage results: each round-trips through state.json exactly, including the
state.json files written before the results were typed (tests/data/compress_state_v1: runs of
the earlier code, samples trimmed), and a resumed run reads them back typed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekd.pipeline import (RESULT_TYPES, STAGES, Cost, DistillResult, ExportResult, PruneStageResult,
                             QuantizeResult, ReportResult, SelectResult, VerifyStageResult, finished_results,
                             result_from_dict)

GOLDEN = sorted((Path(__file__).parent / "data" / "compress_state_v1").glob("*.json"))


def _json(d: dict) -> dict:
    return json.loads(json.dumps(d))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_results_written_before_typing_read_back_exactly(path):
    state = json.loads(path.read_text())
    assert list(state["stages"]) == list(STAGES)
    for stage, rec in state["stages"].items():
        r = result_from_dict(stage, rec["result"])
        assert type(r) is RESULT_TYPES[stage]
        assert r.to_dict() == rec["result"], stage
        assert result_from_dict(stage, _json(r.to_dict())) == r, stage


def test_golden_runs_cover_every_prune_and_select_shape():
    shapes = set()
    for path in GOLDEN:
        stages = json.loads(path.read_text())["stages"]
        shapes.add(("select", stages["select"]["result"]["source"]))
        shapes.add(("prune", frozenset(stages["prune"]["result"]) >= {"why", "checkpoint"},
                    "measured_ms" in stages["prune"]["result"]))
    assert shapes == {("select", "given"), ("select", "profile"), ("prune", False, False),
                      ("prune", True, False), ("prune", False, True)}


SELECTION = {"budget_ms": 1.0, "metric": "p90", "chosen": {"spec": "convnet:width=8,depth=2,res=16"}}
COMPARISON = {"fp32": {"accuracy": 0.9}, "int8": {"accuracy": 0.89}, "speedup": 1.7}
VERIFY_REST = {"artifact_sha256": "ab" * 32, "target": "ort-cpu", "passed": False, "n_val": 360,
               "reference_accuracy": 0.91, "parity": None, "first_inference_ms": 0.3, "manifest": None,
               "remote": None, "samples_ms": [0.1, 0.2],
               "checks": [{"name": "latency", "verdict": "fail", "value": 0.2, "limit": 0.1, "detail": "p90 0.2 ms"},
                          {"name": "accuracy", "verdict": "pass", "value": 0.9, "limit": None, "detail": ""}]}

EVERY_SHAPE = [
    SelectResult(spec="convnet:width=8,depth=2,res=16", source="given", needs_pruning=None),
    SelectResult(spec="convnet:width=8,depth=2,res=16", source="profile", needs_pruning=False,
                 profile="/p/ort-cpu-convnet.json", selection=SELECTION, note=None),
    SelectResult(spec="convnet:width=8,depth=2,res=16", source="profile", needs_pruning=True,
                 profile="profile/ort-cpu-convnet.json", selection=SELECTION, note="no candidate fits"),
    DistillResult(spec="convnet:width=8,depth=2,res=16", student_accuracy=0.9, best_epoch=2, epochs=3,
                  teacher_accuracy=0.95, teacher_cost=None, student_cost=Cost(macs=1000, params=100),
                  cache="off", checkpoint="student.pt", log="distill/train.jsonl",
                  data={"name": "digits", "fingerprint": "f00d"}),
    DistillResult(spec="convnet:width=8,depth=2,res=16", student_accuracy=0.9, best_epoch=2, epochs=3,
                  teacher_accuracy=0.95, teacher_cost=Cost(macs=9000, params=900),
                  student_cost=Cost(macs=1000, params=100), cache="memory", checkpoint="student.pt",
                  log="distill/train.jsonl"),
    PruneStageResult(status="skipped", reason="off (--prune off)"),
    PruneStageResult(status="skipped", reason="the student meets the budget (0.5000 ms <= 1 ms)",
                     budget_needs_pruning=False, measured_ms=0.5),
    PruneStageResult(status="pruned", reason="ratio 0.3: ...", budget_needs_pruning=True, why="too slow",
                     finetune_epochs=2, checkpoint="pruned.pt", search={"ratio": 0.3, "met": True, "steps": []}),
    PruneStageResult(status="skipped", reason="ratio 0: ...", budget_needs_pruning=True, why="too slow",
                     finetune_epochs=2, checkpoint=None, search={"ratio": 0.0, "met": False}),
    ExportResult(artifact="ort-cpu/model.onnx", extra=(), checkpoint="student.pt", onnx="ort-cpu/model.onnx",
                 format="onnx", target="ort-cpu", sha256="ab" * 32, parity={"max_abs": 1e-6}),
    ExportResult(artifact="ov/model.xml", extra=("ov/model.bin",), checkpoint="pruned.pt", onnx="ov/model.onnx",
                 format="openvino", target="openvino-cpu", sha256="cd" * 32, parity={}),
    QuantizeResult(status="skipped", reason="off (--quantize off)"),
    QuantizeResult(status="done", reason="fp16 is built by the tensorrt-fp16 backend at export"),
    QuantizeResult(status="not kept", reason="int8 is not faster", report=COMPARISON),
    QuantizeResult(status="not kept", reason="int8 failed", report=None),
    QuantizeResult(status="kept", artifact="ort-cpu-int8/model.onnx", target="ort-cpu-int8", extra=(),
                   report=COMPARISON),
    VerifyStageResult(artifact="ort-cpu/model.onnx", verdict="fail", accuracy=0.9, metric="p90", budget_ms=0.1,
                      latency={"p50": 0.15, "p90": 0.2}, report=VERIFY_REST),
    ReportResult(paths={"json": "report.json", "md": "report.md", "html": "report.html"}),
]


@pytest.mark.parametrize("result", EVERY_SHAPE, ids=lambda r: f"{type(r).__name__}")
def test_every_stage_result_round_trips(result):
    d = _json(result.to_dict())
    back = type(result).from_dict(d)
    assert back == result
    assert back.to_dict() == d


def test_verify_result_reads_its_failures_and_latency():
    v = EVERY_SHAPE[-2]
    assert v.failures() == ["latency: p90 0.2 ms"] and v.latency_ms == 0.2
    assert "samples_ms" in v.to_dict() and v.to_dict()["artifact"] == "ort-cpu/model.onnx"


def test_resume_reads_the_finished_stages_back_typed():
    state = json.loads(next(p for p in GOLDEN if p.stem == "given-pruned").read_text())
    for stage in ("quantize", "verify", "report"):
        del state["stages"][stage]
    state["stages"]["export"] = {"status": "running", "started": "t", "resumed": False}  # killed in export
    got = finished_results(state)
    assert list(got) == ["select", "distill", "prune"]
    assert isinstance(got["select"], SelectResult) and got["select"].needs_pruning is None
    assert isinstance(got["distill"], DistillResult) and got["distill"].student_cost.params > 0
    pru = got["prune"]
    assert isinstance(pru, PruneStageResult) and pru.checkpoint == "pruned.pt" and pru.search["met"] is True


def test_compress_options_take_their_defaults_from_the_config():
    from click.testing import CliRunner

    from edgekd.cli.compress import compress_cmd
    from edgekd.pipeline import CompressConfig

    text = " ".join(CliRunner().invoke(compress_cmd, ["--help"], terminal_width=400).output.split())
    for name in ("metric", "student", "family", "grid", "loss", "prune", "quantize", "epochs", "seed"):
        opt = next(p for p in compress_cmd.params if p.name == name)
        assert opt.default is None  # so that CompressConfig.make applies its own
        assert f"[default: {CompressConfig.model_fields[name].default}]" in text, name
