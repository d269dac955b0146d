"""Quantization-aware distillation traces hf- students: transformers' MobileNetV2 pads by its
input's size (TensorFlow's "SAME") and its ResNet stem checks the channel count in Python, both
of which torch.fx cannot trace; the student is traced with those fixed for its resolution."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgekd.errors import BadInputError  # noqa: E402
from edgekd.models import build_model  # noqa: E402
from edgekd.quantize.qad_torch import fold_batchnorm  # noqa: E402


def _student(spec):
    torch.manual_seed(0)
    m = build_model(spec, num_classes=5, in_channels=3)
    m.train()
    with torch.no_grad():  # running statistics that are not the identity, so folding shows
        for _ in range(2):
            m(torch.randn(8, *m.trace_input_shape))
    return m.eval()


@pytest.mark.parametrize("spec", ["hf-mobilenetv2:width=0.35,res=33",
                                  "hf-resnet:width=8,depths=1-1,res=40"])
def test_hf_students_trace_for_qad_and_compute_the_same(spec):
    m = _student(spec)
    classes = sorted({type(x).__name__ for x in m.modules()})
    gm = fold_batchnorm(m)
    x = torch.randn(4, *m.trace_input_shape)
    with torch.no_grad():
        np.testing.assert_allclose(gm(x).numpy(), m(x).numpy(), rtol=1e-4, atol=1e-4)
    assert sorted({type(x).__name__ for x in m.modules()}) == classes  # the student is not changed


def test_hf_mobilenetv2_fake_quant_placement_matches_its_int8_graph(tmp_path):
    from edgekd.backends.onnxruntime_quant import quantize_onnx_static
    from edgekd.export import check_parity, export_onnx
    from edgekd.quantize.qad import prepare_qat
    from edgekd.quantize.qad_torch import FakeQuantAct

    m = _student("hf-mobilenetv2:width=0.35,res=32")
    gm = fold_batchnorm(m)
    calib = torch.randn(16, 3, 32, 32).numpy()
    fp32 = export_onnx(gm, torch.from_numpy(calib[:1]), tmp_path / "s.onnx", dynamic_batch=True)
    qdq = quantize_onnx_static(fp32, tmp_path / "s.int8.onnx", [calib])
    prep = prepare_qat(gm, qdq, calib)
    # every quantized tensor has its place; the exporter's no-op Pads (zero padding of 1x1
    # convolutions) share their input's node and its scale, so they share its fake quantizer
    placed: dict[str, set] = {}
    for a in prep.plan.acts:
        placed.setdefault(prep.placement.acts[a.tensor], set()).add((round(a.scale, 9), a.zero_point))
    assert all(len(v) == 1 for v in placed.values())
    assert len([q for q in prep.model.modules() if isinstance(q, FakeQuantAct)]) == len(placed)
    assert len(placed) > 40 and len(prep.plan.weights) > 30  # the whole network, not its head
    par = check_parity(prep.model, qdq, torch.from_numpy(calib), check_values=False, raise_on_fail=False)
    assert par.cosine > 0.95


def test_an_hf_student_fx_cannot_trace_still_names_its_layer():
    m = build_model("hf-mobilevit:size=xxs,res=64", num_classes=3, in_channels=3).eval()
    with pytest.raises(BadInputError, match=r"layer 'model\.mobilevit\.encoder") as e:
        fold_batchnorm(m)
    assert "\n" not in str(e.value)
