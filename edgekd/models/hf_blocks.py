"""Block signatures read from a built Hugging Face classifier's module tree (the ``hf-*``
families), so that the profiler measures them as it does edgekd's own blocks.

The blocks are what the backbone runs one after another: its children in order, where a child
that iterates over a list of modules (an ``nn.ModuleList`` or ``nn.Sequential`` child, e.g. an
encoder's stages, a stage's layers) is replaced by the modules of that list, recursively.
Loose layers between them (EfficientNet's top conv, batch norm and activation) are grouped
into one block. The classifier (global mean + Linear) is edgekd's built-in ``head`` block.
One forward pass on the meta device (no memory, no weights) with hooks checks that each block
reads what the one before it wrote, and gives every block's input and output shape.

A block's signature holds ``kind`` ("hf", built by the family's ``build_block``), ``key``
(``hf:<class>:<in C x H x W>,<out>,...,<digest>``, the digest covering the module's printed
structure and its scalar attributes, so two models that run the same computation share the
key), ``path`` (its module path(s) under the backbone), ``spec``, ``in_channels`` and
``num_classes`` (the model it is cut from), shapes, MACs and params. Their MACs and params add
up to the model's (count.count_macs_params).
"""
from __future__ import annotations

import functools
import hashlib
from typing import Any, Sequence

from ..errors import BadInputError
from .count import count_macs_params
from .plan import head_sig

KIND = "hf"
POOLERS = ("pooler",)  # the backbone's global pooling: part of the head block


def _is_list(module) -> bool:
    from torch import nn

    return isinstance(module, (nn.ModuleList, nn.Sequential))


def _has_list_child(module) -> bool:
    return any(_is_list(c) for c in module.children())


def _first_tensor(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    return None


def _version(t):
    return None if t is None else t._version


def _record_calls(model, in_shape: Sequence[int]) -> dict[int, list]:
    """id(module) -> [[input, output, input's version, output's version], ...] for every call
    of every module in one forward pass (on the model's device; meta: no memory). A tensor
    changed in place (a residual added with +=) is the same object at another version."""
    import torch

    calls: dict[int, list] = {}
    handles = []

    for mod in model.modules():
        def pre(m, args, kwargs):
            x = _first_tensor(args) if args else _first_tensor(kwargs)
            calls.setdefault(id(m), []).append([x, None, _version(x), None])

        def post(m, args, kwargs, out):
            y = _first_tensor(out)
            calls[id(m)][-1][1], calls[id(m)][-1][3] = y, _version(y)

        handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(mod.register_forward_hook(post, with_kwargs=True))
    try:
        with torch.no_grad():
            first = next(model.parameters(), None)
            model(torch.zeros((1, *in_shape), device=first.device if first is not None else "meta"))
    finally:
        for h in handles:
            h.remove()
    return calls


def _sequence(module, prefix: str, skip: Sequence[str] = ()) -> list[tuple[str, Any]]:
    """The children of ``module`` in order, a list child replaced by its items."""
    out = []
    for name, child in module.named_children():
        if name in skip:
            continue
        if _is_list(child):
            out += [(f"{prefix}{name}.{n}", c) for n, c in child.named_children()]
        else:
            out.append((f"{prefix}{name}", child))
    return out


def _chains(seq, calls, x, y=None) -> bool:
    """Every module of ``seq`` runs once, the first on ``x`` (tensor, version), each next on
    what the one before it returned, unchanged, and the last returns ``y`` (when given)."""
    prev = x
    for _, mod in seq:
        rec = calls.get(id(mod), [])
        if len(rec) != 1 or rec[0][0] is None or rec[0][1] is None:
            return False
        if rec[0][0] is not prev[0] or rec[0][2] != prev[1]:
            return False
        prev = (rec[0][1], rec[0][3])
    return y is None or (prev[0] is y[0] and prev[1] == y[1])


def block_paths(model, in_shape: Sequence[int]) -> list[tuple[tuple[str, ...], tuple, tuple]]:
    """The backbone's blocks in execution order: (module paths, input shape, output shape). A
    block is one module, or several loose layers (no children) that run one after the other;
    a layer without parameters (an activation) joins the block before it."""
    backbone = model.features
    calls = _record_calls(model, in_shape)
    rec = calls.get(id(backbone))
    if not rec or rec[0][0] is None:
        raise _uncut(backbone, "it is not called on the input")

    def expand(module, prefix: str, x, y=None, skip=()) -> list[tuple[str, Any]]:
        seq = _sequence(module, prefix, skip)
        if not seq or not _chains(seq, calls, x, y):
            return []
        out = []
        for path, child in seq:
            c = calls[id(child)][0]
            if _has_list_child(child) and (inner := expand(child, path + ".", (c[0], c[2]), (c[1], c[3]))):
                out += inner
            else:
                out.append((path, child))
        return out

    flat = expand(backbone, "", (rec[0][0], rec[0][2]), skip=POOLERS)
    if not flat:
        raise _uncut(backbone, "its parts do not run one after the other")
    blocks: list[list] = []
    for path, child in flat:
        leaf = not any(True for _ in child.children())
        free = not any(True for _ in child.parameters())
        grouped = blocks and blocks[-1][2] and leaf
        if (leaf and free and blocks) or grouped:
            blocks[-1][0].append(path)
            blocks[-1][1] = child
            blocks[-1][2] = blocks[-1][2] and leaf
        else:
            blocks.append([[path], child, leaf])
    first = {id(m): c[0] for m in model.modules() if (c := calls.get(id(m)))}
    result = []
    for paths, last, _ in blocks:
        x = first[id(submodule(backbone, paths[0]))][0]
        y = first[id(last)][1]
        result.append((tuple(paths), tuple(int(d) for d in x.shape[1:]), tuple(int(d) for d in y.shape[1:])))
    return result


def _uncut(backbone, why: str) -> BadInputError:
    return BadInputError(f"{type(backbone).__name__} cannot be cut into blocks ({why})",
                         hint="give the student explicitly (--student)")


def submodule(root, path: str):
    mod = root
    for part in path.split("."):
        mod = mod[int(part)] if part.isdigit() and _is_list(mod) else getattr(mod, part)
    return mod


def extract(backbone, paths: Sequence[str]):
    """A copy of the block at ``paths`` (several paths: run in order, as one nn.Sequential)."""
    import copy

    from torch import nn

    mods = [copy.deepcopy(submodule(backbone, p)) for p in paths]
    return mods[0] if len(mods) == 1 else nn.Sequential(*mods)


def _digest(module, in_shape: Sequence[int]) -> str:
    """What decides the block's computation: its printed structure (layers, channels, kernels,
    strides), the scalar attributes of every submodule (residual flags, patch sizes, padding
    modes) and its input shape."""
    parts = [repr(module), repr(tuple(in_shape))]
    for name, mod in module.named_modules():
        attrs = sorted((k, v) for k, v in vars(mod).items() if not k.startswith("_") and k != "training"
                       and isinstance(v, (bool, int, float, str, tuple)))
        parts.append(f"{name}:{type(mod).__name__}:{attrs}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:10]


def signatures(model, *, spec: str, in_channels: int, num_classes: int,
               in_shape: Sequence[int]) -> list[dict[str, Any]]:
    """The block signatures of ``model`` (an HFClassifier, on the meta device or not): the
    backbone's blocks, then the ``head`` (global mean + the model's classifier Linear)."""
    backbone, head_linear = model.features, model.classifier
    blocks = block_paths(model, in_shape)
    sigs: list[dict[str, Any]] = []
    for paths, x, y in blocks:
        module = extract(backbone, paths) if len(paths) > 1 else submodule(backbone, paths[0])
        macs, params = count_macs_params(module, x)
        cls = type(module).__name__ if len(paths) == 1 else "+".join(
            type(submodule(backbone, p)).__name__ for p in paths)
        shape_text = "x".join(str(d) for d in x)
        key = (f"{KIND}:{cls}:in={shape_text},out={'x'.join(str(d) for d in y)},macs={macs},"
               f"params={params},d={_digest(module, x)}")
        sigs.append({"kind": KIND, "key": key, "cls": cls, "path": list(paths), "spec": spec,
                     "in_channels": int(in_channels), "num_classes": int(num_classes),
                     "in_shape": x, "out_shape": y, "macs": int(macs), "params": int(params)})
    c, h, w = blocks[-1][2]
    head = head_sig(int(c), int(num_classes), int(h), int(w))
    if head_linear.in_features != c or head_linear.out_features != num_classes:
        raise BadInputError(f"{type(model.model).__name__}'s classifier reads {head_linear.in_features} "
                            f"features, but its backbone ends with {c} channels",
                            hint="give the student explicitly (--student)")
    sigs.append(head)
    return sigs


def build_block(sig: dict):
    """The module of a block signature of :func:`signatures`: cut from a model built from its
    spec (the family's ``build_block``)."""
    try:
        spec, paths = str(sig["spec"]), [str(p) for p in sig["path"]]
        in_channels, num_classes = int(sig["in_channels"]), int(sig["num_classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"block signature '{sig.get('key', KIND)}' lacks field {exc}",
                            hint="pass an entry of block_signatures()") from exc
    return extract(_source_model(spec, in_channels, num_classes).features, paths)


@functools.lru_cache(maxsize=2)
def _source_model(spec: str, in_channels: int, num_classes: int):
    from . import build_model

    return build_model(spec, num_classes=num_classes, in_channels=in_channels).eval()
