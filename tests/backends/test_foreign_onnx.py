"""ONNX graphs as other projects export them: IR 3 graphs that list their initializers as inputs,
weights held by Constant nodes or built by ConstantOfShape (as in the light model-zoo graphs that
ship with onnx), a Softmax at the end, [N, C, 1, 1] and [N, 1, C] outputs, old opsets. Each must quantize for ort-cpu-int8 and openvino-cpu-int8, bench, and count its weights;
a graph ONNX Runtime cannot quantize is refused in one short line."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from edgekd.errors import BadInputError

C, HW = 5, 8
KINDS = ("inputs", "constant", "shapes", "softmax", "nc11", "n1c")
OPSETS = {"inputs": 13, "constant": 14, "shapes": 13, "softmax": 15, "nc11": 16, "n1c": 17}
# conv 8x3x3x3 + 8, head C x 8 + C
N_WEIGHTS = 8 * 3 * 3 * 3 + 8 + C * 8 + C


def n_weights(kind):
    return N_WEIGHTS + (8 if kind == "shapes" else 0)  # + the ConstantOfShape shift


def foreign_onnx(path, kind, *, opset=13, ir=8, batch=1, bn=False, custom=False):
    """Conv(-BN)-ReLU-GAP then a head shaped by ``kind``:
    inputs   Flatten-Gemm, every initializer also listed as a graph input
    constant Flatten-Gemm, every weight a Constant node (no initializers)
    shapes   Flatten-Gemm, the conv bias and a zero shift after the ReLU built by ConstantOfShape
             from two equal shape tensors listed as inputs: ORT's pre-processing of such an IR 3
             graph shares the two, drops one and leaves it a graph input without a value
    softmax  Flatten-Gemm-Softmax (probabilities out)
    nc11     a 1x1 Conv head on the pooled map: output [N, C, 1, 1]
    n1c      Flatten-Gemm-Reshape: output [N, 1, C]
    An IR version below 4 lists the initializers as inputs whatever the kind (as IR 3 requires)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    w = {"w1": rng.standard_normal((8, 3, 3, 3)) * 0.4, "b1": rng.standard_normal(8) * 0.1,
         "w2": rng.standard_normal((C, 8)) * 0.5, "b2": rng.standard_normal(C) * 0.1}
    if kind == "nc11":
        w["w2"] = w["w2"].reshape(C, 8, 1, 1)
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1")]
    last = "c1"
    if bn:
        w.update(s=np.ones(8) * 1.1, t=np.zeros(8) + 0.05, m=np.zeros(8) + 0.1, v=np.ones(8) * 0.9)
        nodes.append(h.make_node("BatchNormalization", ["c1", "s", "t", "m", "v"], ["bn"], name="bn1"))
        last = "bn"
    nodes.append(h.make_node("Relu", [last], ["r1"], name="relu1"))
    feat = "r1"
    if kind == "shapes":
        del w["b1"]
        for name, fill in (("b1", 0.05), ("shift", 0.0)):
            w[f"{name}__SHAPE"] = np.array([8], np.int64)
            nodes.insert(0, h.make_node("ConstantOfShape", [f"{name}__SHAPE"], [name],
                                        value=nh.from_array(np.array([fill], np.float32)),
                                        name=f"make_{name}"))
        nodes.append(h.make_node("Add", ["r1", "shift"], ["shifted"], name="shift"))
        feat = "shifted"
    if custom:
        nodes.append(h.make_node("Mystery", [feat], ["odd"], name="mystery_block", domain="com.example"))
        feat = "odd"
    nodes.append(h.make_node("GlobalAveragePool", [feat], ["gap"], name="gap"))
    if kind == "nc11":
        nodes.append(h.make_node("Conv", ["gap", "w2", "b2"], ["y"], name="head"))
        out_shape = [batch, C, 1, 1]
    else:
        nodes += [h.make_node("Flatten", ["gap"], ["f"], name="flatten"),
                  h.make_node("Gemm", ["f", "w2", "b2"], ["logits"], transB=1, name="fc")]
        if kind == "softmax":
            nodes.append(h.make_node("Softmax", ["logits"], ["y"], axis=1, name="prob"))
        elif kind == "n1c":
            w["shape"] = np.array([-1, 1, C], np.int64)
            nodes.append(h.make_node("Reshape", ["logits", "shape"], ["y"], name="to_n1c"))
        else:
            nodes[-1].output[0] = "y"
        out_shape = [batch, 1, C] if kind == "n1c" else [batch, C]
    inits = [nh.from_array(v.astype(v.dtype if v.dtype == np.int64 else np.float32), k)
             for k, v in w.items()]
    if kind == "constant":
        nodes = [h.make_node("Constant", [], [t.name], value=t, name=f"const_{t.name}")
                 for t in inits] + nodes
        inits = []
    inputs = [h.make_tensor_value_info("x", T.FLOAT, [batch, 3, HW, HW])]
    if kind in ("inputs", "shapes") or ir < 4:
        inputs += [h.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = h.make_graph(nodes, "foreign", inputs, [h.make_tensor_value_info("y", T.FLOAT, out_shape)],
                         inits)
    opsets = [h.make_opsetid("", opset)] + ([h.make_opsetid("com.example", 1)] if custom else [])
    model = h.make_model(graph, opset_imports=opsets, producer_name="another-project")
    model.ir_version = ir
    if not custom:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _cases():
    return [pytest.param(k, OPSETS[k], ir, id=f"{k}-opset{OPSETS[k]}-ir{ir}")
            for k in KINDS for ir in (3, 8)]


def _calib(n=2, bs=8, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.random((bs, 3, HW, HW)).astype(np.float32) for _ in range(n)]


def _ort(path, x):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


FAST = dict(warmup_s=0.0, warmup_iters=2, min_iters=10, min_time_s=0.0, max_iters=20)


def _quantize_and_compare(tmp_path, path, target):
    from edgekd.quantize import quantize_model
    from edgekd.targets import MeasureSettings

    x = _calib(1, 16, seed=2)[0]
    y = _ort(path, x).reshape(len(x), -1).argmax(1)
    rep = quantize_model(path, target, tmp_path / "out", _calib(), (x, y), rounds=1, force=True,
                         settings=MeasureSettings(**FAST))
    assert rep.kept and rep.int8.accuracy >= 0.75, rep.to_dict()
    return rep


@pytest.mark.parametrize("kind,opset,ir", _cases())
def test_ort_int8_quantizes_foreign_graphs(tmp_path, kind, opset, ir):
    from edgekd.backends.onnxruntime_quant import count_qdq_nodes

    path = foreign_onnx(tmp_path / "m.onnx", kind, opset=opset, ir=ir)
    rep = _quantize_and_compare(tmp_path, path, "ort-cpu-int8")
    assert rep.fp32.params == n_weights(kind)
    counts = count_qdq_nodes(rep.artifact.path)
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > 0


@pytest.mark.openvino
@pytest.mark.parametrize("kind,opset,ir", _cases())
def test_openvino_int8_quantizes_foreign_graphs(tmp_path, kind, opset, ir):
    from edgekd.backends.openvino_quant import count_fake_quantize

    path = foreign_onnx(tmp_path / "m.onnx", kind, opset=opset, ir=ir)
    rep = _quantize_and_compare(tmp_path, path, "openvino-cpu-int8")
    assert count_fake_quantize(rep.artifact.path) > 0


@pytest.mark.parametrize("opset", [7, 9, 11])
def test_ort_int8_below_opset_13_is_per_channel_and_loads(tmp_path, opset):
    """ORT raises such a graph only to opset 11 and writes a per-channel DequantizeLinear axis
    that opset 11 does not have; edgekd converts it to 13 first (BatchNormalization included)."""
    import onnx

    from edgekd.backends.onnxruntime_quant import quantize_onnx_static

    path = foreign_onnx(tmp_path / "m.onnx", "inputs", opset=opset, ir=3, bn=True)
    out = quantize_onnx_static(path, tmp_path / "q.onnx", _calib())
    m = onnx.load(str(out))
    assert any(n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute)
               for n in m.graph.node)
    x = _calib(1, 4, seed=3)[0]
    assert (_ort(out, x).argmax(1) == _ort(path, x).argmax(1)).mean() >= 0.75


def test_ort_int8_survives_preprocessing_that_breaks_the_graph(tmp_path, monkeypatch, caplog):
    """Pre-processing that drops an initializer the graph still lists as an input (or that
    fails) is set aside, and the calibration data is not blamed."""
    import onnx
    from onnxruntime import quantization as q

    from edgekd.backends.onnxruntime_quant import quantize_onnx_static

    def dropping(src, dest, **_):
        m = onnx.load(str(src))
        m.graph.input.append(onnx.helper.make_tensor_value_info("w1", onnx.TensorProto.FLOAT, [8, 3, 3, 3]))
        m.graph.initializer.remove(next(t for t in m.graph.initializer if t.name == "w1"))
        onnx.save(m, str(dest))

    path = foreign_onnx(tmp_path / "m.onnx", "inputs", opset=13, ir=3)
    for fake in (dropping, lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x\n" * 4000))):
        monkeypatch.setattr(q, "quant_pre_process", fake)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgekd"):
            out = quantize_onnx_static(path, tmp_path / "q.onnx", _calib())
        assert out.is_file()
        assert all("\n" not in r.getMessage() and len(r.getMessage()) < 300 for r in caplog.records)
        assert any("pre-processing" in r.getMessage() for r in caplog.records)


def test_graph_ort_cannot_quantize_is_one_short_line(tmp_path, monkeypatch):
    from edgekd.backends.onnxruntime_quant import quantize_onnx_static

    monkeypatch.chdir(tmp_path)  # ORT's shape inference leaves a file in the working directory
    path = foreign_onnx(tmp_path / "m.onnx", "inputs", opset=13, ir=8, custom=True)
    with pytest.raises(BadInputError) as err:
        quantize_onnx_static(path, tmp_path / "q.onnx", _calib())
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 300, msg
    assert "mystery_block" in msg and "Mystery" in msg and "calibration" not in msg
    assert not (tmp_path / "q.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.openvino
def test_graph_openvino_cannot_read_is_one_short_line(tmp_path):
    from edgekd.backends.openvino_quant import quantize_openvino

    path = foreign_onnx(tmp_path / "m.onnx", "inputs", custom=True)
    with pytest.raises(BadInputError) as err:
        quantize_openvino(path, tmp_path / "q.xml", _calib())
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 300 and "Mystery" in msg, msg


def test_wrong_calibration_shape_is_still_named(tmp_path):
    from edgekd.backends.onnxruntime_quant import quantize_onnx_static

    path = foreign_onnx(tmp_path / "m.onnx", "inputs", ir=3)
    with pytest.raises(BadInputError, match=r"\(8, 3, 4, 4\).*\(1, 3, 8, 8\)"):
        quantize_onnx_static(path, tmp_path / "q.onnx", [np.zeros((8, 3, 4, 4), np.float32)])


@pytest.mark.parametrize("kind,opset,ir", _cases())
def test_param_count_includes_constant_weights_and_counts_inputs_once(tmp_path, kind, opset, ir):
    from edgekd.quantize.evaluate import onnx_param_count

    assert onnx_param_count(foreign_onnx(tmp_path / "m.onnx", kind, opset=opset, ir=ir)) == n_weights(kind)


@pytest.mark.parametrize("target", ["ort-cpu", pytest.param("openvino-cpu", marks=pytest.mark.openvino)])
@pytest.mark.parametrize("ir", [3, 8])
def test_open_model_and_bench_read_the_real_input(tmp_path, target, ir):
    from edgekd.backends.calib import onnx_input_info
    from edgekd.deploy import open_model
    from edgekd.latency.bench import bench
    from edgekd.targets import MeasureSettings, load_target

    path = foreign_onnx(tmp_path / "m.onnx", "inputs", opset=13, ir=ir)
    assert onnx_input_info(path) == ("x", (1, 3, HW, HW))
    op = open_model(path, load_target(target), work_dir=tmp_path / "w")
    try:
        assert op.input_shape == (1, 3, HW, HW) and list(op.session.input_names) == ["x"]
        x = _calib(1, 1)[0]
        np.testing.assert_allclose(op.session.run(x)[0], _ort(path, x), atol=1e-4)
    finally:
        op.session.close()
    r = bench(path, load_target(target), settings=MeasureSettings(**FAST))
    assert r.stats.n >= 10


@pytest.mark.parametrize("target", ["ort-cpu", pytest.param("openvino-cpu", marks=pytest.mark.openvino)])
def test_export_parity_and_verify_resolution_read_the_real_input(tmp_path, target):
    from edgekd.deploy import export_ref
    from edgekd.targets import load_target
    from edgekd.verify import _artifact_resolution

    path = foreign_onnx(tmp_path / "m.onnx", "inputs", opset=13, ir=3)
    assert _artifact_resolution(path) == HW
    res = export_ref(str(path), load_target(target), tmp_path / "out")
    assert tuple(res.input_shape) == (1, 3, HW, HW)
    assert res.parity is None if target == "ort-cpu" else res.parity.passed


def _light(name):
    """A model-zoo graph as onnx ships it for its own tests: IR 3, opset 9, every initializer a
    graph input, the weights built by ConstantOfShape at run time."""
    import pathlib

    import onnx

    path = pathlib.Path(onnx.__file__).parent / "backend/test/data/light" / f"light_{name}.onnx"
    if not path.is_file():
        pytest.skip(f"this onnx package does not ship {path.name}")
    return path


@pytest.mark.parametrize("name,params,softmax", [("squeezenet", 1_235_496, True),
                                                  ("shufflenet", 1_420_152, True)])
def test_light_model_zoo_graphs(tmp_path, name, params, softmax, caplog):
    from edgekd.backends.onnxruntime_quant import count_qdq_nodes, quantize_onnx_static
    from edgekd.models.teacher import load_teacher
    from edgekd.quantize.evaluate import onnx_param_count

    path = _light(name)
    assert onnx_param_count(path) == params
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    out = quantize_onnx_static(path, tmp_path / "q.onnx", [x])
    assert count_qdq_nodes(out)["DequantizeLinear"] > 0 and _ort(out, x[:1]).size == 1000
    with caplog.at_level(logging.WARNING, logger="edgekd"):
        t = load_teacher(str(path))
    assert t.num_classes == 1000 and tuple(t(x[:1]).shape) == (1, 1000)
    assert any("probabilit" in r.getMessage() for r in caplog.records) == softmax


def test_artifact_records_the_per_channel_it_made(tmp_path):
    """The artifact's meta says per_channel as the file has it (the per-tensor fallback for old
    opsets can make it differ from what was asked)."""
    from edgekd.backends.onnxruntime_quant import per_channel_weights, quantize_onnx_static
    from edgekd.quantize import quantize_for_target

    path = foreign_onnx(tmp_path / "m.onnx", "inputs", opset=13, ir=8)
    assert per_channel_weights(quantize_onnx_static(path, tmp_path / "pc.onnx", _calib(), per_channel=True))
    assert not per_channel_weights(quantize_onnx_static(path, tmp_path / "pt.onnx", _calib(), per_channel=False))
    art = quantize_for_target(path, "ort-cpu-int8", tmp_path / "a", _calib(), per_channel=False)
    assert art.meta["per_channel"] is False
