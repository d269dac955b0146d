"""compress --quantize int8 --qat: the quantize stage runs QAD and records PTQ and QAD both."""
from __future__ import annotations

from edgekd.pipeline import CompressConfig, ExportResult, QuantizeResult, make_plan
from edgekd.pipeline import stages
from edgekd.pipeline.context import Context

from test_qad import C, RES, make_bundle, toy_teacher


def test_quantize_stage_runs_qad_and_records_both_sides(tiny_assets, tmp_path):
    from edgekd.models import build_model
    from edgekd.models.checkpoint import save_checkpoint

    spec = f"convnet:width=4,depth=1,res={RES}"
    save_checkpoint(tmp_path / "student.pt", build_model(spec, num_classes=C, in_channels=1).eval(),
                    spec=spec, num_classes=C, in_channels=1, input_shape=(1, RES, RES))
    cfg = CompressConfig.make(teacher=str(tiny_assets / "teacher.pt"), data="digits", target="ort-cpu",
                              budget_ms=50.0, student=spec, quantize="int8", qat="always", qat_epochs=1,
                              batch_size=16)
    ctx = Context(tmp_path, cfg, make_plan(cfg), show=False)
    ctx._bundle, ctx._teacher = make_bundle(), toy_teacher()  # the toy task, not digits
    exp = ExportResult(artifact="ort-cpu/model.onnx", extra=(), checkpoint="student.pt",
                       onnx="ort-cpu/model.onnx", format="onnx", target="ort-cpu", sha256="0" * 64,
                       parity={})
    q = stages.quantize_stage(ctx, exp)
    assert q.status in ("kept", "not kept"), q.reason
    rep = q.report
    assert rep["ptq"]["int8"]["accuracy"] is not None and rep["qad"]["int8"]["accuracy"] is not None
    assert rep["ptq"]["int8"]["p50_ms"] > 0 and rep["qad"]["int8"]["p50_ms"] > 0
    assert rep["qad_train"]["epochs"] == 1 and rep["chosen"] in ("ptq", "qad")
    assert rep["qat_reason"] == "--qat always"
    assert QuantizeResult.from_dict(q.to_dict()) == q  # what state.json stores comes back
    assert (tmp_path / "ort-cpu-int8" / "qad" / "checkpoints" / "last.pt").is_file()
    # the stage again (a resumed compress): the finished QAD run is reused, not trained again
    again = stages.quantize_stage(ctx, exp)
    assert again.report["qad_train"]["epochs"] == 1
    assert again.report["qad_train"]["epoch_cpu_s"] == rep["qad_train"]["epoch_cpu_s"]


def test_report_markdown_shows_ptq_and_qad():
    from edgekd.report.markdown import render_markdown

    side = lambda acc, p50: {"int8": {"accuracy": acc, "p50_ms": p50}}  # noqa: E731
    doc = {"verdict": "pass", "quantize": {"status": "kept", "comparison": {
        "ptq": side(0.78, 0.0123), "qad": side(0.80, 0.0121), "chosen": "qad",
        "qat_reason": "PTQ dropped 1.39 points, more than 1.00"}}}
    md = render_markdown(doc)
    assert "PTQ top-1 78.00%, p50 0.0123 ms; QAD top-1 80.00%, p50 0.0121 ms; kept QAD" in md
    assert "kept QAD" not in render_markdown({"verdict": "pass", "quantize": {"status": "kept"}})
