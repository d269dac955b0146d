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
"""
from __future__ import annotations

import contextlib
import logging
import platform
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import BadInputError, missing_package
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
    optimisation, as ONNX Runtime recommends) when ``preprocess`` is true.
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
        pre = Path(scratch) / "preprocessed.onnx"
        model_in = src
        if preprocess:
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    q.quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
                model_in = pre
            except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation only
                log.warning("quantization pre-processing skipped for %s: %s", src, exc)
        try:
            # ORT prints calibration progress with print(); keep stdout clean for --json.
            with contextlib.redirect_stdout(sys.stderr):
                q.quantize_static(
                    str(model_in), str(tmp), _Reader(name, batches), quant_format=q.QuantFormat.QDQ,
                    per_channel=per_channel, reduce_range=False,
                    activation_type=q.QuantType.QUInt8 if act == "uint8" else q.QuantType.QInt8,
                    weight_type=q.QuantType.QInt8, calibrate_method=calibrate, extra_options=extra)
        except (ValueError, RuntimeError) as exc:
            raise BadInputError(f"ONNX Runtime could not quantize {src}: {exc}",
                                hint="check that the calibration data matches the model input") from exc
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
