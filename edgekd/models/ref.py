"""Model references: what a user names as MODEL, told apart once, and loaded as a torch module.

A reference is a student spec ('mobilenetv2:width=0.5,res=32') or a file: an edgekd checkpoint,
TorchScript, a torch.export .pt2 program, ONNX, OpenVINO IR (.xml) or a TensorRT engine. This
module decides which, and opens the torch ones (a spec, a checkpoint, TorchScript, .pt2) as
modules; running a reference on a target's runtime is edgekd.deploy's job, one floor up.

TorchScript is sniffed here and nowhere else (``torch_file_kind``), files and modules are hashed
one way (``edgekd.util_io.sha256_file``, ``module_sha256``).

TorchScript and torch.export files hold programs, not only weights: running one runs the
operations stored in it, and those include reading and writing any file the user can (e.g.
``torch.from_file(..., shared=True)``). They are opened only with the explicit opt-in that
pickles take (``--trust-code``, alias ``--trust-pickle``; in Python ``trust_code()`` or
``trust_pickle=True``), or when this process wrote the very bytes itself (``note_made_here``).
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import BadInputError

ONNX_SUFFIXES = (".onnx",)
IR_SUFFIXES = (".xml",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
PTE_SUFFIXES = (".pte",)  # an ExecuTorch program
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
EXPORT_SUFFIXES = (".pt2",)
TORCH_SUFFIXES = TORCHSCRIPT_SUFFIXES + EXPORT_SUFFIXES
MODEL_SUFFIXES = ONNX_SUFFIXES + IR_SUFFIXES + ENGINE_SUFFIXES + PTE_SUFFIXES + TORCH_SUFFIXES

# What load_torch_file says it loaded (the same words as backends.base.ArtifactFormat).
TORCHSCRIPT, EXPORTED_PROGRAM, CHECKPOINT = "torchscript", "torch-export", "edgekd-checkpoint"


@dataclass(frozen=True)
class ModelRef:
    """A reference told apart: ``kind`` is 'spec', 'torch' (checkpoint, TorchScript or .pt2),
    'onnx', 'openvino-ir', 'engine' or 'executorch'; ``path`` is set for files."""

    text: str
    kind: str
    path: Path | None = None

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower() if self.path is not None else ""


def looks_like_path(ref: str) -> bool:
    p = Path(ref)
    return p.suffix.lower() in MODEL_SUFFIXES or p.exists() or "/" in ref or "\\" in ref


def parse_ref(ref: "str | Path") -> ModelRef:
    """Tell a reference apart; a file must exist and have a model suffix (BadInputError names
    what is wrong and what would do)."""
    text = str(ref)
    if not looks_like_path(text):
        return ModelRef(text=text, kind="spec")
    p = Path(text)
    if not p.exists():
        raise BadInputError(f"model file {p} does not exist", hint="check the path")
    suffix = p.suffix.lower()
    for suffixes, kind in ((ONNX_SUFFIXES, "onnx"), (IR_SUFFIXES, "openvino-ir"),
                           (ENGINE_SUFFIXES, "engine"), (PTE_SUFFIXES, "executorch"),
                           (TORCH_SUFFIXES, "torch")):
        if suffix in suffixes:
            return ModelRef(text=text, kind=kind, path=p)
    raise BadInputError(f"{p} has an unknown model suffix '{suffix}'",
                        hint=f"give one of {', '.join(MODEL_SUFFIXES)} or a student spec like 'mobilenetv2:width=0.5'")


def torch_file_kind(path: "str | Path") -> str | None:
    """'torchscript', 'export' (a torch.export archive) or 'torch' (any other torch.save zip:
    a checkpoint or a pickled module) by the archive's contents; None for a file that is no zip."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("archive_format") for n in names):
        return "export"
    return "torch"


# ------------------------------------------------------------------ files that hold code

TRUST_FLAG = "--trust-code"
_trust = {"on": False}
_made_here: set[str] = set()  # sha256 of TorchScript/.pt2 files this process wrote itself
_made_lock = threading.Lock()


@contextlib.contextmanager
def trust_code(enabled: bool = True) -> Iterator[None]:
    """Within the block, TorchScript and torch.export files may be run (the CLI's --trust-code).
    Process-wide, so that worker threads see it too; the previous setting comes back after."""
    before = _trust["on"]
    _trust["on"] = bool(enabled) or before
    try:
        yield
    finally:
        _trust["on"] = before


def code_trusted() -> bool:
    return _trust["on"]


def note_made_here(path: "str | Path") -> None:
    """Record that this process wrote ``path`` (a TorchScript/.pt2 file) from a module it held:
    those exact bytes may be loaded back without the opt-in."""
    from ..util_io import sha256_file

    with _made_lock:
        _made_here.add(sha256_file(path))


def may_run_code(path: "str | Path", trust: "bool | None" = None) -> bool:
    """Whether a TorchScript/.pt2 file may be run here: ``trust``, trust_code(), or bytes this
    process wrote itself (a remote run is then given --trust-code for it, too)."""
    from ..util_io import sha256_file

    if trust or code_trusted():
        return True
    with _made_lock:
        return bool(_made_here) and Path(path).is_file() and sha256_file(path) in _made_here


def require_code_trust(path: "str | Path", kind: str, trust: "bool | None" = None) -> None:
    """BadInputError (exit 2) unless running the ``kind`` ('torchscript' or 'export') file is
    allowed (``may_run_code``)."""
    if may_run_code(path, trust):
        return
    what = "TorchScript" if kind == "torchscript" else "a torch.export program"
    raise BadInputError(f"{path} is {what}: running it runs the code stored in it, which can read and "
                        f"write any file you can, so edgekd does not run it unless told to",
                        hint=f"pass {TRUST_FLAG} (alias --trust-pickle) if you trust the file (Python: "
                             f"with edgekd.trust_code(): ...), or give the model as .onnx or an edgekd "
                             f"checkpoint")


def stored_input_shape(path: "str | Path") -> tuple | None:
    """The per-sample input shape an edgekd checkpoint records; None for anything else."""
    p = Path(path)
    try:
        if torch_file_kind(p) in ("torchscript", "export"):
            return None  # no stored shape, and no second load
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = torch.load(str(p), map_location="cpu", weights_only=True)
        shape = meta.get("input_shape") if isinstance(meta, dict) else None
        return tuple(shape) if shape else None
    except Exception:  # noqa: BLE001 - not a checkpoint: no shape known
        return None


def load_torch_file(path: "str | Path", *, trust: "bool | None" = None):
    """A TorchScript archive, a torch.export .pt2 or an edgekd checkpoint -> (module, format).

    The kind comes from the file's contents (``torch_file_kind``); TorchScript and .pt2 hold
    code and need the opt-in (``require_code_trust``), a checkpoint is read weights-only."""
    import torch

    from ..util_io import check_file

    p = check_file(path, "torch model", TORCH_SUFFIXES)
    kind = torch_file_kind(p)
    if p.suffix.lower() in EXPORT_SUFFIXES or kind == "export":
        require_code_trust(p, "export", trust)
        try:
            return torch.export.load(str(p)).module(), EXPORTED_PROGRAM
        except Exception as exc:  # noqa: BLE001
            raise BadInputError(f"{p} is not a torch.export program ({str(exc).splitlines()[0][:160]})",
                                hint="save it with torch.export.save") from exc
    if kind == "torchscript":
        require_code_trust(p, "torchscript", trust)
        try:
            return torch.jit.load(str(p), map_location="cpu"), TORCHSCRIPT
        except Exception as exc:  # noqa: BLE001
            raise BadInputError(f"{p} is not loadable TorchScript ({str(exc).splitlines()[0][:120]})",
                                hint="save it again with torch.jit.save") from exc
    try:
        from .checkpoint import load_checkpoint

        module, _meta = load_checkpoint(p)
        return module, CHECKPOINT
    except Exception as exc:  # noqa: BLE001 - whatever torch.load says about a file of no known kind
        # torch's own words (inline_container.cc, unpickler internals) say nothing to a user
        why = exc.message if isinstance(exc, BadInputError) else "torch cannot read it: truncated, or not torch.save's"
        raise BadInputError(f"{p} is neither TorchScript nor an edgekd checkpoint ({why})",
                            hint="save TorchScript with torch.jit.save, or pass a model spec") from exc


def build_spec_model(spec: str, *, num_classes: int = 10, in_channels: int = 1):
    """The student a spec names, with weights from a fixed seed (eval mode).

    An untrained spec stands for an architecture; seeding makes its ONNX file and artifact
    hashes the same on every run, so baselines and profiles keyed by sha256 line up. The
    caller's global RNG state is left as it was.
    """
    import torch

    from . import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model(spec, num_classes=num_classes, in_channels=in_channels).eval()


def describe_shape(shape) -> str:
    return "(" + ", ".join("?" if not isinstance(d, int) else str(d) for d in shape) + ")"


def spec_module(spec: str, sample_shape=None, *, num_classes: int = 10, in_channels: int = 1):
    """(module, per-sample input shape) of a student spec; a ``sample_shape`` that contradicts
    the spec's own resolution is refused."""
    from . import input_shape

    module = build_spec_model(spec, num_classes=num_classes, in_channels=in_channels)
    shape = tuple(input_shape(spec, in_channels))
    if sample_shape and tuple(sample_shape) != shape:
        raise BadInputError(f"--shape {describe_shape(sample_shape)} contradicts the spec '{spec}', "
                            f"whose input is {describe_shape(shape)}", hint="set the spec's res knob instead")
    return module, shape


def load_module(ref: "str | ModelRef", sample_shape=None, *, num_classes: int = 10, in_channels: int = 1,
                what: str = "export", trust: "bool | None" = None):
    """(module in eval mode, per-sample input shape) for a spec or a torch file.

    A torch file's shape is ``sample_shape``, else what its checkpoint records; without either
    BadInputError asks for --shape. ONNX, IR and engine files are refused (no torch module).
    """
    r = ref if isinstance(ref, ModelRef) else parse_ref(ref)
    if r.kind == "spec":
        return spec_module(r.text, sample_shape, num_classes=num_classes, in_channels=in_channels)
    if r.kind != "torch":
        raise BadInputError(f"cannot {what} {r.path.name}: expected .onnx, a torch file "
                            f"({', '.join(TORCH_SUFFIXES)}) or a student spec")
    module, _ = load_torch_file(r.path, trust=trust)
    shape = sample_shape or stored_input_shape(r.path)
    if not shape:
        raise BadInputError(f"{what}ing {r.path.name} needs the input shape", hint="pass --shape C,H,W")
    return set_mode(module, False), tuple(shape)


def module_sha256(module) -> str:
    """A content hash of a module's parameters and buffers (names, shapes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        t = t.detach().cpu().contiguous()
        try:
            h.update(t.numpy().tobytes())
        except TypeError:  # a dtype numpy has no twin for (bfloat16): its raw bytes
            import torch

            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def set_mode(module, training: bool):
    """``module.train(training)``, returning the module; a torch.export program's module is a
    fixed graph that refuses a mode change (NotImplementedError in torch 2.13) and is left as
    it is."""
    try:
        module.train(training)
    except NotImplementedError:
        pass
    return module
