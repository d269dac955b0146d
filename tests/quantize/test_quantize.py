"""INT8 quantizers on a tiny conv model, the slower-INT8 guard, and the CLI's bad inputs."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from edgekd.errors import BadInputError, RuntimeMissingError, VerdictError


def tiny_conv_onnx(path, *, batch=None, c=1, hw=8, classes=4, seed=0, depthwise=False):
    """Conv-ReLU-Conv-ReLU-GAP-Gemm with fixed random weights, built directly as ONNX."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {"w1": rng.standard_normal((8, c, 3, 3)) * 0.5, "b1": rng.standard_normal(8) * 0.1,
               "w2": rng.standard_normal((16, 8, 3, 3)) * 0.2, "b2": rng.standard_normal(16) * 0.1,
               "w3": rng.standard_normal((classes, 16)) * 0.5, "b3": rng.standard_normal(classes) * 0.1}
    if depthwise:
        weights["wd"], weights["bd"] = rng.standard_normal((8, 1, 3, 3)) * 0.5, rng.standard_normal(8) * 0.1
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1" if not depthwise else "r0"])]
    if depthwise:
        nodes += [helper.make_node("Conv", ["r0", "wd", "bd"], ["cd"], pads=[1, 1, 1, 1], group=8),
                  helper.make_node("Relu", ["cd"], ["r1"])]
    nodes += [helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1)]
    n = batch if batch else "N"
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, hw, hw])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def calib_batches(n_batches=4, bs=8, c=1, hw=8, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((bs, c, hw, hw)).astype(np.float32) for _ in range(n_batches)]


def ort_logits(path, x):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if s.get_inputs()[0].shape[0] == 1:
        return np.concatenate([s.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    return s.run(None, {"x": x})[0]


@pytest.fixture
def model(tmp_path):
    return tiny_conv_onnx(tmp_path / "tiny.onnx")


@pytest.fixture
def x_val():
    return np.random.default_rng(7).standard_normal((64, 1, 8, 8)).astype(np.float32)


# ----------------------------------------------------------------------------- ONNX Runtime

@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_ort_static_qdq_is_quantized_and_agrees_with_fp32(tmp_path, model, x_val, method):
    from edgekd.backends.onnxruntime_quant import count_qdq_nodes, quantize_onnx_static

    out = quantize_onnx_static(model, tmp_path / "q" / "tiny.int8.onnx", calib_batches(), method=method)
    assert out.is_file()
    counts = count_qdq_nodes(out)
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > 0
    assert count_qdq_nodes(model) == {"QuantizeLinear": 0, "DequantizeLinear": 0}
    agree = (ort_logits(model, x_val).argmax(1) == ort_logits(out, x_val).argmax(1)).mean()
    assert agree >= 0.9
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_ort_int8_keeps_the_logits_float_so_close_classes_do_not_tie(tmp_path):
    """The quantizer would also quantize the graph's output: 256 levels over the logits' range,
    so two logits closer than a step come out equal and argmax takes the lower index. The output
    stays float, computed by the last layer's integer kernel."""
    import onnx
    import onnxruntime as ort

    from edgekd.backends.onnxruntime_quant import quantize_onnx_static

    src = tiny_conv_onnx(tmp_path / "wide.onnx", classes=40, seed=3)
    m = onnx.load(str(src))
    for t in m.graph.initializer:  # logits about 40 wide: a uint8 step of ~0.15
        if t.name == "w3":
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t) * 8, "w3"))
    onnx.save(m, str(src))
    out = quantize_onnx_static(src, tmp_path / "q" / "wide.int8.onnx", calib_batches(n_batches=8))
    q = onnx.load(str(out))
    producer = {o: n.op_type for n in q.graph.node for o in n.output}
    assert producer["logits"] == "Gemm"  # fed by DequantizeLinear inputs, float out
    assert any(n.op_type == "DequantizeLinear" and n.output[0] in
               [i for g in q.graph.node if g.op_type == "Gemm" for i in g.input] for n in q.graph.node)
    x = np.random.default_rng(11).standard_normal((400, 1, 8, 8)).astype(np.float32)
    y = ort_logits(out, x)
    top2 = np.sort(y, axis=1)[:, -2:]
    assert not (top2[:, 0] == top2[:, 1]).any()
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    ran = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "QGemm" in ran and "DequantizeLinear" not in ran  # integer last layer, no output rounding


def test_ort_weights_per_channel_int8_and_activation_type(tmp_path, model):
    import onnx

    from edgekd.backends.onnxruntime_quant import quantize_onnx_static

    out = quantize_onnx_static(model, tmp_path / "q.onnx", calib_batches(), activation_type="uint8")
    m = onnx.load(str(out))
    inits = {t.name: t for t in m.graph.initializer}
    conv_w_dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and inits[n.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[n.input[0]].dims) == 4]
    assert conv_w_dq, "conv weights are stored as int8"
    assert any(len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1 for n in conv_w_dq)  # per channel
    q_act = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert all(inits[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in q_act)


def test_ort_fixed_batch_model_takes_larger_calibration_batches(tmp_path, x_val):
    from edgekd.backends.onnxruntime_quant import count_qdq_nodes, quantize_onnx_static

    fixed = tiny_conv_onnx(tmp_path / "b1.onnx", batch=1)
    out = quantize_onnx_static(fixed, tmp_path / "b1.int8.onnx", calib_batches(2, 5))
    assert count_qdq_nodes(out)["QuantizeLinear"] > 0
    assert (ort_logits(fixed, x_val).argmax(1) == ort_logits(out, x_val).argmax(1)).mean() >= 0.9


def test_tensorrt_qdq_is_symmetric_int8(tmp_path, model):
    import onnx
    from onnx import numpy_helper

    from edgekd.backends.onnxruntime_quant import quantize_for_tensorrt

    out = quantize_for_tensorrt(model, tmp_path / "trt.qdq.onnx", calib_batches(), method="minmax")
    m = onnx.load(str(out))
    inits = {t.name: t for t in m.graph.initializer}
    q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert q
    for n in q:
        zp = inits[n.input[2]]
        assert zp.data_type == onnx.TensorProto.INT8
        assert not numpy_helper.to_array(zp).any()  # zero point 0: what TensorRT accepts


def test_calibration_errors_name_the_shapes(tmp_path, model):
    from edgekd.backends.onnxruntime_quant import quantize_onnx_static

    with pytest.raises(BadInputError, match="empty"):
        quantize_onnx_static(model, tmp_path / "q.onnx", [])
    with pytest.raises(BadInputError, match=r"\(8, 3, 8, 8\).*\(\?, 1, 8, 8\)"):
        quantize_onnx_static(model, tmp_path / "q.onnx", calib_batches(c=3))
    with pytest.raises(BadInputError, match="unknown calibration method"):
        quantize_onnx_static(model, tmp_path / "q.onnx", calib_batches(), method="mse")
    assert not (tmp_path / "q.onnx").exists()


# ----------------------------------------------------------------------------- OpenVINO / NNCF

def ov_top1(path, x):
    import openvino as ov

    cm = ov.Core().compile_model(str(path), "CPU")
    return np.array([np.argmax(cm(x[i:i + 1])[cm.outputs[0]]) for i in range(len(x))])


@pytest.mark.openvino
def test_openvino_nncf_inserts_fake_quantize_and_agrees(tmp_path, x_val):
    from edgekd.backends.openvino_quant import count_fake_quantize, quantize_openvino

    fixed = tiny_conv_onnx(tmp_path / "b1.onnx", batch=1)
    xml = quantize_openvino(fixed, tmp_path / "ov" / "tiny.int8.xml", calib_batches(), subset_size=32)
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert count_fake_quantize(xml) > 0
    assert (ov_top1(fixed, x_val) == ov_top1(xml, x_val)).mean() >= 0.9


@pytest.mark.openvino
def test_openvino_depthwise_weights_are_folded_to_int8(tmp_path):
    """Grouped-conv weights must reach the CPU plugin as int8 constants, not a FakeQuantize,
    or every depthwise conv runs in f32 (the ONNX file is read with convert_model for this)."""
    import openvino as ov

    from edgekd.backends.openvino_quant import quantize_openvino

    m = tiny_conv_onnx(tmp_path / "dw.onnx", batch=1, depthwise=True)
    xml = quantize_openvino(m, tmp_path / "dw.int8.xml", calib_batches(), subset_size=32)
    model = ov.Core().read_model(str(xml))
    groups = [op for op in model.get_ops() if op.get_type_name() == "GroupConvolution"]
    assert groups
    for op in groups:
        node = op.input(1).get_source_output().get_node()
        seen = []
        while node.get_type_name() != "Constant":
            seen.append(node.get_type_name())
            node = node.input(0).get_source_output().get_node()
        assert "FakeQuantize" not in seen and str(node.get_element_type()) in ("<Type: 'int8_t'>", "i8")


@pytest.mark.openvino
def test_openvino_accuracy_control_meets_max_drop(tmp_path, x_val):
    from edgekd.backends.openvino_quant import count_fake_quantize, quantize_openvino

    fixed = tiny_conv_onnx(tmp_path / "b1.onnx", batch=1)
    y = ov_top1(fixed, x_val)  # labels = fp32 predictions: fp32 accuracy is 1.0
    xml = quantize_openvino(fixed, tmp_path / "acc.xml", calib_batches(), max_drop=0.05,
                            val_data=(x_val, y))
    assert count_fake_quantize(xml) > 0
    assert (ov_top1(xml, x_val) == y).mean() >= 0.95


def _input_range(xml):
    """max(|low|, |high|) of the FakeQuantize that reads the model's input."""
    import openvino as ov

    for op in ov.Core().read_model(str(xml)).get_ops():
        if op.get_type_name() == "FakeQuantize" and \
                op.input(0).get_source_output().get_node().get_type_name() == "Parameter":
            lo, hi = (op.input(i).get_source_output().get_node().get_data() for i in (1, 2))
            return float(max(np.abs(lo).max(), np.abs(hi).max()))
    raise AssertionError(f"no FakeQuantize on the input of {xml}")


@pytest.mark.openvino
def test_openvino_minmax_ranges_do_not_depend_on_the_export_batch(tmp_path):
    """minmax (the default) reads the calibration set's extremes, the same from a batch-1 export
    fed one sample at a time as from a dynamic-batch export fed whole batches. NNCF's own
    mean-minmax averages the extremes of each item it is fed, so on the batch-1 export it reads
    the mean of per-sample extremes, a range narrower than the data (and it clips)."""
    from edgekd.backends.openvino_quant import quantize_openvino

    calib = calib_batches(n_batches=4, bs=16)
    top = float(np.abs(np.concatenate(calib)).max())
    per_sample = float(np.mean([np.abs(s).max() for b in calib for s in b]))
    got = {}
    for batch in (1, None):
        m = tiny_conv_onnx(tmp_path / f"b{batch}.onnx", batch=batch)
        for ranges in ("minmax", "mean-minmax"):
            xml = quantize_openvino(m, tmp_path / f"{batch}-{ranges}" / "q.xml", calib, ranges=ranges)
            got[batch, ranges] = _input_range(xml)
    assert got[1, "minmax"] == pytest.approx(top, rel=0.02)
    assert got[None, "minmax"] == pytest.approx(got[1, "minmax"], rel=1e-3)
    assert got[1, "mean-minmax"] == pytest.approx(per_sample, rel=0.05) and per_sample < 0.9 * top


@pytest.mark.openvino
def test_openvino_unknown_ranges_are_refused(tmp_path, model):
    from edgekd.backends.openvino_quant import quantize_openvino

    with pytest.raises(BadInputError, match="minmax or mean-minmax, not 'entropy'"):
        quantize_openvino(model, tmp_path / "x.xml", calib_batches(), ranges="entropy")


@pytest.mark.openvino
def test_openvino_bad_preset(tmp_path, model):
    from edgekd.backends.openvino_quant import quantize_openvino

    with pytest.raises(BadInputError, match="preset"):
        quantize_openvino(model, tmp_path / "x.xml", calib_batches(), preset="fast")


# ----------------------------------------------------------------------------- front door + guard

def test_front_door_rejects_non_int8_target_and_names_int8_ones(tmp_path, model):
    from edgekd.quantize import quantize_for_target

    with pytest.raises(BadInputError, match="ort-cpu-int8"):
        quantize_for_target(model, "ort-cpu", tmp_path, calib_batches())


def test_front_door_onnxruntime_artifact(tmp_path, model):
    from edgekd.quantize import quantize_for_target

    art = quantize_for_target(model, "ort-cpu-int8", tmp_path / "out", calib_batches())
    assert art.format == "onnx" and art.precision == "int8" and art.path.is_file()
    assert art.meta["calib_samples"] == 32 and art.meta["format"] == "QDQ"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_tensorrt_target_without_tensorrt_is_runtime_missing():
    from edgekd.quantize import check_runtime
    from edgekd.targets import load_target

    with pytest.raises(RuntimeMissingError, match="tensorrt"):
        check_runtime(load_target("tensorrt-int8"), evaluate=True)


class _OrtSession:
    """Stands in for the backend's Session: ORT on the artifact's ONNX file."""

    def __init__(self, path, tag):
        import onnxruntime as ort

        self.s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_names = [self.s.get_inputs()[0].name]
        self.input_shapes = [self.s.get_inputs()[0].shape]
        self.input_dtypes = [np.float32]
        self.tag = tag

    def run(self, x):
        return self.s.run(None, {self.input_names[0]: x})


@pytest.fixture
def fake_runtime(monkeypatch):
    """Backends replaced by plain ORT sessions; latency replaced by scripted samples."""
    from edgekd.backends.base import Artifact
    from edgekd.latency.measure import Measurement
    from edgekd.latency.stats import LatencyStats
    from edgekd.quantize import evaluate

    speeds = {"fp32": 1.0, "int8": 0.5}

    monkeypatch.setattr(evaluate, "build_fp32", lambda onnx, twin, out: Artifact.from_file(onnx, "onnx"))
    monkeypatch.setattr(evaluate, "load_session",
                        lambda art, target: _OrtSession(art.path, "int8" if target.is_int8 else "fp32"))

    def fake_measure(session, inputs, settings=None, **kw):
        base = speeds[session.tag]
        samples = base * (1 + 0.01 * np.random.default_rng(0).random(50))
        return Measurement(stats=LatencyStats.from_samples(samples), samples_ms=samples,
                           first_inference_ms=base, warmup_iters=10, warmup_s=0.0)

    monkeypatch.setattr(evaluate, "measure_session", fake_measure)
    monkeypatch.setattr("edgekd.quantize.check_runtime", lambda target, evaluate=True: None)
    return speeds


def test_guard_keeps_faster_int8(tmp_path, model, x_val, fake_runtime):
    from edgekd.quantize import quantize_model

    y = ort_logits(model, x_val).argmax(1)
    rep = quantize_model(model, "ort-cpu-int8", tmp_path / "out", calib_batches(), (x_val, y), rounds=2)
    assert rep.kept and rep.artifact.path.is_file() and rep.artifact.path.parent == tmp_path / "out"
    assert rep.fp32.target == "ort-cpu" and rep.int8.target == "ort-cpu-int8"
    assert rep.speedup_p50 == pytest.approx(2.0, rel=0.02)
    assert rep.fp32.accuracy == 1.0 and rep.int8.accuracy >= 0.9
    assert rep.fp32.stats.n == 100  # two interleaved rounds pooled
    d = json.loads((tmp_path / "out" / "tiny.int8.quant.json").read_text())
    assert d["kept"] is True and d["fp32"]["p50_ms"] > d["int8"]["p50_ms"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_guard_rejects_slower_int8_unless_forced(tmp_path, model, x_val, fake_runtime):
    from edgekd.quantize import quantize_model

    fake_runtime["int8"] = 1.3
    y = ort_logits(model, x_val).argmax(1)
    out = tmp_path / "out"
    with pytest.raises(VerdictError) as info:
        quantize_model(model, "ort-cpu-int8", out, calib_batches(), (x_val, y), rounds=1)
    msg = str(info.value)
    assert "not faster" in msg and "--force" in msg
    assert "1.3" in msg and "1.0" in msg  # both numbers
    assert info.value.exit_code == 1 and info.value.report.kept is False
    assert list(out.iterdir()) == []  # nothing kept

    rep = quantize_model(model, "ort-cpu-int8", out, calib_batches(), (x_val, y), rounds=1, force=True)
    assert rep.kept and rep.forced and rep.artifact.path.is_file()
    assert rep.p50_ratio > 1.0 and any("not faster" in n for n in rep.notes)


def test_guard_accuracy_drop_above_max_drop(tmp_path, model, x_val, fake_runtime, monkeypatch):
    from edgekd.quantize import evaluate, quantize_model

    monkeypatch.setattr(evaluate, "top1_accuracy",
                        lambda session, x, y, batch=1: 0.97 if session.tag == "int8" else 0.99)
    y = np.zeros(len(x_val), dtype=np.int64)
    with pytest.raises(VerdictError, match=r"accuracy dropped 2\.00 points.*--max-drop 0\.01"):
        quantize_model(model, "ort-cpu-int8", tmp_path / "o", calib_batches(), (x_val, y),
                       rounds=1, max_drop=0.01)
    rep = quantize_model(model, "ort-cpu-int8", tmp_path / "o", calib_batches(), (x_val, y),
                         rounds=1, max_drop=0.03)
    assert rep.kept and rep.accuracy_drop == pytest.approx(0.02)


# ----------------------------------------------------------------------------- CLI

def test_cli_non_int8_target_exit_2(run_cli, tmp_path, model):
    r = run_cli("quantize", model, "--target", "ort-cpu", "--data", "digits", "--out", tmp_path / "o")
    assert r.returncode == 2
    assert "not int8" in r.stderr and "ort-cpu-int8" in r.stderr and "openvino-cpu-int8" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_cli_tensorrt_target_exit_4(run_cli, tmp_path, model):
    r = run_cli("quantize", model, "--target", "tensorrt-int8", "--data", "digits", "--out", tmp_path / "o")
    assert r.returncode == 4 and "tensorrt" in r.stderr and "Traceback" not in r.stderr


def test_cli_empty_calibration_exit_2(run_cli, tmp_path):
    model = tiny_conv_onnx(tmp_path / "m.onnx", hw=16, classes=10)
    r = run_cli("quantize", model, "--target", "ort-cpu-int8", "--data", "digits", "--calib-size", "0",
                "--out", tmp_path / "o")
    assert r.returncode == 2 and "calibration set is empty" in r.stderr, r.stderr


def test_cli_wrong_shape_exit_2_names_both_shapes(run_cli, tmp_path):
    model = tiny_conv_onnx(tmp_path / "m3.onnx", c=3, hw=16, classes=10)  # digits are 1-channel
    r = run_cli("quantize", model, "--target", "ort-cpu-int8", "--data", "digits", "--calib-size", "16",
                "--out", tmp_path / "o")
    assert r.returncode == 2, r.stderr
    assert "1, 16, 16" in r.stderr and "3, 16, 16" in r.stderr


@pytest.mark.openvino
@pytest.mark.slow
def test_cli_openvino_json_force_keeps_and_stdout_is_one_json(run_cli, tmp_path):
    model = tiny_conv_onnx(tmp_path / "m.onnx", batch=1, hw=16, classes=10)
    out = tmp_path / "o"
    r = run_cli("quantize", model, "--target", "openvino-cpu-int8", "--data", "digits", "--calib-size", "32",
                "--val-size", "40", "--max-drop", "0.05", "--rounds", "1", "--force", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)  # NNCF's log lines must not land on stdout
    assert d["kept"] is True and d["target"] == "openvino-cpu-int8" and d["fp32"]["target"] == "openvino-cpu"
    assert d["val_samples"] == 40 and d["calib_samples"] == 32
    assert (out / "m.int8.xml").is_file() and (out / "m.int8.bin").is_file()
    assert (out / "m.int8.quant.json").is_file()
