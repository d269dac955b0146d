"""Teachers: any trained network that maps a batch of images to logits.

``load_teacher(spec)`` accepts ``py:module:function`` (+ weights), an edgekd checkpoint, a
student-family spec (+ weights), a TorchScript file, a torch.export ``.pt2`` or an ``.onnx``
(run with onnxruntime on the CPU, so a teacher from any framework works). A file's kind is found
by looking inside it, not from its extension. A pickled whole ``nn.Module`` is refused unless
``trust_pickle=True``: unpickling runs arbitrary code. TorchScript and ``.pt2`` files hold code
too (running them can read and write any file) and take the same opt-in (models/ref.py).
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInputError
from ..util_io import sha256_file
from .checkpoint import LOAD_ERRORS, build_from_spec, is_checkpoint, load_state, model_from_checkpoint
from .ref import module_sha256, require_code_trust, torch_file_kind

log = logging.getLogger(__name__)

KINDS = ("torch", "torchscript", "export", "onnx")
_FILE_SUFFIXES = (".pt", ".pth", ".ts", ".pt2", ".onnx", ".bin", ".ckpt")
_TRUST_HINT = ("pass --trust-code (alias --trust-pickle) if you trust the file, or save "
               "model.state_dict() or export it to ONNX instead (TorchScript and .pt2 files hold "
               "code too and take the same --trust-code)")


def _logits_of(out: Any):
    """The logits tensor in a model's output (tensor, tuple/list, dict, or .logits)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = out.get("logits", next(iter(out.values()), None))
        return _logits_of(out)
    if isinstance(out, (tuple, list)) and out:
        return _logits_of(out[0])
    if hasattr(out, "logits"):
        return _logits_of(out.logits)
    raise BadInputError(f"the teacher returned a {type(out).__name__}, not a logits tensor",
                        hint="the teacher must return logits (N×classes)")


class Teacher:
    """A loaded teacher. ``teacher(x)`` -> float32 logits (eval mode, no grad, detached), on
    ``x``'s device. ``module`` is the nn.Module (None for ONNX); feature taps need an eager
    torch module (``supports_features``)."""

    def __init__(self, *, kind: str, spec: str, fingerprint: str, module=None,
                 run: Callable | None = None, num_classes: int | None = None,
                 input_shape: tuple[int, ...] | None = None, fixed_batch: int | None = None,
                 device: Any = "cpu", source: str = ""):
        assert kind in KINDS
        self.kind, self.spec, self.fingerprint = kind, spec, fingerprint
        self.module, self._run = module, run
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape) if input_shape else None
        self.fixed_batch = fixed_batch
        self.device = device
        self.source = source

    @property
    def supports_features(self) -> bool:
        return self.kind == "torch"

    def __repr__(self) -> str:
        return (f"Teacher(kind={self.kind!r}, spec={self.spec!r}, num_classes={self.num_classes}, "
                f"input_shape={self.input_shape}, fingerprint={self.fingerprint[:12]})")

    def _forward(self, x):
        if self._run is not None:
            return self._run(x)
        return _logits_of(self.module(x.to(self.device)))

    def __call__(self, x):
        import torch

        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        out_device = x.device
        x = x.to(torch.float32)
        with torch.no_grad():
            b = self.fixed_batch
            if b is None or x.shape[0] == b:
                out = self._forward(x)
            else:  # a fixed-batch graph: run in chunks of b, padding the last one
                outs = []
                for start in range(0, x.shape[0], b):
                    chunk = x[start:start + b]
                    n = chunk.shape[0]
                    if n < b:
                        pad = chunk[-1:].expand(b - n, *chunk.shape[1:])
                        chunk = torch.cat([chunk, pad])
                    outs.append(self._forward(chunk)[:n])
                out = torch.cat(outs)
        out = out.detach().to(device=out_device, dtype=torch.float32)
        return out[0] if single else out


# --------------------------------------------------------------------------- weights

def _dims_from_state(state: dict) -> tuple[int | None, int | None]:
    """(num_classes, in_channels) guessed from weights: the last 2-D weight's rows, the first
    4-D weight's input channels."""
    num_classes = in_channels = None
    for k, v in state.items():
        if getattr(v, "dim", None) is None:
            continue
        if in_channels is None and v.dim() == 4 and k.endswith("weight"):
            in_channels = int(v.shape[1])
        if v.dim() == 2 and k.endswith("weight"):
            num_classes = int(v.shape[0])
    return num_classes, in_channels


def _unpickle(path: Path):
    """torch.load(weights_only=False), only reached with trust_pickle=True."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ImportError as exc:
        raise BadInputError(f"cannot unpickle '{path}': the code it was saved from is not "
                            f"importable ({exc})",
                            hint="put the model's module on PYTHONPATH, or export the model "
                                 "to TorchScript, .pt2 or ONNX") from exc
    except (pickle.UnpicklingError,) + LOAD_ERRORS as exc:
        raise BadInputError(f"cannot unpickle '{path}' ({str(exc).splitlines()[0]})",
                            hint="check the file is a torch.save file") from exc


def _read_weights(path: "str | os.PathLike", trust_pickle: bool) -> tuple[dict, dict]:
    """(state_dict, checkpoint meta or {}) from a weights file."""
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise BadInputError(f"teacher weights '{p}' do not exist", hint="check the path")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise BadInputError(f"weights '{p}' hold pickled Python objects, and unpickling "
                                f"runs arbitrary code", hint=_TRUST_HINT) from exc
        obj = _unpickle(p)
    except LOAD_ERRORS as exc:
        raise BadInputError(f"cannot read weights '{p}' ({str(exc).splitlines()[0]})",
                            hint="pass a state_dict saved with torch.save(model.state_dict())"
                            ) from exc
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict(), {}
    if is_checkpoint(obj):
        return obj["state_dict"], {k: v for k, v in obj.items() if k != "state_dict"}
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(
                    isinstance(v, torch.Tensor) for v in inner.values()):
                return inner, {}
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj, {}
    raise BadInputError(f"weights '{p}' hold a {type(obj).__name__} that is not a state_dict",
                        hint="save them with torch.save(model.state_dict())")


# --------------------------------------------------------------------------- kinds

def _torch_teacher(module, *, spec, fingerprint, device, num_classes=None, input_shape=None,
                   source=""):
    module = module.to(device).eval()
    return Teacher(kind="torch", spec=spec, fingerprint=fingerprint, module=module,
                   num_classes=num_classes, input_shape=input_shape, device=device,
                   source=source)


def _from_factory(spec: str, weights, trust_pickle, num_classes, in_channels, device):
    state, meta = (None, {})
    if weights is not None:
        state, meta = _read_weights(weights, trust_pickle)
        guess_classes, guess_channels = _dims_from_state(state)
        num_classes = num_classes or meta.get("num_classes") or guess_classes
        in_channels = in_channels or meta.get("in_channels") or guess_channels
    elif not spec.startswith("py:"):
        raise BadInputError(f"teacher '{spec}' is an architecture without weights",
                            hint="pass its trained weights with --teacher-weights")
    module = build_from_spec(spec, num_classes=num_classes, in_channels=in_channels)
    if state is not None:
        load_state(module, state, str(weights))
        fp = _fingerprint("torch", spec, sha256_file(Path(weights).expanduser()))
    else:
        fp = _fingerprint("torch", spec, module_sha256(module))
    return _torch_teacher(module, spec=spec, fingerprint=fp, device=device,
                          num_classes=num_classes, input_shape=meta.get("input_shape"),
                          source=spec)


def _fingerprint(kind: str, spec: str, *parts: str) -> str:
    return hashlib.sha256("|".join(("edgekd.teacher/v1", kind, spec, *parts)).encode()).hexdigest()


def _from_torch_file(path: Path, spec, weights, trust_pickle, device, file_sha):
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise BadInputError(f"teacher '{path}' is a pickled Python object (a whole model "
                                f"saved with torch.save(model)); unpickling it runs arbitrary "
                                f"code", hint=_TRUST_HINT) from exc
        log.warning("unpickling teacher %s (--trust-pickle)", path)
        obj = _unpickle(path)
    except LOAD_ERRORS as exc:  # torch's own words (inline_container.cc, ...) say nothing to a user
        raise BadInputError(f"cannot read teacher '{path}': torch cannot load it (a truncated file, or an "
                            f"archive torch.save did not write)",
                            hint="pass a checkpoint, TorchScript, .pt2 or .onnx file") from exc
    if isinstance(obj, torch.nn.Module):
        module, meta = obj, {}
    elif is_checkpoint(obj):
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        module = model_from_checkpoint(obj, str(path))  # pruned checkpoints too
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadInputError(f"teacher '{path}' is a bare state_dict: it has weights but no "
                            f"architecture", hint="pass the architecture as the teacher "
                            "(py:module:function or a family spec) and this file as "
                            "--teacher-weights")
    else:
        raise BadInputError(f"teacher '{path}' holds a {type(obj).__name__}, not a model",
                            hint="pass a checkpoint, TorchScript, .pt2 or .onnx file")
    parts = [file_sha]
    if weights is not None:
        state, _ = _read_weights(weights, trust_pickle)
        load_state(module, state, str(weights))
        parts.append(sha256_file(Path(weights).expanduser()))
    shape = meta.get("input_shape")
    return _torch_teacher(module, spec=spec, fingerprint=_fingerprint("torch", spec, *parts),
                          device=device, num_classes=meta.get("num_classes"),
                          input_shape=tuple(shape) if shape else None, source=str(path))


def _from_torchscript(path: Path, spec, device, file_sha):
    import torch

    try:
        module = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as exc:
        raise BadInputError(f"cannot load TorchScript teacher '{path}' "
                            f"({str(exc).splitlines()[0]})",
                            hint="re-save it with torch.jit.save") from exc
    module.eval()
    return Teacher(kind="torchscript", spec=spec, fingerprint=_fingerprint("torchscript", spec,
                   file_sha), module=module, device=device, source=str(path))


def _from_export(path: Path, spec, device, file_sha):
    import torch

    try:
        ep = torch.export.load(str(path))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise BadInputError(f"cannot load torch.export teacher '{path}' "
                            f"({str(exc).splitlines()[0]})",
                            hint="re-save it with torch.export.save") from exc
    user_inputs = list(ep.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise BadInputError(f"teacher '{path}' takes {len(user_inputs)} inputs, not one image "
                            f"batch", hint="export a model whose forward takes one tensor")
    shape = None
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name == user_inputs[0]:
            val = node.meta.get("val")
            shape = tuple(val.shape) if val is not None else None
    fixed = None
    input_shape = None
    if shape:
        fixed = int(shape[0]) if isinstance(shape[0], int) else None
        if all(isinstance(d, int) for d in shape[1:]):
            input_shape = tuple(int(d) for d in shape[1:])
    module = ep.module().to(device)
    return Teacher(kind="export", spec=spec, fingerprint=_fingerprint("export", spec, file_sha),
                   module=module, input_shape=input_shape, fixed_batch=fixed, device=device,
                   source=str(path))


def _from_onnx(path: Path, spec, file_sha):
    """An ONNX teacher (models/onnx_teacher.py: output shapes, probabilities to log-probs)."""
    from .onnx_teacher import open_onnx

    return Teacher(kind="onnx", spec=spec, fingerprint=_fingerprint("onnx", spec, file_sha),
                   source=str(path), **open_onnx(path))


def _from_hf(spec: str, weights, device):
    """``hf:DIR``: a save_pretrained directory read by models/hf.py (local files only); the
    module returns logits, and the fingerprint hashes config.json and the weight files."""
    from .hf import load_pretrained_dir

    if weights is not None:
        raise BadInputError(f"--teacher-weights does not apply to teacher '{spec}'",
                            hint="its weights are in the directory; drop --teacher-weights")
    module, info = load_pretrained_dir(spec[3:].strip())
    return _torch_teacher(module, spec=spec, fingerprint=_fingerprint("torch", spec, *info["hashes"]),
                          device=device, num_classes=info["num_classes"],
                          input_shape=info["input_shape"], source=str(info["path"]))


# --------------------------------------------------------------------------- front door

def load_teacher(spec: str, *, weights: str | None = None, trust_pickle: bool = False,
                 num_classes: int | None = None, in_channels: int | None = None,
                 device: Any = "cpu") -> Teacher:
    """Load a teacher from a spec: ``py:module:function``, a file (edgekd checkpoint,
    TorchScript, torch.export .pt2, ONNX, or with ``trust_pickle`` a pickled nn.Module), a
    family spec ``family:k=v`` with ``weights``, or ``hf:DIR`` (a local save_pretrained
    directory of a Hugging Face image classifier; nothing is downloaded)."""
    spec = str(spec).strip()
    if not spec:
        raise BadInputError("the teacher spec is empty",
                            hint="pass a file, py:module:function or family:k=v")
    if spec.startswith("py:"):
        return _from_factory(spec, weights, trust_pickle, num_classes, in_channels, device)
    if spec.startswith("hf:"):
        return _from_hf(spec, weights, device)
    path = Path(spec).expanduser()
    if path.is_file():
        file_sha = sha256_file(path)
        kind = torch_file_kind(path)
        if kind in ("torchscript", "export") and weights is not None:
            raise BadInputError(f"--teacher-weights does not apply to {kind} teacher '{path}'",
                                hint="its weights are inside the file; drop --teacher-weights")
        if kind in ("torchscript", "export"):
            require_code_trust(path, kind, trust_pickle)  # they run code: the same opt-in
        if kind == "torchscript":
            return _from_torchscript(path, spec, device, file_sha)
        if kind == "export":
            return _from_export(path, spec, device, file_sha)
        with open(path, "rb") as f:
            head = f.read(2)
        if kind == "torch" or head.startswith(b"\x80"):  # zip or legacy torch.save
            return _from_torch_file(path, spec, weights, trust_pickle, device, file_sha)
        if path.suffix.lower() in (".pt", ".pth", ".ts", ".pt2", ".ckpt"):
            raise BadInputError(f"teacher '{path}' is not a torch file (no archive torch.save or "
                                f"torch.jit.save writes)", hint="pass a checkpoint, TorchScript, .pt2 or .onnx file")
        if weights is not None:
            raise BadInputError(f"--teacher-weights does not apply to ONNX teacher '{path}'",
                                hint="its weights are inside the file; drop --teacher-weights")
        return _from_onnx(path, spec, file_sha)
    if path.exists():
        raise BadInputError(f"teacher '{path}' is not a file", hint="pass a model file")
    if os.sep in spec or spec.lower().endswith(_FILE_SUFFIXES):
        raise BadInputError(f"teacher file '{spec}' does not exist", hint="check the path")
    return _from_factory(spec, weights, trust_pickle, num_classes, in_channels, device)


def check_teacher_matches(teacher: Teacher, bundle) -> None:
    """BadInputError unless the teacher runs on the bundle's samples and predicts its classes."""
    import torch

    shape = tuple(bundle.input_shape)
    want = teacher.input_shape
    expects = f"the teacher expects {tuple(want)}" if want else "check --resolution and channels"
    if want and len(want) == 3 and int(want[0]) != shape[0]:
        raise BadInputError(f"the data has {shape[0]} channel(s) (shape {shape}) but the "
                            f"teacher expects {want[0]} (shape {tuple(want)})",
                            hint="use data with the teacher's channels (folder color mode)")
    if teacher.num_classes is not None and int(teacher.num_classes) != int(bundle.num_classes):
        raise BadInputError(f"the teacher predicts {teacher.num_classes} classes but the data "
                            f"has {bundle.num_classes}",
                            hint="use the teacher's dataset or a teacher trained on these classes")
    n = min(2, len(bundle.val))
    x = torch.stack([bundle.val[i][0] for i in range(n)])
    try:
        out = teacher(x)
    except BadInputError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"the teacher fails on a data sample of shape {shape} ({first})",
                            hint=f"{expects}; pass --resolution to match it") from exc
    if out.dim() != 2 or out.shape[0] != n:
        raise BadInputError(f"the teacher returned shape {tuple(out.shape)} for a batch of {n}, "
                            f"not {n}×classes logits", hint="the teacher must return logits")
    got = int(out.shape[1])
    if got != int(bundle.num_classes):
        raise BadInputError(f"the teacher predicts {got} classes but the data has "
                            f"{bundle.num_classes}",
                            hint="use the teacher's dataset or a teacher trained on these classes")
    if not bool(torch.isfinite(out).all()):
        raise BadInputError("the teacher returns NaN/inf logits on the data",
                            hint="check the teacher's weights and the data normalization")
    if teacher.num_classes is None:
        teacher.num_classes = got
    if want and len(want) == 3 and tuple(int(d) for d in want[1:]) != shape[1:]:
        log.warning("teacher was made for input %s but the data is %s", tuple(want), shape)
