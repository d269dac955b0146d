"""Static QDQ INT8 quantization with ONNX Runtime (onnxruntime.quantization), for the
onnxruntime targets and, symmetric, for TensorRT.

Choices:
- Format QDQ: ONNX Runtime's CPU kernels fuse DequantizeLinear -> op -> QuantizeLinear into
  integer kernels, and the same graph is what TensorRT consumes.
- Weights: signed QInt8, symmetric, per output channel (per_channel=True): conv filters vary a lot
  across channels and per-channel scales keep small channels from collapsing to zero.
- Activations on x86 CPUs: unsigned QUInt8 (asymmetric). ONNX Runtime's x86 integer GEMM/conv
  kernels are u8 x s8 (the VNNI instruction VPDPBUSD multiplies unsigned by signed bytes), so
  uint8 activations with int8 weights run on the fast path, and post-ReLU activations are all
  non-negative so asymmetric uint8 keeps the full 256 levels. reduce_range stays off: on CPUs
  without VNNI it avoids 16-bit saturation, but it costs a bit of weight precision.
- Activations on ARM CPUs and for TensorRT: signed QInt8, symmetric (ORT's own guidance; TensorRT
  only takes symmetric int8 with zero point 0).

Graphs exported by other projects are made ready first (_ready): weights held by Constant nodes
become initializers (the quantizer only quantizes initializers as weights), initializers also
listed as graph inputs (IR < 4 style) are taken off the inputs, and a graph below opset 13 is
converted to 13, the first opset whose DequantizeLinear takes the per-channel axis (ORT itself
only raises such a graph to 11 and then writes an invalid model). ORT's pre-processing is kept only
when it leaves the graph's inputs and outputs as they were and quantizing its result works;
otherwise the ready graph is quantized as it is, and last (per-channel only) per tensor at the
graph's own opset. A graph ORT still cannot quantize is one line naming the node that stopped it.

The graph's outputs stay float (_float_outputs): the quantizer also quantizes a model's output, a
classifier's logits, to 256 levels over their calibrated range, and logits closer than one step
then come out equal, so top-1 falls to the lower class index. On a narrow RGB student (logits
52 wide, a step of 0.21) 16% of the validation images tied and top-1 fell 2.3 points, 1.7 of them
from the ties alone. Without that last QuantizeLinear/DequantizeLinear pair ONNX Runtime runs the
last layer as the same integer kernel with a float output (QGemm, one DequantizeLinear fewer),
as OpenVINO's NNCF and TensorRT leave a network's output unquantized.
"""
from __future__ import annotations

import contextlib
import logging
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import BadInputError, EdgeKDError, missing_package
from ..util_io import atomic_path
from .calib import check_calibration, onnx_input_info, split_to_batch

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")


def default_activation_type(for_tensorrt: bool = False) -> str:
    """'uint8' on x86 CPUs, 'int8' on ARM and for TensorRT (see the module docstring)."""
    if for_tensorrt:
        return "int8"
    machine = platform.machine().lower()
    return "int8" if machine.startswith(("arm", "aarch64")) else "uint8"


def _import_ort_quant():
    try:
        from onnxruntime import quantization as q
    except ImportError as exc:
        raise missing_package("onnxruntime", what="INT8 quantization for ONNX Runtime") from exc
    return q


class _Reader:
    """A CalibrationDataReader over in-memory batches (ORT only needs get_next)."""

    def __init__(self, name: str, batches: list[np.ndarray]):
        self.name, self.batches, self.i = name, batches, 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.name: self.batches[self.i - 1]}

    def rewind(self):
        self.i = 0


def quantize_onnx_static(onnx_path: "str | Path", out_path: "str | Path",
                         calib: "Iterable[np.ndarray]", *, method: str = "minmax",
                         per_channel: bool = True, input_name: str | None = None,
                         activation_type: str | None = None, symmetric_activations: bool = False,
                         preprocess: bool = True) -> Path:
    """Quantize ``onnx_path`` to a static QDQ INT8 model written atomically at ``out_path``.

    ``calib``: numpy batches (N, C, H, W) for the model's input. ``method``: minmax, entropy or
    percentile (99.999th) calibration. ``activation_type``: 'uint8' or 'int8' (default: see
    default_activation_type). The model is pre-processed first (shape inference and graph
    optimisation, as ONNX Runtime recommends) when ``preprocess`` is true and that keeps the
    graph's inputs and outputs; see the module docstring for graphs from other projects.
    """
    q = _import_ort_quant()
    src = Path(onnx_path)
    if not src.is_file():
        raise BadInputError(f"ONNX model {src} does not exist", hint="check the path")
    if method not in METHODS:
        raise BadInputError(f"unknown calibration method '{method}'; known: {', '.join(METHODS)}")
    act = activation_type or default_activation_type()
    if act not in ("uint8", "int8"):
        raise BadInputError(f"activation type '{act}' must be 'uint8' or 'int8'")
    name, shape = onnx_input_info(src)
    name = input_name or name
    batches = split_to_batch(check_calibration(calib, shape), shape[0] if shape else None)

    calibrate = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                 "percentile": q.CalibrationMethod.Percentile}[method]
    extra = {"ActivationSymmetric": bool(symmetric_activations or act == "int8"),
             "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgekd-quant-", dir=out.parent) as scratch, \
            atomic_path(out, suffix=".onnx") as tmp:
        attempts = _attempts(q, src, Path(scratch), per_channel, preprocess)
        failure = None
        for model_in, channels, how in attempts:
            try:
                # ORT prints calibration progress with print(); keep stdout clean for --json.
                with contextlib.redirect_stdout(sys.stderr):
                    q.quantize_static(
                        str(model_in), str(tmp), _Reader(name, batches),
                        quant_format=q.QuantFormat.QDQ, per_channel=channels, reduce_range=False,
                        activation_type=q.QuantType.QUInt8 if act == "uint8" else q.QuantType.QInt8,
                        weight_type=q.QuantType.QInt8, calibrate_method=calibrate,
                        extra_options=extra)
                _float_outputs(tmp)
                _check_loads(tmp)
            except EdgeKDError:
                raise
            except Exception as exc:  # noqa: BLE001 - the quantizer raises many unrelated types
                failure = exc
                log.info("quantizing %s %s failed: %s", src.name, how, _first_line(exc))
                continue
            if how != attempts[0][2]:
                log.warning("quantized %s %s (%s failed)", src.name, how, attempts[0][2])
            return out
        raise _cannot_quantize(src, failure)


# --------------------------------------------------------------------------- foreign graphs

def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0]
    line = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", line)
    line = re.sub(r"Load model from \S+ failed:\s*", "", line)
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _culprit(src: Path, text: str) -> str:
    """' at node NAME (OpType)' for the node an ORT message names (by node name, output name
    or op type, in that order), or ''."""
    import onnx

    m = re.search(r'Node[^(]*\(\s*"?([^",)]*)"?\s*,\s*([A-Za-z0-9_.]+)', text)
    if m and m.group(2):
        return f" at node '{m.group(1)[:60]}' ({m.group(2)})"
    try:
        nodes = list(onnx.load(str(src), load_external_data=False).graph.node)
    except Exception:  # noqa: BLE001 - the message says enough without it
        return ""
    text = re.sub(r"\S*[/\\]\S*", " ", text)  # paths hold random scratch names

    def says(word: str) -> bool:
        return bool(word) and re.search(rf"(?<![\w.]){re.escape(word)}(?![\w])", text) is not None

    tests = (lambda n: says(n.name),
             lambda n: n.op_type != "Constant" and any(
                 f"'{o}'" in text or f'"{o}"' in text for o in n.output if o),
             lambda n: says(n.op_type))
    for test in tests:
        n = next((n for n in nodes if test(n)), None)
        if n is not None:
            return f" at node '{(n.name or n.output[0])[:60]}' ({n.op_type})"
    return ""


def _cannot_quantize(src: Path, exc: "BaseException | None") -> BadInputError:
    text = str(exc) if exc is not None else ""
    return BadInputError(f"ONNX Runtime cannot quantize {src.name}{_culprit(src, text)}: "
                         f"{_first_line(exc) if exc is not None else 'no attempt ran'}",
                         hint="keep the model fp32, or try another int8 target")


def _check_loads(path: Path) -> None:
    """The quantizer can write a graph ORT refuses (a DequantizeLinear axis below opset 13)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _float_outputs(path: Path) -> int:
    """Take the QuantizeLinear -> DequantizeLinear pair off each graph output of the model at
    ``path`` (rewritten in place when one is found; see the module docstring); how many."""
    import collections

    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    uses = collections.Counter(i for n in g.node for i in n.input)
    outputs = [o.name for o in g.output]
    done = 0
    for name in outputs:
        dq = producer.get(name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or uses[q.output[0]] != 1:
            continue
        src = q.input[0]
        g.node.remove(dq)
        g.node.remove(q)
        uses[src] -= 1
        owner = producer.get(src)
        if owner is not None and uses[src] == 0 and src not in outputs:
            owner.output[list(owner.output).index(src)] = name  # the float tensor is the output
        else:
            g.node.append(helper.make_node("Identity", [src], [name], name=f"{name}_float"))
        done += 1
    if done:
        used = {i for n in g.node for i in n.input}
        for t in [t for t in g.initializer if t.name not in used]:
            g.initializer.remove(t)
        onnx.save_model(model, str(path))
    return done


def _real_io(model) -> tuple[list[str], list[str]]:
    inits = {t.name for t in model.graph.initializer}
    return ([i.name for i in model.graph.input if i.name not in inits],
            [o.name for o in model.graph.output])


def _ready(model) -> bool:
    """Constant-node weights to initializers, initializers off the graph inputs (in place);
    True when anything changed."""
    from onnx import helper

    g = model.graph
    outputs = {o.name for o in g.output}
    hoist = [n for n in g.node if n.op_type == "Constant" and len(n.output) == 1 and
             n.output[0] not in outputs and [a.name for a in n.attribute] == ["value"]]
    for n in hoist:
        t = helper.get_attribute_value(n.attribute[0])
        t.name = n.output[0]
        g.initializer.append(t)
        g.node.remove(n)
    inits = {t.name for t in g.initializer}
    listed = [i for i in g.input if i.name in inits]
    for i in listed:
        g.input.remove(i)
    if hoist or listed:
        model.ir_version = max(model.ir_version, 4,
                               helper.find_min_ir_version_for(model.opset_import, ignore_unknown=True))
    return bool(hoist or listed)


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _save(model, path: Path) -> Path:
    import onnx

    big = model.ByteSize() > 1_800_000_000  # protobuf's 2 GB limit
    onnx.save_model(model, str(path), save_as_external_data=big, location=path.name + ".data")
    return path


@contextlib.contextmanager
def _no_stray_files():
    """ORT's symbolic shape inference saves its half-done model as sym_shape_infer_temp.onnx (and
    its external data) in the working directory when it gives up; remove what it left there."""
    stray = Path.cwd() / "sym_shape_infer_temp.onnx"
    existed = stray.exists()
    try:
        yield
    finally:
        if not existed and stray.is_file():
            import onnx
            from onnx.external_data_helper import ExternalDataInfo, uses_external_data

            with contextlib.suppress(Exception):
                m = onnx.load(str(stray), load_external_data=False)
                for t in m.graph.initializer:
                    if uses_external_data(t):
                        (stray.parent / ExternalDataInfo(t).location).unlink(missing_ok=True)
            stray.unlink(missing_ok=True)


def _attempts(q, src: Path, scratch: Path, per_channel: bool, preprocess: bool) -> list:
    """(model file, per_channel, how) to try in order: pre-processed, without pre-processing,
    per tensor at the graph's own opset."""
    import onnx

    try:
        model = onnx.load(str(src))
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types for bad files
        raise BadInputError(f"cannot read ONNX model {src.name}: {_first_line(exc)}") from exc
    io = _real_io(model)
    base = _save(model, scratch / "ready.onnx") if _ready(model) else src
    opset = _opset(model)
    out = [(base, per_channel, "without pre-processing")]
    if per_channel and 0 < opset < 13:
        per_tensor = (base, False, f"per tensor at opset {opset}")
        try:
            up = onnx.version_converter.convert_version(model, 13)
            up.ir_version = max(up.ir_version, 7)
            out = [(_save(up, scratch / "opset13.onnx"), True, "at opset 13"), per_tensor]
        except Exception as exc:  # noqa: BLE001 - the converter has no adapter for some ops
            log.warning("%s is opset %d and cannot be converted to 13 (%s); quantizing per tensor",
                        src.name, opset, _first_line(exc, 100))
            out = [per_tensor]
    if preprocess:
        pre = scratch / "preprocessed.onnx"
        try:
            with contextlib.redirect_stdout(sys.stderr), _no_stray_files():
                try:
                    q.quant_pre_process(str(out[0][0]), str(pre), skip_symbolic_shape=False)
                except Exception:  # noqa: BLE001 - ORT's symbolic shape inference asserts on
                    # e.g. a Reshape whose shape is computed from the batch (MobileViT's patches);
                    # ONNX's own shape inference and the graph optimisation still apply
                    q.quant_pre_process(str(out[0][0]), str(pre), skip_symbolic_shape=True)
            if _real_io(onnx.load(str(pre), load_external_data=False)) == io:
                out.insert(0, (pre, out[0][1], "pre-processed"))
            else:  # e.g. initializers dropped that the graph still lists as inputs
                log.warning("quantization pre-processing changed the inputs or outputs of %s; "
                            "quantizing without it", src.name)
        except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation only
            log.warning("quantization pre-processing skipped for %s: %s", src.name, _first_line(exc))
    return out


def count_qdq_nodes(onnx_path: "str | Path") -> dict[str, int]:
    """How many QuantizeLinear / DequantizeLinear nodes a model holds (0 in an fp32 model)."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0}
    for n in m.graph.node:
        if n.op_type in counts:
            counts[n.op_type] += 1
    return counts


def quantize_for_tensorrt(onnx_path: "str | Path", out_path: "str | Path",
                          calib: "Iterable[np.ndarray]", *, method: str = "entropy",
                          per_channel: bool = True) -> Path:
    """The QDQ ONNX model TensorRT's explicit quantization consumes: TensorRT reads the
    QuantizeLinear/DequantizeLinear pairs and picks INT8 kernels where they sit, and it only
    takes symmetric INT8 (zero point 0): signed QInt8 symmetric activations, QInt8 symmetric
    per-channel weights. ``method`` defaults to entropy, TensorRT's own default for activations.
    Nothing here needs TensorRT or a GPU."""
    return quantize_onnx_static(onnx_path, out_path, calib, method=method, per_channel=per_channel,
                                activation_type="int8", symmetric_activations=True)


def per_channel_weights(onnx_path: "str | Path") -> bool:
    """True when a quantized model's weights carry per-channel scales (a scale vector on some
    DequantizeLinear), False when every scale is one number: what was actually made, which the
    per-tensor fallback for old opsets can make differ from what was asked."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    scales = {t.name: t for t in m.graph.initializer}
    return any(n.op_type == "DequantizeLinear" and len(n.input) > 1 and n.input[1] in scales
               and sum(scales[n.input[1]].dims) > 1 for n in m.graph.node)
