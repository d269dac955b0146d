"""ONNX Runtime's quantization pre-processing (shape inference and graph optimisation before
static quantization) is kept for graphs its symbolic shape inference cannot read: a MobileViT
export, whose patch reshapes take the batch from the input's shape. Without it the INT8 graph
keeps every unfolded shape computation and runs markedly slower (BENCHMARKS.md, MobileViT)."""
from __future__ import annotations

import logging

import pytest

pytest.importorskip("transformers")

import onnx  # noqa: E402
import torch  # noqa: E402

from edgekd.backends.onnxruntime_quant import quantize_onnx_static  # noqa: E402
from edgekd.export import export_onnx  # noqa: E402
from edgekd.models import build_model  # noqa: E402


def test_a_graph_ort_symbolic_shape_inference_rejects_is_still_pre_processed(tmp_path, caplog,
                                                                             monkeypatch):
    from onnxruntime.quantization import quant_pre_process

    monkeypatch.chdir(tmp_path)  # where ORT leaves its half-done model when it gives up
    torch.manual_seed(0)
    m = build_model("hf-mobilevit:size=xxs,res=32", num_classes=4, in_channels=3).eval()
    fp32 = export_onnx(m, torch.randn(1, 3, 32, 32), tmp_path / "s.onnx", dynamic_batch=True)
    with pytest.raises(Exception):  # the premise: ORT's symbolic shape inference gives up here
        quant_pre_process(str(fp32), str(tmp_path / "pre.onnx"), skip_symbolic_shape=False)
    calib = [torch.randn(4, 3, 32, 32).numpy()]
    with caplog.at_level(logging.WARNING):
        out = quantize_onnx_static(fp32, tmp_path / "s.int8.onnx", calib)
        plain = quantize_onnx_static(fp32, tmp_path / "plain.int8.onnx", calib, preprocess=False)
    assert not [r for r in caplog.records
                if r.name.startswith("edgekd") and "pre-processing" in r.getMessage()]
    # pre-processing folded the exporter's constant shape arithmetic: a smaller INT8 graph
    assert len(onnx.load(str(out)).graph.node) < 0.95 * len(onnx.load(str(plain)).graph.node)
