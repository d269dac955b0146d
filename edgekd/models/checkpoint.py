"""Model checkpoints: the weights plus the spec that rebuilds the module.

A checkpoint is a dict written with ``torch.save`` and read with ``torch.load(weights_only=True)``:
``{"format": "edgekd.model/v1", "spec", "num_classes", "in_channels", "input_shape",
"state_dict", "extra"}``. The spec is a student family spec ("resnet:width=16,res=16") or
``"py:module:function"`` (a factory called with ``num_classes``/``in_channels`` where it accepts
them), so any module whose class can be rebuilt from code round-trips without pickling it.
"""
from __future__ import annotations

import inspect
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

from ..errors import BadInputError

FORMAT = "edgekd.model/v1"
_KEYS = ("format", "spec", "num_classes", "in_channels", "input_shape", "state_dict", "extra")
_PLAIN = (str, int, float, bool, type(None))
# what torch.load raises on a file that is not a torch file (garbage hits the legacy unpickler)
LOAD_ERRORS = (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, TypeError,
               AttributeError)


def _check_extra(value: Any, where: str = "extra") -> None:
    """Only values torch.load(weights_only=True) can read back may go into ``extra``."""
    import torch

    if isinstance(value, _PLAIN) or isinstance(value, torch.Tensor):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise BadInputError(f"{where} has a key of type {type(k).__name__}",
                                    hint="use str keys in checkpoint extra")
            _check_extra(v, f"{where}[{k!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_extra(v, f"{where}[{i}]")
        return
    raise BadInputError(f"{where} is a {type(value).__name__}, which a safe load cannot read",
                        hint="store plain numbers, strings, lists, dicts or tensors")


def save_checkpoint(path: "str | os.PathLike", model, *, spec: str, num_classes: int,
                    in_channels: int, input_shape, extra: dict | None = None) -> Path:
    """Write ``model``'s weights and how to rebuild it to ``path`` (atomically)."""
    import torch

    from ..util_io import atomic_path

    extra = dict(extra or {})
    _check_extra(extra)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    ckpt = {"format": FORMAT, "spec": str(spec), "num_classes": int(num_classes),
            "in_channels": int(in_channels),
            "input_shape": [int(s) for s in input_shape] if input_shape is not None else None,
            "state_dict": state, "extra": extra}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def is_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT and "state_dict" in obj


def describe_file(path: "str | os.PathLike") -> str:
    """A few words on what a file that is not an edgekd checkpoint is."""
    p = Path(path)
    try:
        if zipfile.is_zipfile(p):
            names = zipfile.ZipFile(p).namelist()
            if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
                return "a TorchScript archive"
            if any(n.endswith("archive_format") for n in names):
                return "a torch.export program (.pt2)"
            if any(n.endswith("data.pkl") for n in names):
                return "a torch.save file"
            return "a zip file"
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        return f"an unreadable file ({exc})"
    if head.startswith(b"\x80"):
        return "a pickle / legacy torch.save file"
    if head.startswith(b"\x93NUMPY"):
        return "a numpy .npy file"
    return "not a torch file" if p.suffix != ".onnx" else "an ONNX model"


def read_checkpoint(path: "str | os.PathLike", *, map_location: Any = "cpu") -> dict:
    """The checkpoint dict (safe load); BadInputError saying what the file is otherwise."""
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise BadInputError(f"checkpoint '{p}' does not exist", hint="check the path")
    what = describe_file(p)
    if what.startswith(("a TorchScript", "a torch.export")):
        raise BadInputError(f"'{p}' is {what}, not an edgekd checkpoint",
                            hint="use it as a teacher (--teacher, with --trust-code: it holds code), or "
                                 "pass a .pt written by save_checkpoint")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BadInputError(f"'{p}' is a pickled Python object (e.g. a whole model saved with "
                            "torch.save(model)), not an edgekd checkpoint",
                            hint="load it as a teacher with --trust-code if you trust it, or "
                                 "save it with edgekd's save_checkpoint") from exc
    except LOAD_ERRORS as exc:
        raise BadInputError(f"'{p}' is {what}, not an edgekd checkpoint",
                            hint="pass a .pt written by save_checkpoint (edgekd train/distill)"
                            ) from exc
    if not is_checkpoint(obj):
        what = "a state_dict" if isinstance(obj, dict) and obj and all(
            isinstance(v, torch.Tensor) for v in obj.values()) else f"a {type(obj).__name__}"
        if isinstance(obj, dict) and "format" in obj:
            what = f"a file of format '{obj.get('format')}'"
        raise BadInputError(f"'{p}' holds {what}, not an edgekd checkpoint ({FORMAT})",
                            hint="a bare state_dict needs its model spec: pass it as --weights "
                                 "next to a family or py: spec")
    missing = [k for k in _KEYS if k not in obj]
    if missing:
        raise BadInputError(f"checkpoint '{p}' lacks {', '.join(missing)}",
                            hint="re-save it with save_checkpoint")
    return obj


def _call_factory(fn, num_classes: int | None, in_channels: int | None):
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {}
    if num_classes is not None and ("num_classes" in params or var_kw):
        kwargs["num_classes"] = int(num_classes)
    if in_channels is not None and ("in_channels" in params or var_kw):
        kwargs["in_channels"] = int(in_channels)
    return fn(**kwargs)


def build_from_spec(spec: str, *, num_classes: int | None, in_channels: int | None):
    """The module a spec names: ``py:module:function`` or a student family spec."""
    import torch

    if spec.startswith("py:"):
        from ..registry import import_object

        fn = import_object(spec[3:])
        if not callable(fn):
            raise BadInputError(f"'{spec[3:]}' is not callable",
                                hint="point py: at a function returning an nn.Module")
        model = _call_factory(fn, num_classes, in_channels)
        if not isinstance(model, torch.nn.Module):
            raise BadInputError(f"'{spec}' returned a {type(model).__name__}, not an nn.Module",
                                hint="the factory must return a torch.nn.Module")
        return model
    from . import build_model  # edgekd.models (imported here: it pulls in torch)

    if num_classes is None or in_channels is None:
        raise BadInputError(f"building '{spec}' needs num_classes and in_channels",
                            hint="pass --num-classes/--in-channels or use a checkpoint")
    return build_model(spec, num_classes=int(num_classes), in_channels=int(in_channels))


def load_state(model, state: dict, source: str) -> None:
    """``model.load_state_dict(state)`` with a one-line error naming the mismatched keys."""
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}"
                         f"{'...' if len(unexpected) > 3 else ''}")
        if shape:
            k = shape[0]
            parts.append(f"shape of {k}: model {tuple(own[k].shape)}, weights "
                         f"{tuple(state[k].shape)}")
        detail = "; ".join(parts) or str(exc).splitlines()[0]
        raise BadInputError(f"weights in '{source}' do not fit the model ({detail})",
                            hint="check the spec, num_classes and in_channels match the weights"
                            ) from exc
    del result


def model_from_checkpoint(ckpt: dict, source: str):
    """The module a read checkpoint describes: built from its spec, resized to the stored
    shapes when it was pruned (edgekd.models.pruned), then its weights loaded."""
    model = build_from_spec(str(ckpt["spec"]), num_classes=ckpt.get("num_classes"),
                            in_channels=ckpt.get("in_channels"))
    pruned = (ckpt.get("extra") or {}).get("pruned")
    if pruned:
        from .pruned import apply_shapes

        apply_shapes(model, pruned)
    load_state(model, ckpt["state_dict"], source)
    return model


def load_checkpoint(path: "str | os.PathLike", *, device: Any = "cpu"):
    """Rebuild the model a checkpoint describes: ``(module in eval mode, meta)``.

    ``meta`` is the checkpoint without ``state_dict`` (format, spec, num_classes, in_channels,
    input_shape, extra)."""
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt, str(path)).to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    if meta.get("input_shape") is not None:
        meta["input_shape"] = tuple(int(s) for s in meta["input_shape"])
    return model, meta
