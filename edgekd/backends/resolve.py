"""open_model: whatever the user names as MODEL (a file or a student spec) -> a ready Session
for a target, with the artifact it runs and how long building and loading took."""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInputError
from ..targets import Runtime, TargetSpec
from ._common import check_input_shape, describe_shape
from .base import Artifact, ArtifactFormat, Session

ONNX_SUFFIXES = (".onnx",)
IR_SUFFIXES = (".xml",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".pt2")
MODEL_SUFFIXES = ONNX_SUFFIXES + IR_SUFFIXES + ENGINE_SUFFIXES + TORCH_SUFFIXES

# Which target runtime each file kind needs, for the error that says which target to use.
_NEEDS = {IR_SUFFIXES: (Runtime.openvino, "openvino-cpu"), ENGINE_SUFFIXES: (Runtime.tensorrt, "tensorrt-fp16")}


@dataclass
class Opened:
    artifact: Artifact
    session: Session
    build_s: float
    first_load_s: float
    input_shape: tuple  # full batch shape fed to the session, e.g. (1, 1, 16, 16)
    module: object | None = None  # the torch module, when MODEL was a spec or a torch file


def _looks_like_path(ref: str) -> bool:
    p = Path(ref)
    return p.suffix.lower() in MODEL_SUFFIXES or p.exists() or "/" in ref or "\\" in ref


def open_model(model_ref: "str | Path", target: TargetSpec, work_dir: "Path | None" = None,
               sample_shape: "tuple | None" = None, *, num_classes: int = 10, in_channels: int = 1,
               calib=None) -> Opened:
    """Build (if needed) and load ``model_ref`` for ``target``.

    model_ref: .onnx (built for the target's runtime), OpenVINO .xml, TensorRT engine,
    TorchScript/.pt2/edgekd checkpoint, or a student spec ('family:k=v,...'). ``sample_shape``
    is the per-sample (C, H, W) shape, needed only when the model's input is dynamic.
    """
    from . import require_backend

    backend = require_backend(target)
    ref = str(model_ref)
    if sample_shape is not None:
        sample_shape = tuple(int(d) for d in sample_shape)
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgekd-open-")
        work_dir = Path(tmp.name)
    work_dir = Path(work_dir)
    try:
        if _looks_like_path(ref):
            return _open_file(Path(ref), target, backend, work_dir, sample_shape, calib)
        return _open_spec(ref, target, backend, work_dir, sample_shape, num_classes, in_channels, calib)
    finally:
        if tmp is not None:
            tmp.cleanup()  # runtimes have read their files by the time the session exists


def _open_file(path: Path, target, backend, work_dir, sample_shape, calib) -> Opened:
    suffix = path.suffix.lower()
    if not path.exists():
        raise BadInputError(f"model file {path} does not exist", hint="check the path")
    if suffix not in MODEL_SUFFIXES:
        raise BadInputError(f"{path} has an unknown model suffix '{suffix}'",
                            hint=f"give one of {', '.join(MODEL_SUFFIXES)} or a student spec like 'mobilenetv2:width=0.5'")
    for suffixes, (runtime, example) in _NEEDS.items():
        if suffix in suffixes and target.runtime != runtime:
            raise BadInputError(f"a {suffix} file runs on {runtime.value} targets, and target '{target.name}' is "
                                f"{target.runtime.value}", hint=f"use --target {example} (or another {runtime.value} target), or give the .onnx")
    t0 = time.perf_counter()
    module = None
    if suffix in TORCH_SUFFIXES:
        from .torch import TorchBackend, load_torch_file

        module, fmt = load_torch_file(path)
        if target.runtime == Runtime.torch:
            artifact = Artifact.from_file(path, fmt, target=target.name, precision=target.precision.value,
                                          tool_versions=backend.versions(), meta={"module": module})
        else:
            shape = sample_shape or target.input_shape or _checkpoint_shape(path)
            if not shape:
                raise BadInputError(f"exporting {path.name} to ONNX needs the input shape",
                                    hint="pass --shape C,H,W")
            from ..export import export_onnx
            import torch

            onnx_path = export_onnx(module, torch.zeros((target.batch, *shape)), work_dir / "model.onnx")
            artifact = backend.build(onnx_path, target, work_dir, calib=calib)
    elif suffix in ONNX_SUFFIXES and target.runtime == Runtime.onnxruntime and calib is None:
        from ._common import validate_onnx

        validate_onnx(path)
        art = backend.build(path, target, work_dir) if target.is_int8 else None
        artifact = art or Artifact.from_file(path, ArtifactFormat.ONNX, target=target.name,
                                             precision=target.precision.value, tool_versions=backend.versions())
    elif suffix in ONNX_SUFFIXES and target.runtime == Runtime.torch:
        raise BadInputError(f"target '{target.name}' runs torch models, not ONNX ({path.name})",
                            hint="use --target ort-cpu or openvino-cpu for an .onnx file")
    elif suffix in IR_SUFFIXES + ENGINE_SUFFIXES:
        fmt = ArtifactFormat.OPENVINO_IR if suffix in IR_SUFFIXES else ArtifactFormat.TENSORRT_ENGINE
        extra = (path.with_suffix(".bin"),) if suffix in IR_SUFFIXES and path.with_suffix(".bin").exists() else ()
        artifact = Artifact.from_file(path, fmt, target=target.name, precision=target.precision.value,
                                      extra_paths=extra, tool_versions=backend.versions())
    else:
        artifact = backend.build(path, target, work_dir, calib=calib)
    build_s = time.perf_counter() - t0
    return _load(artifact, target, backend, build_s, sample_shape, module, source=str(path))


def _checkpoint_shape(path: Path):
    import warnings
    import zipfile

    try:
        import torch

        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                if any("/code/" in n or n.endswith("constants.pkl") for n in z.namelist()):
                    return None  # TorchScript (or .pt2): no stored shape, and no second load
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = torch.load(str(path), map_location="cpu", weights_only=True)
        shape = meta.get("input_shape") if isinstance(meta, dict) else None
        return tuple(shape) if shape else None
    except Exception:  # noqa: BLE001 - not a checkpoint: no shape known
        return None


def build_spec_model(spec: str, *, num_classes: int = 10, in_channels: int = 1):
    """The student a spec names, with weights from a fixed seed (eval mode).

    An untrained spec stands for an architecture; seeding makes its ONNX file and artifact
    hashes the same on every run, so baselines and profiles keyed by sha256 line up. The
    caller's global RNG state is left as it was.
    """
    import torch

    from ..models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model(spec, num_classes=num_classes, in_channels=in_channels).eval()


def _open_spec(spec: str, target, backend, work_dir, sample_shape, num_classes, in_channels, calib) -> Opened:
    import torch

    from ..models import input_shape

    model = build_spec_model(spec, num_classes=num_classes, in_channels=in_channels)
    shape = tuple(input_shape(spec, in_channels))
    if sample_shape and tuple(sample_shape) != shape:
        raise BadInputError(f"--shape {describe_shape(sample_shape)} contradicts the spec '{spec}', "
                            f"whose input is {describe_shape(shape)}", hint="set the spec's res knob instead")
    t0 = time.perf_counter()
    if target.runtime == Runtime.torch:
        from .torch import TorchBackend

        artifact = TorchBackend.artifact_for_module(model, target, input_shape=(target.batch, *shape), name=spec)
    else:
        from ..export import export_onnx

        onnx_path = export_onnx(model, torch.zeros((target.batch, *shape)), work_dir / "model.onnx",
                                metadata={"edgekd.spec": getattr(model, "edgekd_spec", spec)})
        artifact = backend.build(onnx_path, target, work_dir, calib=calib)
    return _load(artifact, target, backend, time.perf_counter() - t0, shape, model, source=spec)


def _load(artifact, target, backend, build_s, sample_shape, module, source: str = "") -> Opened:
    """Load, then settle the input shape; messages name ``source`` (what the user gave)."""
    t0 = time.perf_counter()
    session = backend.load(artifact, target)
    load_s = time.perf_counter() - t0
    declared = list((getattr(session, "input_shapes", None) or [None])[0] or [])
    full = _full_shape(declared, target, sample_shape, source or str(artifact.path))
    if declared:
        check_input_shape(session.input_names[0], declared, full, source or str(artifact.path))
    return Opened(artifact=artifact, session=session, build_s=build_s, first_load_s=load_s,
                  input_shape=full, module=module)


def _full_shape(declared: list, target: TargetSpec, sample_shape, source: str) -> tuple:
    per_sample = tuple(sample_shape) if sample_shape else (tuple(target.input_shape) if target.input_shape else None)
    if per_sample is None:
        rest = declared[1:]
        if not declared or any(not isinstance(d, int) or d <= 0 for d in rest):
            raise BadInputError(f"the input of {source} has dynamic dimensions "
                                f"{describe_shape(declared)}", hint="pass --shape C,H,W")
        per_sample = tuple(rest)
    batch = declared[0] if declared and isinstance(declared[0], int) and declared[0] > 0 else target.batch
    if batch != target.batch:
        raise BadInputError(f"the model has a fixed batch of {batch}, target '{target.name}' wants batch {target.batch}",
                            hint="re-export with --dynamic-batch or use a target with the model's batch")
    return (batch, *per_sample)
