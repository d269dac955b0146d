"""An ONNX teacher: a classifier graph from any framework, run with onnxruntime on the CPU.

``open_onnx(path)`` gives what a Teacher needs (run, num_classes, input_shape, fixed_batch).
The output is read as [N, classes] logits: [N, C], [N, C, 1, 1] (a pooled head without a flatten)
and [N, 1, C] are all taken as [N, C]. A graph that outputs probabilities (its output comes from a
Softmax, through reshapes at most, or a probe batch gives rows in [0, 1] that sum to 1) has its
output turned into log-probabilities, logits of the same distribution (softmax(log p) = p), with
one warning that says so. Graphs whose initializers are also listed as inputs (IR < 4) are fine:
onnxruntime does not count those as inputs.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, missing_package

log = logging.getLogger(__name__)

# Ops that only move values around: a Softmax before them still makes the output probabilities.
_SHAPE_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose")
_TOL = 1e-3  # how far a row of probabilities may sum from 1


def ort_errors() -> tuple:
    from onnxruntime.capi import onnxruntime_pybind11_state as s

    names = ("Fail", "InvalidArgument", "InvalidProtobuf", "InvalidGraph", "NoSuchFile",
             "RuntimeException", "NotImplemented", "EPFail")
    return tuple(c for c in (getattr(s, n, None) for n in names) if isinstance(c, type)) + (
        RuntimeError, ValueError)


def ends_in_softmax(path: "str | Path", output: str) -> bool:
    """True when the graph's ``output`` is a Softmax's, through shape-only ops at most."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - onnxruntime loaded it; the probe still decides
        return False
    producer = {o: n for n in graph.node for o in n.output}
    node = producer.get(output)
    while node is not None and node.op_type in _SHAPE_OPS and node.input:
        node = producer.get(node.input[0])
    return node is not None and node.op_type == "Softmax"


def as_rows(out: np.ndarray) -> np.ndarray:
    """[N, C, 1, 1] and [N, 1, C] as [N, C]; any other shape as it is."""
    if out.ndim > 2 and sum(int(d) != 1 for d in out.shape[1:]) <= 1:
        return out.reshape(out.shape[0], -1)
    return out


def classes_of(dims: list) -> int | None:
    """The class count an output shape declares: its one non-1 dimension after the batch."""
    rest = list(dims[1:])
    if not rest or not all(isinstance(d, int) and d > 0 for d in rest):
        return None
    big = [d for d in rest if d != 1]
    return None if len(big) > 1 else (big[0] if big else 1)


def are_probabilities(out: np.ndarray) -> bool:
    """Rows of values in [0, 1] that each sum to 1 (within _TOL)."""
    if out.ndim != 2 or out.shape[1] < 2 or out.size == 0 or not np.isfinite(out).all():
        return False
    return bool(out.min() >= -1e-6 and out.max() <= 1 + 1e-6
                and np.all(np.abs(out.sum(axis=1) - 1.0) <= _TOL))


def open_onnx(path: Path) -> dict[str, Any]:
    """run, num_classes, input_shape and fixed_batch of an ONNX teacher (see the module doc)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise missing_package("onnxruntime", what="an ONNX teacher") from exc
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
    except ort_errors() as exc:
        raise BadInputError(f"teacher '{path}' is not a model edgekd can load (not a torch "
                            f"checkpoint, TorchScript, .pt2, and onnxruntime says: "
                            f"{str(exc).splitlines()[0][:200]})",
                            hint="pass a checkpoint, TorchScript, .pt2 or .onnx file") from exc
    inputs, output = sess.get_inputs(), sess.get_outputs()[0]
    if len(inputs) != 1:
        raise BadInputError(f"ONNX teacher '{path}' has {len(inputs)} inputs, not one image "
                            f"batch", hint="export a model whose forward takes one tensor")
    dims, name = list(inputs[0].shape), inputs[0].name
    fixed = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None
    input_shape = tuple(dims[1:]) if all(isinstance(d, int) for d in dims[1:]) else None
    np_type = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
    state: dict[str, Any] = {"probs": None}

    def settle(out: np.ndarray, why: str) -> None:
        if state["probs"] is None:
            state["probs"] = why == "softmax" or are_probabilities(out)
            if state["probs"]:
                log.warning("ONNX teacher %s outputs probabilities (%s), not logits: edgekd "
                            "takes their log as its logits", path.name,
                            "its graph ends in a Softmax" if why == "softmax"
                            else "rows in [0, 1] that sum to 1 on a probe batch")

    def raw(arr: np.ndarray) -> np.ndarray:
        try:
            out = sess.run([output.name], {name: arr.astype(np_type, copy=False)})[0]
        except ort_errors() as exc:
            raise RuntimeError(str(exc).strip().splitlines()[0][:300]) from exc
        return as_rows(np.asarray(out, dtype=np.float32))

    if ends_in_softmax(path, output.name):
        settle(np.empty(0), "softmax")
    num_classes = classes_of(list(output.shape))
    if input_shape is not None and all(d > 0 for d in input_shape):
        probe = np.random.default_rng(0).standard_normal((fixed or 2, *input_shape))
        try:
            out = raw(probe)
            settle(out, "probe")
            if num_classes is None and out.ndim == 2:
                num_classes = int(out.shape[1])
        except RuntimeError:  # check_teacher_matches says what is wrong on real data
            pass

    def run(x):
        import torch

        out = raw(x.detach().cpu().numpy())
        settle(out, "probe")  # the first batch decides when no probe could run at load
        if state["probs"]:
            out = np.log(np.maximum(out, np.finfo(np.float32).tiny))
        return torch.from_numpy(out)

    return {"run": run, "num_classes": num_classes, "input_shape": input_shape,
            "fixed_batch": fixed}
