"""Quantization-aware distillation traces hf- students: transformers' MobileNetV2 pads by its
input's size (TensorFlow's "SAME"), its ResNet stem checks the channel count in Python, and its
MobileViT cuts maps into patches by their size and unpacks shapes in its attention, all of which
torch.fx cannot trace; the student is traced with those fixed for its resolution."""
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


def _prepared(m, tmp_path, res: int):
    """``m`` BatchNorm-folded, exported, quantized by ONNX Runtime's static QDQ quantizer on a
    random calibration batch and prepared for QAD on that graph: (gm, calib, qdq, prepared)."""
    from edgekd.backends.onnxruntime_quant import quantize_onnx_static
    from edgekd.export import export_onnx
    from edgekd.quantize.qad import prepare_qat

    gm = fold_batchnorm(m)
    calib = torch.randn(16, 3, res, res).numpy()
    fp32 = export_onnx(gm, torch.from_numpy(calib[:1]), tmp_path / "s.onnx", dynamic_batch=True)
    qdq = quantize_onnx_static(fp32, tmp_path / "s.int8.onnx", [calib])
    return gm, calib, qdq, prepare_qat(gm, qdq, calib)


@pytest.mark.parametrize("spec", ["hf-mobilenetv2:width=0.35,res=33",
                                  "hf-resnet:width=8,depths=1-1,res=40",
                                  # 72 px: the last maps are 9x9 and 5x5, resized to whole patches
                                  "hf-mobilevit:size=xxs,res=72",
                                  "hf-efficientnet:width=0.25,depth=0.25,res=32"])
def test_hf_students_trace_for_qad_and_compute_the_same(spec):
    m = _student(spec)
    classes = sorted({type(x).__name__ for x in m.modules()})
    gm = fold_batchnorm(m)
    for batch in (1, 4):  # the batch stays free
        x = torch.randn(batch, *m.trace_input_shape)
        with torch.no_grad():
            np.testing.assert_allclose(gm(x).numpy(), m(x).numpy(), rtol=1e-4, atol=1e-4)
    assert sorted({type(x).__name__ for x in m.modules()}) == classes  # the student is not changed


def test_hf_mobilenetv2_fake_quant_placement_matches_its_int8_graph(tmp_path):
    from edgekd.export import check_parity
    from edgekd.quantize.qad_torch import FakeQuantAct

    _, calib, qdq, prep = _prepared(_student("hf-mobilenetv2:width=0.35,res=32"), tmp_path, 32)
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


def test_repeated_fake_quantizers_after_reshapes_are_dropped_without_changing_a_value(tmp_path):
    """ONNX Runtime quantizes a Reshape's or Transpose's output again with its input's scale;
    those repeats are dropped from the trained model (a quarter of MobileViT's quantizers), and
    the outputs and gradients are those of the model with every one of them."""
    import copy

    from edgekd.quantize.qad_torch import FakeQuantAct, insert_fake_quant, split_matmul_bias

    gm, calib, _, prep = _prepared(_student("hf-mobilevit:size=xxs,res=32"), tmp_path, 32)
    acts = {prep.placement.acts[a.tensor]: (a.scale, a.zero_point, a.qmin, a.qmax)
            for a in prep.plan.acts}
    full = insert_fake_quant(split_matmul_bias(copy.deepcopy(gm), torch.from_numpy(calib[:2])),
                             acts, set(prep.placement.weights.values()))
    for p in full.parameters():
        p.requires_grad_(True)
    count = lambda g: sum(isinstance(q, FakeQuantAct) for q in g.modules())  # noqa: E731
    assert count(full) == len(acts) and count(prep.model) < 0.85 * len(acts)
    x = torch.randn(4, 3, 32, 32)
    outs = []
    for model in (full, prep.model):
        model.eval()
        model.zero_grad()
        y = model(x)
        (y * torch.arange(y.shape[1])).sum().backward()
        outs.append((y.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                  if p.grad is not None}))
    assert torch.equal(outs[0][0], outs[1][0])
    assert outs[1][1] and outs[1][1].keys() <= outs[0][1].keys()  # full trains every parameter
    assert all(torch.allclose(outs[0][1][k], outs[1][1][k], atol=1e-6) for k in outs[1][1])


def test_hf_mobilevit_fake_quant_placement_matches_its_int8_graph_and_trains_what_it_writes(tmp_path):
    """Every tensor the INT8 graph quantizes has its fake quantizer (SiLU's Sigmoid output
    included: the student's SiLU is written out as the Sigmoid and Mul it exports to; a
    transformer Linear's MatMul output, its bias added in a node of its own), a bias
    the exporter aliased to another constant is not taken for an activation, and only the
    parameters the export writes back (quantized weights, their int32 biases) train: a
    LayerNorm's and a bias added after a MatMul keep their values."""
    from edgekd.export import check_parity
    from edgekd.quantize.qad_torch import FakeQuantAct

    m = _student("hf-mobilevit:size=xxs,res=32")
    with torch.no_grad():  # trained biases: a Linear's output is not its MatMul's
        for lin in m.modules():
            if isinstance(lin, torch.nn.Linear) and not lin.out_features == 5:
                lin.bias.normal_(0, 0.3)
    gm, calib, qdq, prep = _prepared(m, tmp_path, 32)
    ops = {getattr(n.target, "__name__", str(n.target)) for n in gm.graph.nodes}
    assert "sigmoid" in ops and "silu" not in ops
    assert not [a.tensor for a in prep.plan.acts if a.tensor.endswith(".bias")]
    assert any("Sigmoid" in a.tensor for a in prep.plan.acts)
    assert any(a.tensor.endswith("MatMul_output_0") for a in prep.plan.acts)  # before the bias
    assert len([q for q in prep.model.modules() if isinstance(q, FakeQuantAct)]) > 100
    trained = {n for n, p in prep.model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in prep.model.named_parameters() if not p.requires_grad}
    assert any("attention.attention.query.weight" in n for n in trained)
    assert any("layernorm" in n for n in frozen) and not any("layernorm" in n for n in trained)
    assert any(n.endswith("query.bias") for n in frozen)  # an Add after the MatMul, not written
    assert all(n.endswith(".weight") or n.endswith(".bias") for n in trained)
    par = check_parity(prep.model, qdq, torch.from_numpy(calib), check_values=False, raise_on_fail=False)
    assert par.cosine > 0.95
