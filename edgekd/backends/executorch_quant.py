"""INT8 for ExecuTorch: XNNPACK's PT2E quantizer, calibrated on the data like every INT8 target.

The module is captured with torch.export, observers are placed where XNNPACK's quantizer says
(symmetric int8, per-channel weights), the calibration batches run through it, and the result
is converted to quantize/dequantize pairs that XNNPACK's partitioner fuses into int8 kernels.
The layer that computes the program's output (a classifier's head) stays float
(_output_layers): XNNPACK's quantizer would also quantize its output, and int8 logits tie where
two classes are closer than one step (on a narrow RGB student 17% of the validation images tied
and top-1 fell 3.0 points); XNNPACK only fuses an int8 layer whose output is int8 too, so the head
runs in fp32 on its dequantized input (a classifier head is a small part of the work).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from ..errors import BadInputError
from .calib import check_calibration, split_to_batch


def quantize_pt2e(module, sample, calib: Sequence[np.ndarray], *, per_channel: bool = True):
    """The quantized model as an ExportedProgram, ready to lower to XNNPACK."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from .executorch_export import capture, first_line

    shape = tuple(sample.shape)
    batches = split_to_batch(check_calibration(calib, shape), shape[0])
    graph = capture(module, sample).module()
    last = _output_layers(graph)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))
    quantizer.set_filter_function(lambda node: node not in last)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_pt2e(graph, quantizer)
            with torch.no_grad():
                for b in batches:
                    prepared(torch.from_numpy(b))
            converted = convert_pt2e(prepared)
            return torch.export.export(converted, (sample,), strict=False)
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the PT2E flow raises many unrelated types
        raise BadInputError(f"XNNPACK's PT2E quantizer cannot quantize the model ({type(exc).__name__}: "
                            f"{first_line(exc)})", hint="keep the model fp32 (target executorch-xnnpack)") from exc


_LAYERS = ("linear", "conv1d", "conv2d", "addmm", "mm", "matmul", "bmm")


def _output_layers(gm) -> set:
    """The layers whose results are the program's outputs, found walking back from each output
    through the ops that only reshape or pass a tensor on (view, flatten, ...)."""
    found = set()
    out = next(n for n in gm.graph.nodes if n.op == "output")
    for node in out.all_input_nodes:
        for _ in range(8):
            if node.op != "call_function":
                break
            if getattr(node.target, "__name__", "").split(".")[0] in _LAYERS:
                found.add(node)
                break
            inputs = node.all_input_nodes
            if len(inputs) != 1:
                break
            node = inputs[0]
    return found
