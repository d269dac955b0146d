"""INT8 for TensorRT: an explicitly quantized (QDQ) ONNX model, made by the ONNX Runtime quantizer.

TensorRT's explicit-quantization path reads QuantizeLinear/DequantizeLinear pairs from the ONNX
graph and picks INT8 kernels where they sit. It only takes symmetric INT8 (zero point 0), so
activations here are signed QInt8 with symmetric ranges, weights QInt8 symmetric per output
channel. Nothing in this module needs TensorRT or a GPU: it writes the QDQ ONNX file only.
Turning that file into an engine (with the INT8 builder flag set) is the tensorrt backend's
build() job; calibration happened here, so the engine build needs no calibrator.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from .ort import quantize_onnx_static


def quantize_for_tensorrt(onnx_path: "str | Path", out_path: "str | Path",
                          calib: "Iterable[np.ndarray]", *, method: str = "entropy",
                          per_channel: bool = True) -> Path:
    """The QDQ ONNX model TensorRT consumes (symmetric int8 activations and weights).

    ``method`` defaults to entropy calibration, TensorRT's own default for activations.
    """
    return quantize_onnx_static(onnx_path, out_path, calib, method=method, per_channel=per_channel,
                                activation_type="int8", symmetric_activations=True)
