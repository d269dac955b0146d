"""The torch side of quantization-aware distillation: a student with fake quantizers.

    fold_batchnorm(module)           -> torch.fx GraphModule, each Conv+BatchNorm folded into one
                                        Conv (the INT8 graph quantizes the folded weights)
    insert_fake_quant(gm, acts, wts) -> the GraphModule with FakeQuantAct after the nodes in
                                        ``acts`` and QuantConv/QuantLinear for the modules in
                                        ``wts``

Where the quantizers go is not decided here: qad_graph reads it from the target's own INT8
graph (which tensors carry QuantizeLinear, which weights DequantizeLinear) and maps each one to a
node of the traced student. Semantics follow that graph:

- an activation is fake-quantized per tensor with the scale and zero point the real quantizer
  calibrated (uint8 asymmetric on x86 CPUs, int8 symmetric on ARM and for TensorRT), held fixed
  while training: the exported graph carries exactly these numbers;
- a weight is fake-quantized per output channel, symmetric int8 in [-127, 127], its scale
  max|w| / 127 recomputed from the current weights at every step (what the quantizer computes
  from the final weights at export);
- rounding passes gradients straight through (inside the clamp range), so the student learns
  weights that survive rounding.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import BadInputError

WEIGHT_QMAX = 127


class FakeQuantAct(nn.Module):
    """Per-tensor fake quantization with a fixed scale and zero point (buffers, so they travel
    with state_dict and the training state)."""

    def __init__(self, scale: float, zero_point: int, qmin: int, qmax: int):
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("zero_point", torch.tensor(int(zero_point), dtype=torch.int32))
        self.qmin, self.qmax = int(qmin), int(qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point,
                                                     self.qmin, self.qmax)

    def extra_repr(self) -> str:
        return f"scale={float(self.scale):.6g}, zero_point={int(self.zero_point)}, " \
               f"range=[{self.qmin}, {self.qmax}]"


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 scale: max|w| / 127 over all but dim 0."""
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1)
    return torch.clamp(amax, min=1e-12) / WEIGHT_QMAX


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    s = weight_scale(w)
    zp = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, s, zp, 0, -WEIGHT_QMAX, WEIGHT_QMAX)


class QuantConv(nn.Conv2d):
    """A Conv2d whose weight is fake-quantized per output channel on every forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, fake_quant_weight(self.weight), self.bias)


class QuantLinear(nn.Linear):
    """A Linear whose weight is fake-quantized per output row on every forward (its bias left
    to the graph when :func:`split_matmul_bias` moved it there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if getattr(self, "bias_in_graph", False) else self.bias
        return nn.functional.linear(x, fake_quant_weight(self.weight), bias)


class _MatMulLinear(nn.Linear):
    """A Linear whose bias the graph adds after it (see :func:`split_matmul_bias`)."""

    bias_in_graph = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight)


def split_matmul_bias(gm: torch.fx.GraphModule, x: torch.Tensor) -> torch.fx.GraphModule:
    """``gm`` with each Linear that reads more than two dimensions on ``x`` (it exports to a
    MatMul and an Add, and INT8 graphs quantize the MatMul's output) computed as the product
    and, in a node of its own, the bias added: the same values, a node where the graph has one.
    The bias stays the Linear's parameter (same names)."""
    from torch.fx.passes.shape_prop import ShapeProp

    was_training = gm.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(x)
    gm.train(was_training)
    mods = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        m = mods.get(node.target) if node.op == "call_module" else None
        if type(m) is not nn.Linear or m.bias is None:
            continue
        meta = getattr(node.args[0], "meta", {}).get("tensor_meta")
        if meta is None or len(meta.shape) <= 2:
            continue
        m.__class__ = _MatMulLinear
        m.bias_in_graph = True  # kept when insert_fake_quant makes it a QuantLinear
        with gm.graph.inserting_after(node):
            bias = gm.graph.get_attr(f"{node.target}.bias")
        with gm.graph.inserting_after(bias):
            add = gm.graph.call_function(torch.add, (node, bias))
        node.replace_all_uses_with(add, delete_user_cb=lambda u: u is not add)
    gm.recompile()
    return gm


def _as_quant(m: nn.Module) -> nn.Module:
    q = copy.deepcopy(m)
    q.__class__ = QuantConv if isinstance(m, nn.Conv2d) else QuantLinear
    return q


# --------------------------------------------------------------------------- tracing

class _NamingTracer(torch.fx.Tracer):
    """symbolic_trace that remembers which submodule it was inside when tracing failed."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        self.stack.append(path)
        out = super().call_module(m, forward, args, kwargs)
        self.stack.pop()
        return out


def trace(module: nn.Module) -> torch.fx.GraphModule:
    """torch.fx trace of ``module``; a model fx cannot trace is one line naming the layer. An hf-
    student (built for one resolution, ``trace_input_shape``) is traced with its input-size-
    dependent paddings fixed for that size (models.hf_static)."""
    if getattr(module, "trace_input_shape", None):
        from ..models.hf_static import static_for_tracing

        module = static_for_tracing(module, module.trace_input_shape)
    tracer = _NamingTracer()
    try:
        graph = tracer.trace(module)
    except Exception as exc:  # noqa: BLE001 - fx raises TraceError, TypeError, RuntimeError...
        where = tracer.stack[-1] if tracer.stack else "the model's forward"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:140]
        raise BadInputError(f"cannot prepare the model for quantization-aware training: layer "
                            f"'{where}' ({type(exc).__name__}: {first})",
                            hint="use --qat off (post-training INT8 only), or make that layer "
                                 "traceable by torch.fx (no data-dependent control flow)") from None
    return torch.fx.GraphModule(tracer.root, graph, type(module).__name__)


def _parent(gm: nn.Module, path: str) -> tuple[nn.Module, str]:
    *head, last = path.split(".")
    parent = gm
    for p in head:
        parent = getattr(parent, p)
    return parent, last


def fold_batchnorm(module: nn.Module) -> torch.fx.GraphModule:
    """A traced copy of ``module`` (eval mode) with every BatchNorm2d that only reads a Conv2d
    folded into that Conv (which gains a bias); the BatchNorm is removed from the graph. SiLUs
    are written out as the Sigmoid and Mul they export to (:func:`_split_silu`)."""
    module = copy.deepcopy(module).eval()
    gm = trace(module)
    mods = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module"
                and isinstance(mods.get(src.target), nn.Conv2d) and len(src.users) == 1):
            continue
        conv, bn = mods[src.target], mods[node.target]
        fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
        parent, name = _parent(gm, src.target)
        setattr(parent, name, fused)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    _split_silu(gm)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()


def _split_silu(gm: torch.fx.GraphModule) -> None:
    """Each SiLU (swish) as ``x * sigmoid(x)``, the Sigmoid and Mul it exports to: INT8 graphs
    quantize the Sigmoid's output, so the fake quantizer needs a node there. The same values."""
    mods = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        silu = ((node.op == "call_function" and node.target is nn.functional.silu)
                or (node.op == "call_module" and isinstance(mods.get(node.target), nn.SiLU)))
        if not silu or node.kwargs.get("inplace"):
            continue
        x = node.args[0]
        with gm.graph.inserting_after(node):
            sig = gm.graph.call_function(torch.sigmoid, (x,))
        with gm.graph.inserting_after(sig):
            mul = gm.graph.call_function(torch.mul, (x, sig))
        node.replace_all_uses_with(mul)
        gm.graph.erase_node(node)


def insert_fake_quant(gm: torch.fx.GraphModule, acts: dict[str, tuple[float, int, int, int]],
                      weights: "set[str] | list[str]") -> torch.fx.GraphModule:
    """A copy of ``gm`` with FakeQuantAct(scale, zero_point, qmin, qmax) after each node named in
    ``acts`` (every user reads the quantized tensor) and fake-quantized weights for the Conv2d /
    Linear submodules named in ``weights``."""
    gm = copy.deepcopy(gm)
    nodes = {n.name: n for n in gm.graph.nodes}
    fq_root = nn.Module()
    gm.add_module("qad_fq", fq_root)
    for i, (name, (scale, zp, qmin, qmax)) in enumerate(sorted(acts.items())):
        node = nodes[name]
        fq_name = f"a{i}"
        fq_root.add_module(fq_name, FakeQuantAct(scale, zp, qmin, qmax))
        with gm.graph.inserting_after(node):
            fq = gm.graph.call_module(f"qad_fq.{fq_name}", (node,))
        node.replace_all_uses_with(fq, delete_user_cb=lambda u: u is not fq)
    mods = dict(gm.named_modules())
    for path in weights:
        m = mods[path]
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            raise BadInputError(f"cannot fake-quantize the weights of layer '{path}' "
                                f"({type(m).__name__})", hint="use --qat off")
        parent, name = _parent(gm, path)
        setattr(parent, name, _as_quant(m))
    gm.recompile()
    return gm


# ops that only move values (same values, another shape or order): quantizing their output with
# their input's scale and zero point again changes nothing, forward or backward
_MOVES = frozenset({"reshape", "view", "transpose", "permute", "contiguous", "flatten", "unflatten",
                    "squeeze", "unsqueeze"})


def _moves_only(node: torch.fx.Node) -> bool:
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return node.op in ("call_method", "call_function") and name in _MOVES


def drop_repeats(gm: torch.fx.GraphModule, acts: dict[str, tuple]) -> dict[str, tuple]:
    """``acts`` without the fake quantizers that would repeat one: a tensor reached from a
    quantized one through value-moving ops alone (reshape, transpose, ...) with the same scale,
    zero point and range is on that grid already (ONNX Runtime quantizes a Reshape's or a
    Transpose's output again with its input's parameters). The same values and gradients, fewer
    ops per training step."""
    nodes = {n.name: n for n in gm.graph.nodes}
    kept = {}
    for name, qp in acts.items():
        src = nodes[name]
        while _moves_only(src) and isinstance(src.args[0], torch.fx.Node):
            src = src.args[0]
            if acts.get(src.name) is not None:
                break
        if src.name == name or acts.get(src.name) != qp:
            kept[name] = qp
    return kept


def node_outputs(gm: torch.fx.GraphModule, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every tensor a node of ``gm`` produces on ``x`` (eval mode, no grad), by node name."""
    out: dict[str, torch.Tensor] = {}

    class _Rec(torch.fx.Interpreter):
        def run_node(self, n):
            r = super().run_node(n)
            if isinstance(r, torch.Tensor) and r.is_floating_point():
                out[n.name] = r.detach().clone()  # in-place activations change it later
            return r

    gm.eval()
    with torch.no_grad():
        _Rec(gm).run(x)
    return out


def weight_modules(gm: nn.Module) -> dict[str, nn.Module]:
    """Conv2d and Linear submodules by path (the layers whose weights INT8 quantizes)."""
    return {p: m for p, m in gm.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}

