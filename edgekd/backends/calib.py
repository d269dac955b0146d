"""Calibration data: checked once, then cut to the batch size the model declares.

Every quantizer takes ``calib`` as a list (or any iterable) of numpy arrays, each one batch
shaped (N, *sample_shape). Checks here raise BadInputError naming both shapes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import BadInputError


def onnx_input_info(onnx_path: "str | Path") -> tuple[str, tuple]:
    """(name, shape) of the model's first real input; a dynamic dimension is None."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise BadInputError(f"{onnx_path} has no graph input", hint="export the model with an input")
    first = inputs[0]
    dims = []
    for d in first.type.tensor_type.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None)
    return first.name, tuple(dims)


def _fmt(shape: Sequence) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def check_calibration(calib: "Iterable[np.ndarray] | None", model_shape: tuple, *,
                      what: str = "calibration data") -> list[np.ndarray]:
    """Materialise ``calib`` as float32 batches and check them against the model's input shape.

    ``model_shape`` is the model's declared input shape including the batch dimension (None for
    a dynamic dimension). A single sample without the batch dimension is accepted and given one.
    """
    if calib is None:
        raise BadInputError(f"{what} is empty", hint="pass at least one batch of inputs")
    if isinstance(calib, np.ndarray):
        calib = [calib]
    batches: list[np.ndarray] = []
    for i, b in enumerate(calib):
        arr = np.asarray(_to_numpy(b))
        if arr.size == 0:
            continue
        if model_shape and arr.ndim == len(model_shape) - 1:
            arr = arr[None]
        _check_shape(arr.shape, model_shape, what=f"{what} batch {i}")
        batches.append(np.ascontiguousarray(arr, dtype=np.float32))
    if not batches:
        raise BadInputError(f"{what} is empty (0 samples)",
                            hint="give a data spec with samples, or raise --calib-size")
    return batches


def _check_shape(got: tuple, model_shape: tuple, *, what: str) -> None:
    if not model_shape:
        return
    ok = len(got) == len(model_shape) and all(
        m is None or m == g for i, (m, g) in enumerate(zip(model_shape, got)) if i > 0)
    if not ok:
        raise BadInputError(
            f"{what} has shape {_fmt(got)} but the model expects {_fmt(model_shape)}",
            hint="give data at the model's input resolution and channels (N, C, H, W)")


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        return x.detach().cpu().numpy()
    return np.asarray(x)


def split_to_batch(batches: Sequence[np.ndarray], batch_dim: "int | None") -> list[np.ndarray]:
    """Cut batches to a static batch size (a model exported with batch 1 takes one sample)."""
    if batch_dim is None:
        return list(batches)
    out = []
    for b in batches:
        for start in range(0, len(b) - batch_dim + 1, batch_dim):
            out.append(b[start:start + batch_dim])
    if not out:
        raise BadInputError(f"calibration batches are smaller than the model's fixed batch {batch_dim}",
                            hint="give at least that many calibration samples")
    return out


def count_samples(batches: Sequence[np.ndarray]) -> int:
    return int(sum(len(b) for b in batches))
