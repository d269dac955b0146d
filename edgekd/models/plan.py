"""Block signatures: the units a runtime executes, described without torch.

A student model is a list of blocks, each described by a plain dict (its *signature*) that is
self-contained: from the dict alone the block can be rebuilt (``build_block``) and measured in
isolation, and its MACs and parameter count are known. The ``key`` string identifies a block
by everything that decides its latency (kind, channels, kernel, stride, expansion, input size,
activation), so the same key in two models means the same computation; a latency predictor
sums per-key latencies.

MACs count multiply-accumulates of convolutions (``Cout * Cin/groups * k * k * Hout * Wout``)
and linear layers (``in * out``); batch norm, activations, residual additions and pooling are
not counted. Parameters are trainable parameters (conv and linear weights, linear bias, batch
norm weight and bias; running statistics are buffers, not parameters).

Block kinds built in:

``conv``  conv k×k (padding k//2, no bias) + BatchNorm + activation (relu, relu6 or none)
``ir``    MobileNetV2 inverted residual: 1×1 expand (omitted when expansion is 1) + BN + ReLU6,
          k×k depthwise + BN + ReLU6, 1×1 project + BN; identity shortcut when stride is 1 and
          input and output channels match
``basic`` ResNet basic block: 3×3 conv + BN + ReLU, 3×3 conv + BN, shortcut (1×1 conv + BN when
          the stride or the channels change), ReLU after the sum
``head``  global average pool + flatten + Linear (with bias) to the classes
"""
from __future__ import annotations

from typing import Any

ACTIVATIONS = ("relu", "relu6", "none")
BUILTIN_KINDS = ("conv", "ir", "basic", "head")


def out_size(size: int, kernel: int, stride: int) -> int:
    """Output size of a convolution with padding kernel//2 (what every built-in block uses)."""
    pad = kernel // 2
    return (size + 2 * pad - kernel) // stride + 1


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, not below ``min_value`` (default
    ``divisor``) and not more than 10% below ``value`` (the usual MobileNet channel rule)."""
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _sig(kind: str, key_fields: dict[str, Any], in_shape: tuple[int, int, int],
         out_shape: tuple[int, ...], macs: int, params: int, **extra: Any) -> dict[str, Any]:
    key = kind + ":" + ",".join(f"{k}={v}" for k, v in key_fields.items())
    sig: dict[str, Any] = {"kind": kind, "key": key, **key_fields,
                           "in_shape": tuple(in_shape), "out_shape": tuple(out_shape),
                           "macs": int(macs), "params": int(params)}
    sig.update(extra)
    return sig


def _hw(h: int, w: int) -> str:
    return f"{h}x{w}"


def conv_sig(cin: int, cout: int, h: int, w: int, *, kernel: int = 3, stride: int = 1,
             act: str = "relu") -> dict[str, Any]:
    if act not in ACTIVATIONS:
        raise ValueError(f"activation '{act}' is not one of {', '.join(ACTIVATIONS)}")
    ho, wo = out_size(h, kernel, stride), out_size(w, kernel, stride)
    macs = cout * cin * kernel * kernel * ho * wo
    params = cout * cin * kernel * kernel + 2 * cout
    return _sig("conv", {"cin": cin, "cout": cout, "k": kernel, "s": stride, "hw": _hw(h, w),
                         "act": act}, (cin, h, w), (cout, ho, wo), macs, params)


def ir_hidden(cin: int, expansion: float) -> int:
    return int(round(cin * expansion))


def ir_sig(cin: int, cout: int, h: int, w: int, *, expansion: float, kernel: int = 3,
           stride: int = 1) -> dict[str, Any]:
    hidden = ir_hidden(cin, expansion)
    ho, wo = out_size(h, kernel, stride), out_size(w, kernel, stride)
    macs = params = 0
    if expansion != 1:
        macs += hidden * cin * h * w
        params += hidden * cin + 2 * hidden
    macs += hidden * kernel * kernel * ho * wo
    params += hidden * kernel * kernel + 2 * hidden
    macs += cout * hidden * ho * wo
    params += cout * hidden + 2 * cout
    exp = format(float(expansion), "g")
    return _sig("ir", {"cin": cin, "cout": cout, "e": exp, "k": kernel, "s": stride,
                       "hw": _hw(h, w)}, (cin, h, w), (cout, ho, wo), macs, params,
                expansion=float(expansion), hidden=hidden,
                residual=stride == 1 and cin == cout)


def basic_sig(cin: int, cout: int, h: int, w: int, *, stride: int = 1) -> dict[str, Any]:
    ho, wo = out_size(h, 3, stride), out_size(w, 3, stride)
    macs = cout * cin * 9 * ho * wo + cout * cout * 9 * ho * wo
    params = cout * cin * 9 + 2 * cout + cout * cout * 9 + 2 * cout
    projection = stride != 1 or cin != cout
    if projection:
        macs += cout * cin * ho * wo
        params += cout * cin + 2 * cout
    return _sig("basic", {"cin": cin, "cout": cout, "s": stride, "hw": _hw(h, w)},
                (cin, h, w), (cout, ho, wo), macs, params, projection=projection)


def head_sig(cin: int, num_classes: int, h: int, w: int) -> dict[str, Any]:
    return _sig("head", {"cin": cin, "classes": num_classes, "hw": _hw(h, w)}, (cin, h, w),
                (num_classes,), cin * num_classes, cin * num_classes + num_classes)


def name_blocks(sigs: list[dict[str, Any]], family: str) -> list[dict[str, Any]]:
    """Add the family and the module path each block has in the built model (``features.i``
    for the body, ``classifier`` for the head)."""
    out = []
    body = 0
    for sig in sigs:
        sig = dict(sig, family=family)
        if sig["kind"] == "head":
            sig["name"] = "classifier"
        else:
            sig["name"] = f"features.{body}"
            body += 1
        out.append(sig)
    return out


def totals(sigs: list[dict[str, Any]]) -> tuple[int, int]:
    """(MACs, params) of a whole plan."""
    return sum(s["macs"] for s in sigs), sum(s["params"] for s in sigs)
