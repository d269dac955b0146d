"""The ONNX side of quantization-aware distillation: read where a QDQ INT8 graph quantizes, map
that onto the traced student, and write the fine-tuned weights back into the same graph.

    read_plan(qdq_path)            -> QdqPlan: quantized activations (tensor, scale, zero point)
                                      and quantized weights/biases (initializer, consumer)
    match(plan, gm, x)             -> Placement: activation tensor -> fx node, weight -> module
    trained_parameters(plan, placement)
                                   -> the student parameters write_weights writes back (the
                                      only ones QAD trains)
    write_weights(plan, placement, qgm, src, dst)
                                   -> the same graph (same nodes, same names, same scales for
                                      activations), with the student's weights re-quantized
    quantized_ops(path)            -> sorted op types that read a DequantizeLinear output

The placement is read from the graph the target's real quantizer wrote (ONNX Runtime's static
QDQ quantizer), so the fake quantizers sit exactly where the INT8 graph quantizes and the export
changes no node: only weight, weight-scale and bias initializers get new values.

Matching is by value, not by name (exporters and quantizers rename tensors): the QDQ graph with
every quantize/dequantize pair replaced by the clamp it implies is run on a calibration batch;
the student gets the graph's dequantized weights; each quantized tensor is the student node whose
output equals it (the earliest one when an Identity repeats it).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInputError

_RANGE = {2: (0, 255), 3: (-128, 127)}  # TensorProto UINT8, INT8


@dataclass
class ActPoint:
    tensor: str
    scale: float
    zero_point: int
    qmin: int
    qmax: int


@dataclass
class WeightPoint:
    init: str           # the int8 initializer
    scale: str          # its scale initializer
    consumer: str       # the Conv/Gemm/MatMul node's name (or output)
    op: str
    transposed: bool    # MatMul / Gemm transB=0: stored (in, out)
    act_scale: str = ""  # the scale of the consumer's input activation
    bias: str = ""       # the int32 bias initializer, when quantized
    bias_scale: str = ""


@dataclass
class QdqPlan:
    acts: list[ActPoint] = field(default_factory=list)
    weights: list[WeightPoint] = field(default_factory=list)


@dataclass
class Placement:
    acts: dict[str, str]     # ONNX tensor -> fx node name
    weights: dict[str, str]  # int8 initializer -> module path


def _load(path):
    import onnx

    return onnx.load(str(path))


def _inits(model) -> dict:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def read_plan(qdq_path: "str | Path") -> QdqPlan:
    """What a QDQ graph quantizes: activations (QuantizeLinear inputs) and the weights and biases
    stored quantized (DequantizeLinear of an initializer) of Conv, Gemm and MatMul."""
    from onnx import helper

    model = _load(qdq_path)
    g = model.graph
    inits = _inits(model)
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    plan = QdqPlan()
    seen = set()

    def constant(name: str) -> bool:
        """An initializer, or computed from initializers alone by a Constant, Identity or
        (de)quantize node (exporters alias equal parameters through an Identity, and the
        quantizer may have stored the aliased one quantized): not an activation."""
        while name not in inits:
            src = producer.get(name)
            if src is None or src.op_type not in ("Constant", "Identity", "DequantizeLinear",
                                                  "QuantizeLinear"):
                return False
            if src.op_type == "Constant":
                return True
            if not all(constant(i) for i in src.input[1:] if i):
                return False
            name = src.input[0]
        return True

    for n in g.node:
        if (n.op_type == "QuantizeLinear" and n.input[0] not in seen
                and not constant(n.input[0])):
            seen.add(n.input[0])
            zp = g.initializer[[t.name for t in g.initializer].index(n.input[2])]
            qmin, qmax = _RANGE.get(zp.data_type, (0, 255))
            plan.acts.append(ActPoint(n.input[0], float(inits[n.input[1]].reshape(-1)[0]),
                                      int(inits[n.input[2]].reshape(-1)[0]), qmin, qmax))
    for n in g.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in inits:
            continue
        for c in consumers.get(n.output[0], []):
            if c.op_type not in ("Conv", "Gemm", "MatMul") or list(c.input).index(n.output[0]) != 1:
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in c.attribute}
            wp = WeightPoint(init=n.input[0], scale=n.input[1], consumer=c.name or c.output[0],
                             op=c.op_type, transposed=c.op_type == "MatMul" or (
                                 c.op_type == "Gemm" and not attrs.get("transB", 0)))
            src = producer.get(c.input[0])
            if src is not None and src.op_type == "DequantizeLinear":
                wp.act_scale = src.input[1]
            if len(c.input) > 2 and c.input[2]:
                b = producer.get(c.input[2])
                if b is not None and b.op_type == "DequantizeLinear" and b.input[0] in inits:
                    wp.bias, wp.bias_scale = b.input[0], b.input[1]
            plan.weights.append(wp)
    if not plan.acts or not plan.weights:
        raise BadInputError(f"{Path(qdq_path).name} holds no QDQ-quantized weights to fine-tune",
                            hint="quantize with an onnxruntime or tensorrt int8 target first")
    return plan


def trained_parameters(plan: QdqPlan, placement: Placement) -> set[str]:
    """The student parameters (``module.weight``/``module.bias``) whose fine-tuned values
    :func:`write_weights` writes into the graph: the quantized weights, and their biases where
    the graph stores them quantized. QAD trains these and holds every other parameter (a
    LayerNorm's, a bias the graph adds after a MatMul) at its PTQ value, so that what was
    trained is what is exported."""
    names = set()
    for wp in plan.weights:
        path = placement.weights[wp.init]
        names.add(f"{path}.weight")
        if wp.bias and wp.act_scale:
            names.add(f"{path}.bias")
    return names


def dequantize(q: np.ndarray, scale: np.ndarray, zp: "np.ndarray | None", axis: int = 1) -> np.ndarray:
    q = q.astype(np.float64)
    s = np.asarray(scale, np.float64)
    z = np.zeros_like(s) if zp is None else np.asarray(zp, np.float64)
    if s.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    return ((q - z) * s).astype(np.float32)


def float_view(qdq_path: "str | Path"):
    """The QDQ graph with each activation quantize/dequantize pair replaced by a Clip to its
    range where that starts at 0 (the quantizer folds Relu and Clip into such ranges), else by
    nothing,
    and each quantized initializer dequantized; the quantized activations are graph outputs.
    An ONNX ModelProto, meant to run on calibration data (within every calibrated range)."""
    from onnx import TensorProto, helper, numpy_helper

    model = copy.deepcopy(_load(qdq_path))
    g = model.graph
    inits = _inits(model)
    by_out = {o: n for n in g.node for o in n.output}
    keep, extra_inits = [], []
    for n in g.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            s = float(inits[n.input[1]].reshape(-1)[0])
            z = int(inits[n.input[2]].reshape(-1)[0])
            lo, hi = _RANGE.get(g.initializer[[t.name for t in g.initializer].index(
                n.input[2])].data_type, (0, 255))
            if z == lo:  # a range starting at exactly 0: a Relu/Clip the quantizer removed
                bounds = [n.output[0] + "_lo", n.output[0] + "_hi"]
                extra_inits += [numpy_helper.from_array(np.array(0.0, np.float32), bounds[0]),
                                numpy_helper.from_array(np.array((hi - z) * s, np.float32), bounds[1])]
                keep.append(helper.make_node("Clip", [n.input[0], *bounds], [n.output[0]]))
            else:  # other ranges cover the calibration data: nothing to clamp on it
                keep.append(helper.make_node("Identity", [n.input[0]], [n.output[0]]))
        elif n.op_type == "DequantizeLinear":
            src = by_out.get(n.input[0])
            if src is not None and src.op_type == "QuantizeLinear":
                keep.append(helper.make_node("Identity", [n.input[0]], [n.output[0]]))
            elif n.input[0] in inits:
                axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
                zp = inits.get(n.input[2]) if len(n.input) > 2 else None
                extra_inits.append(numpy_helper.from_array(
                    dequantize(inits[n.input[0]], inits[n.input[1]], zp, axis), n.output[0]))
            else:
                keep.append(n)
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(extra_inits)
    names = {o.name for o in g.output} | {i.name for i in g.input}
    for n in read_plan(qdq_path).acts:
        if n.tensor not in names:
            g.output.append(helper.make_tensor_value_info(n.tensor, TensorProto.FLOAT, None))
    return model


def _run_view(model, x: np.ndarray, wanted: list[str]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), sess_options=so,
                             providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0].name
    outs = [o.name for o in s.get_outputs()]
    vals = dict(zip(outs, s.run(outs, {inp: x})))
    vals[inp] = x
    return {k: vals[k] for k in wanted if k in vals}


def match(plan: QdqPlan, qdq_path: "str | Path", gm, x: np.ndarray, *, tol: float = 0.05) -> Placement:
    """Map the plan onto the traced student ``gm`` (BatchNorm folded) on the batch ``x``: each
    quantized weight to the Conv/Linear holding it, each quantized tensor to the fx node whose
    output it is. A tensor or weight with no match is one line naming it."""
    import torch

    from .qad_torch import node_outputs, weight_modules

    model = _load(qdq_path)
    inits = _inits(model)
    dq_of = {n.input[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    probe = copy.deepcopy(gm)
    mods = weight_modules(probe)
    weights: dict[str, str] = {}
    for wp in plan.weights:
        n = dq_of[wp.init]
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        zp = inits.get(n.input[2]) if len(n.input) > 2 else None
        w = dequantize(inits[wp.init], inits[wp.scale], zp, axis)
        w = w.T if wp.transposed else w
        best, err = None, np.inf
        for path, m in mods.items():
            if path in weights.values() or tuple(m.weight.shape) != w.shape:
                continue
            e = float(np.abs(m.weight.detach().numpy() - w).max())
            if e < err:
                best, err = path, e
        bound = float(np.max(inits[wp.scale])) * 0.51 + 1e-6
        if best is None or err > bound:
            raise BadInputError(f"cannot find the student layer whose weights the INT8 graph "
                                f"quantizes at node '{wp.consumer}' ({wp.op})",
                                hint="use --qat off (post-training INT8 only)")
        weights[wp.init] = best
        m = mods[best]
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(w))
            if wp.bias and m.bias is not None:
                b = dequantize(inits[wp.bias], inits[wp.bias_scale], None, 0)
                m.bias.copy_(torch.from_numpy(b.reshape(m.bias.shape)))
    view = float_view(qdq_path)
    onnx_vals = _run_view(view, x, [a.tensor for a in plan.acts])
    torch_vals = node_outputs(probe, torch.from_numpy(x))
    order = {n.name: i for i, n in enumerate(probe.graph.nodes)}
    acts: dict[str, str] = {}
    for a in plan.acts:
        ref = onnx_vals.get(a.tensor)
        if ref is None:
            raise BadInputError(f"the INT8 graph quantizes tensor '{a.tensor}', which it does "
                                "not compute", hint="use --qat off (post-training INT8 only)")
        scale = float(np.abs(ref).max()) + 1e-6
        errs = {k: float(np.abs(v.numpy() - ref).max()) / scale for k, v in torch_vals.items()
                if tuple(v.shape) == ref.shape}
        best = min(errs.values(), default=np.inf)
        if best > tol:
            raise BadInputError(f"cannot find the student layer that computes tensor '{a.tensor}' "
                                f"the INT8 graph quantizes (closest differs by {best:.2g} of its "
                                "range)", hint="use --qat off (post-training INT8 only)")
        # an Identity repeats its input: the earliest of equal tensors reaches every user
        acts[a.tensor] = min((order[k], k) for k, e in errs.items() if e <= best * 1.01 + 1e-7)[1]
    return Placement(acts=acts, weights=weights)


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8 (the fake quantizer's own rule): (q, scale)."""
    flat = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float32)
    scale = np.maximum(flat, 1e-12) / np.float32(127)
    q = np.clip(np.round(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127)
    return q.astype(np.int8), scale.astype(np.float32)


def write_weights(plan: QdqPlan, placement: Placement, qgm, src: "str | Path", dst: "str | Path") -> Path:
    """``src`` with each quantized weight (and its bias) replaced by the fine-tuned student's,
    written atomically at ``dst``. Nodes, names and activation scales stay as they are."""
    import onnx
    from onnx import numpy_helper

    from ..util_io import atomic_path

    model = _load(src)
    g = model.graph
    by_name = {t.name: t for t in g.initializer}
    mods = dict(qgm.named_modules())
    inits = _inits(model)
    for wp in plan.weights:
        m = mods[placement.weights[wp.init]]
        w = m.weight.detach().cpu().numpy().astype(np.float32)
        q, s = quantize_weight(w)
        if wp.transposed:
            q = q.T.copy()
        old_s = inits[wp.scale]
        if old_s.size != s.size:
            raise BadInputError(f"the INT8 graph quantizes the weights of node '{wp.consumer}' per "
                                "tensor; fine-tuning keeps per-channel weight scales",
                                hint="quantize per channel (opset 13 or newer), or use --qat off")
        s_out = s.reshape(old_s.shape)
        by_name[wp.init].CopyFrom(numpy_helper.from_array(q, wp.init))
        by_name[wp.scale].CopyFrom(numpy_helper.from_array(s_out.astype(old_s.dtype), wp.scale))
        if wp.bias and m.bias is not None and wp.act_scale:
            s_in = np.float64(inits[wp.act_scale].reshape(-1)[0])
            bs = (s_in * np.asarray(s_out, np.float64).reshape(-1)).astype(np.float32)
            bs = np.broadcast_to(bs, (m.bias.shape[0],)) if bs.size == 1 else bs
            b = m.bias.detach().cpu().numpy().astype(np.float64)
            bq = np.clip(np.round(b / bs), -2**31, 2**31 - 1).astype(np.int32)
            old_bs = inits[wp.bias_scale]
            by_name[wp.bias].CopyFrom(numpy_helper.from_array(bq.reshape(inits[wp.bias].shape), wp.bias))
            by_name[wp.bias_scale].CopyFrom(numpy_helper.from_array(
                np.asarray(bs, old_bs.dtype).reshape(old_bs.shape) if old_bs.size == bs.size
                else np.asarray(bs[:1], old_bs.dtype).reshape(old_bs.shape), wp.bias_scale))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))
    return dst


def quantized_ops(path: "str | Path") -> list[str]:
    """The op types (with repeats, sorted) that read a DequantizeLinear output: what runs INT8."""
    g = _load(path).graph
    dq = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    return sorted(n.op_type for n in g.node
                  if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and dq & set(n.input))


def structure(path: "str | Path") -> list[tuple]:
    """Each node's (op type, inputs, outputs) in order: what must not change between PTQ and
    QAD exports (initializer values may)."""
    g = _load(path).graph
    return [(n.op_type, tuple(n.input), tuple(n.output)) for n in g.node]
