"""The serialized size of a candidate predicted from its parameter count (docs/MEMORY.md
"Memory budgets in select and compress").

    estimate_size_bytes(params, target) -> bytes

size = params x (bytes per parameter of the target's precision + the format's bytes per
parameter of graph description) + the format's fixed overhead (header, names, metadata). The
graph's share grows with the layer count, which tracks the parameter count across a family;
the figures bound what was measured on convnet and mobilenetv2 students of 94 to 162k
parameters (tests/latency/test_select_memory.py measures them again): overheads of 1.0-2.6 /
5.2-14.8 / 3.8-8.3 KB for ONNX / OpenVINO IR (an .xml describing every layer in text, plus the
metadata compress writes) / ExecuTorch .pte. It is an estimate, said as such: verify and gate measure the
artifact itself.
"""
from __future__ import annotations

BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.1}  # int8: + scales, zero points
# runtime: (fixed bytes, graph bytes per parameter)
OVERHEAD = {"onnxruntime": (4096, 0.08), "openvino": (16384, 0.35), "executorch": (8192, 0.06),
            "tensorrt": (256 * 1024, 0.5), "torch": (0, 0.0)}


def estimate_size_bytes(params: int, target) -> int:
    """Predicted bytes of the artifact of a ``params``-parameter model built for ``target``."""
    precision = getattr(getattr(target, "precision", None), "value", "fp32")
    runtime = getattr(getattr(target, "runtime", None), "value", "onnxruntime")
    per = BYTES_PER_PARAM.get(str(precision), 4.0)
    fixed, graph = OVERHEAD.get(str(runtime), (64 * 1024, 0.5))
    return int(round((per + graph) * int(params) + fixed))
