"""Pruned models in and out: the edgekd checkpoint of a pruned model (its shapes stored as data,
see edgekd.models.pruned), the model `edgekd prune` starts from, and the files it writes.

    save_pruned(path, model, spec=..., ...) / load_pruned(path)
    load_prunable(ref, data, resolution) -> (model, spec, bundle, extra)
    write_pruned(model, spec, bundle, out_dir, val_acc=..., ratio=...) -> {checkpoint, onnx}
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from ..errors import BadInputError
from ..models.pruned import pruned_shapes


def save_pruned(path: "str | os.PathLike", model, *, spec: str, num_classes: int,
                in_channels: int, input_shape, extra: Optional[dict] = None) -> Path:
    """An edgekd checkpoint of a pruned model: spec + state_dict + ``extra["pruned"]``."""
    from ..models.checkpoint import save_checkpoint

    extra = dict(extra or {})
    extra["pruned"] = pruned_shapes(model)
    return save_checkpoint(path, model, spec=spec, num_classes=num_classes,
                           in_channels=in_channels, input_shape=input_shape, extra=extra)


def load_pruned(path: "str | os.PathLike", *, device: Any = "cpu"):
    """``(model in eval mode, meta)``: load_checkpoint restores the pruned shapes itself."""
    from ..models.checkpoint import load_checkpoint

    return load_checkpoint(path, device=device)


def load_prunable(ref: str, data: str, resolution: Optional[int]):
    """``(model, spec, bundle, extra)`` for an edgekd checkpoint or a student spec ``ref`` and
    the data spec ``data`` (at ``resolution``, else the model's own)."""
    from ..data import load_data
    from ..models import build_model, input_shape
    from ..models.ref import parse_ref

    r = parse_ref(ref)
    if r.kind not in ("torch", "spec"):
        raise BadInputError(f"cannot prune {r.path.name}: pruning rebuilds the network from its spec",
                            hint="give the edgekd checkpoint (.pt) it was exported from, or a student spec")
    if r.kind == "torch":
        from ..models.checkpoint import load_checkpoint

        model, meta = load_checkpoint(r.path)
        shape = meta.get("input_shape")
        res = resolution or (shape[-1] if shape else None)
        bundle = load_data(data, resolution=res)
        if bundle.num_classes != meta["num_classes"] or bundle.in_channels != meta["in_channels"]:
            raise BadInputError(f"'{ref}' is for {meta['num_classes']} classes and "
                                f"{meta['in_channels']} channel(s), the data '{data}' has "
                                f"{bundle.num_classes} and {bundle.in_channels}",
                                hint="prune a model trained on this data")
        return model, str(meta["spec"]), bundle, dict(meta.get("extra") or {})
    res = resolution or input_shape(ref, 1)[-1]
    bundle = load_data(data, resolution=res)
    model = build_model(ref, num_classes=bundle.num_classes, in_channels=bundle.in_channels)
    return model.eval(), ref, bundle, {}


def write_pruned(model, spec: str, bundle, out_dir: Path, *, val_acc, ratio: float) -> dict:
    """OUT/pruned.pt (:func:`save_pruned`) and OUT/pruned.onnx; their paths as strings."""
    import torch

    from ..export import export_onnx

    model = model.eval()
    ckpt = save_pruned(out_dir / "pruned.pt", model, spec=spec, num_classes=bundle.num_classes,
                       in_channels=bundle.in_channels, input_shape=tuple(bundle.input_shape),
                       extra={"val_acc": val_acc, "prune_ratio": float(ratio),
                              "data": bundle.fingerprint})
    onnx = export_onnx(model, torch.zeros(1, *bundle.input_shape), out_dir / "pruned.onnx",
                       opset=17, dynamic_batch=True, metadata={"edgekd.spec": spec,
                                                               "edgekd.pruned": "true"})
    return {"checkpoint": str(ckpt), "onnx": str(onnx)}
