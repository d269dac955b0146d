"""A model reference deployed for a target: whatever the user names as MODEL (a file or a student
spec, told apart by edgekd.models.ref) built for the target's runtime and loaded.

    open_model(ref, target)           -> Opened: a ready Session, its Artifact, build/load times
    onnx_for_ref(ref, work_dir)       -> the hub ONNX file of a reference
    export_ref(ref, target, out_dir)  -> ExportResult: the target's artifact, parity-checked

This sits above export and the backends: it is the one place that turns a reference into
something a runtime runs, for bench, export, quantize, verify and the profiler.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .backends import backends, get_backend, require_backend
from .backends._common import check_input_shape, validate_onnx
from .backends.base import Artifact, ArtifactFormat, Backend, Session, side_files
from .errors import BadInputError
from .models.ref import (ONNX_SUFFIXES, TORCH_SUFFIXES, describe_shape, load_torch_file, parse_ref,
                         spec_module, stored_input_shape)
from .targets import Runtime, TargetSpec, list_targets


def native_backend(suffix: str) -> "Backend | None":
    """The backend whose own artifact a file with ``suffix`` is (.xml: openvino, .engine:
    tensorrt), or None for a file that any runtime builds from (ONNX, torch)."""
    for name in backends.names():
        backend = get_backend(name)
        if suffix.lower() in backend.native_suffixes:
            return backend
    return None



def check_ref_manifest(model_ref: "str | Path") -> "Path | None":
    """The one check of a model file against the compress output it sits in (bench, gate,
    export and verify call it before using the file): BadInputError (exit 2) when the file, or
    a side file it loads, no longer matches that output's manifest.json; a warning on stderr
    when it sits in a compress output without one. Returns the manifest used; None for a
    student spec or a file outside any compress output."""
    from .manifest import check_against_manifest

    ref = parse_ref(model_ref)
    if ref.path is None or not ref.path.is_file():
        return None
    return check_against_manifest(ref.path, side_files(ref.path))


@dataclass
class Opened:
    artifact: Artifact
    session: Session
    build_s: float
    first_load_s: float
    input_shape: tuple  # full batch shape fed to the session, e.g. (1, 1, 16, 16)
    module: object | None = None  # the torch module, when MODEL was a spec or a torch file


def open_model(model_ref: "str | Path", target: TargetSpec, work_dir: "Path | None" = None,
               sample_shape: "tuple | None" = None, *, num_classes: int = 10, in_channels: int = 1,
               calib=None) -> Opened:
    """Build (if needed) and load ``model_ref`` for ``target``.

    model_ref: .onnx (built for the target's runtime), OpenVINO .xml, TensorRT engine,
    TorchScript/.pt2/edgekd checkpoint, or a student spec ('family:k=v,...'). ``sample_shape``
    is the per-sample (C, H, W) shape, needed only when the model's input is dynamic.
    """
    backend = require_backend(target)
    ref = parse_ref(model_ref)
    if sample_shape is not None:
        sample_shape = tuple(int(d) for d in sample_shape)
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgekd-open-")
        work_dir = Path(tmp.name)
    work_dir = Path(work_dir)
    try:
        if ref.path is not None:
            return _open_file(ref.path, target, backend, work_dir, sample_shape, calib)
        return _open_spec(ref.text, target, backend, work_dir, sample_shape, num_classes, in_channels, calib)
    finally:
        if tmp is not None:
            tmp.cleanup()  # runtimes have read their files by the time the session exists


def _open_file(path: Path, target, backend, work_dir, sample_shape, calib) -> Opened:
    suffix = path.suffix.lower()
    native = native_backend(suffix)
    if native is not None and native.name != target.runtime.value:
        example = next((t.name for t in list_targets() if t.runtime.value == native.name), native.name)
        raise BadInputError(f"a {suffix} file runs on {native.name} targets, and target '{target.name}' is "
                            f"{target.runtime.value}", hint=f"use --target {example} (or another {native.name} target), or give the .onnx")
    t0 = time.perf_counter()
    module = None
    if suffix in TORCH_SUFFIXES:
        module, fmt = load_torch_file(path)
        if target.runtime == Runtime.torch:
            artifact = Artifact.from_file(path, fmt, target=target.name, precision=target.precision.value,
                                          tool_versions=backend.versions(), meta={"module": module})
        else:
            shape = sample_shape or target.input_shape or stored_input_shape(path)
            if not shape:
                raise BadInputError(f"exporting {path.name} to ONNX needs the input shape",
                                    hint="pass --shape C,H,W")
            import torch

            artifact = _build_module(backend, module, torch.zeros((target.batch, *shape)), target, work_dir,
                                     calib, name=path.name)
    elif suffix in ONNX_SUFFIXES and target.runtime == Runtime.onnxruntime and calib is None:
        validate_onnx(path)
        art = backend.build(path, target, work_dir) if target.is_int8 else None
        artifact = art or Artifact.from_file(path, ArtifactFormat.ONNX, target=target.name,
                                             precision=target.precision.value, tool_versions=backend.versions())
    elif suffix in ONNX_SUFFIXES and backend.builds_from == "torch":
        raise BadInputError(f"target '{target.name}' runs torch models, not ONNX ({path.name})",
                            hint="give the model spec, checkpoint or .pt2 file, or use --target ort-cpu "
                                 "or openvino-cpu for an .onnx file")
    elif native is not None:  # already the runtime's own artifact
        extra = tuple(p for p in side_files(path) if p.exists())
        artifact = Artifact.from_file(path, native.artifact_format, target=target.name,
                                      precision=target.precision.value, extra_paths=extra,
                                      tool_versions=backend.versions())
    else:
        artifact = backend.build(path, target, work_dir, calib=calib)
    build_s = time.perf_counter() - t0
    return _load(artifact, target, backend, build_s, sample_shape, module, source=str(path))


def _open_spec(spec: str, target, backend, work_dir, sample_shape, num_classes, in_channels, calib) -> Opened:
    import torch

    model, shape = spec_module(spec, sample_shape, num_classes=num_classes, in_channels=in_channels)
    t0 = time.perf_counter()
    artifact = _build_module(backend, model, torch.zeros((target.batch, *shape)), target, work_dir, calib,
                             name=spec, metadata={"edgekd.spec": getattr(model, "edgekd_spec", spec)})
    return _load(artifact, target, backend, time.perf_counter() - t0, shape, model, source=spec)


def open_module(module, target: TargetSpec, work_dir: Path, sample_shape: tuple, *, name: str = "model") -> Opened:
    """Build and load a torch module held in memory for ``target``, the way a spec is opened
    (_build_module): from the module itself where the runtime builds from torch, else through
    the hub ONNX file exported into ``work_dir``. ``sample_shape`` is the per-sample (C, H, W)."""
    import torch

    backend = require_backend(target)
    shape = tuple(int(d) for d in sample_shape)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    artifact = _build_module(backend, module.eval(), torch.zeros((target.batch, *shape)), target, work_dir, None,
                             name=name)
    return _load(artifact, target, backend, time.perf_counter() - t0, shape, module, source=name)


def _build_module(backend, module, sample, target, work_dir, calib, *, name: str, metadata=None):
    """A torch module as the target's artifact: built from the module itself by a runtime that
    builds from torch (``builds_from``), else from the hub ONNX file exported into ``work_dir``."""
    if backend.builds_from == "torch":
        return backend.build_module(module, sample, target, work_dir, calib=calib, name=name)
    from .export import export_onnx

    onnx_path = export_onnx(module, sample, work_dir / "model.onnx", metadata=metadata)
    return backend.build(onnx_path, target, work_dir, calib=calib)


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


def onnx_for_ref(model_ref: "str | Path", work_dir: "str | Path") -> Path:
    """The hub ONNX file of a reference: an .onnx path as is; an edgekd checkpoint (which records
    its input shape) exported to ONNX under ``work_dir``."""
    import numpy as np

    from .export import export_onnx
    from .models.checkpoint import load_checkpoint

    p = Path(model_ref)
    if not p.is_file():
        raise BadInputError(f"model file {model_ref} does not exist", hint="give an .onnx file or a .pt checkpoint")
    if p.suffix.lower() == ".onnx":
        return p
    if p.suffix.lower() not in (".pt", ".pth"):
        raise BadInputError(f"cannot quantize '{p.name}'", hint="give an .onnx file or an edgekd .pt checkpoint")
    module, meta = load_checkpoint(p)
    shape = tuple(meta.get("input_shape") or ())
    if len(shape) != 3:
        raise BadInputError(f"checkpoint {p} does not record its input shape (C, H, W)",
                            hint="export it with `edgekd export` and quantize the .onnx file")
    out = Path(work_dir) / f"{p.stem}.onnx"
    export_onnx(module, np.zeros((1, *shape), np.float32), out,
                metadata={"edgekd.spec": str(meta.get("spec", ""))})
    return out


@dataclass
class ExportResult:
    """What export_ref wrote: the target's artifact (paths under the output directory), the
    parity report (None when the artifact is the ONNX file itself) and the input shape."""

    model: str
    target: TargetSpec
    artifact: Artifact
    parity: object | None
    input_shape: tuple
    out: Path

    @property
    def parity_reference(self) -> str | None:
        if self.parity is None:
            return None
        return "onnxruntime" if Path(self.model).suffix.lower() == ".onnx" else "torch"

    def to_dict(self) -> dict:
        from .util_io import sha256_file

        moved = lambda p: self.out / Path(p).name  # noqa: E731 - the artifact moved with its folder
        files = [{"path": str(f), "sha256": sha256_file(f)} for f in sorted(self.out.iterdir()) if f.is_file()]
        onnx = self.out / "model.onnx"
        a, t = self.artifact, self.target
        return {"model": self.model, "target": t.name, "runtime": t.runtime.value,
                "precision": t.precision.value, "format": a.format,
                "path": str(moved(a.path)), "extra_paths": [str(moved(p)) for p in a.extra_paths],
                "sha256": a.sha256, "onnx": str(onnx) if onnx.exists() else None,
                "onnx_sha256": sha256_file(onnx) if onnx.exists() else None,
                "input_shape": list(self.input_shape), "files": files,
                "parity": self.parity.to_dict() if self.parity else None,
                "parity_reference": self.parity_reference, "tool_versions": dict(a.tool_versions)}


def export_ref(model_ref: str, target: TargetSpec, out_dir: "str | Path", *, sample_shape=None,
               opset: int | None = None, dynamic_batch: bool = False, num_classes: int = 10,
               in_channels: int = 1) -> ExportResult:
    """Export a reference for ``target`` into ``out_dir`` (new or empty): the hub ONNX file
    (model.onnx) and the target's artifact, loaded back and checked for parity on 16 seeded
    random inputs (against torch; against onnxruntime for an .onnx reference). Everything is
    written in a staging folder beside ``out_dir`` and renamed into place only when it all
    succeeded; on failure the folders this call created are removed again."""
    import shutil

    require_backend(target)
    check_ref_manifest(model_ref)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInputError(f"output directory {out} is not empty", hint="choose a new --out or empty it")
    parent = out.absolute().parent
    made = [d for d in (parent, *parent.parents) if not d.exists()]  # removed again on failure
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(parent)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=str(parent)))
    try:
        if Path(model_ref).suffix.lower() == ".onnx":
            artifact, parity, input_shape = _export_onnx_file(Path(model_ref), target, staging, sample_shape)
        else:
            artifact, parity, input_shape = _export_module(model_ref, target, staging, sample_shape, opset,
                                                           dynamic_batch, num_classes, in_channels)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for d in made:  # deepest first; only directories this call created, if still empty
            try:
                d.rmdir()
            except OSError:
                break
        raise
    return ExportResult(model=str(model_ref), target=target, artifact=artifact, parity=parity,
                        input_shape=tuple(input_shape), out=out)


STAGING_PREFIX = ".edgekd-export-"


def clean_stale_staging(parent: Path) -> list[Path]:
    """Remove the staging folders (.edgekd-export-PID-*) that a killed export left in ``parent``:
    those of processes no longer running (an unnamed one once it is an hour old). Returns them."""
    import shutil

    gone = []
    for d in parent.glob(f"{STAGING_PREFIX}*"):
        if not d.is_dir():
            continue
        pid = d.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit():
            try:
                os.kill(int(pid), 0)
                continue  # that export is still running
            except ProcessLookupError:
                pass
            except OSError:
                continue  # alive, another user's
        elif time.time() - d.stat().st_mtime < 3600:
            continue
        shutil.rmtree(d, ignore_errors=True)
        gone.append(d)
    return gone


def _export_module(model_ref, target, staging, sample_shape, opset, dynamic_batch, num_classes, in_channels):
    import torch

    from .export import MIN_OPSET, export_for_target
    from .models.ref import load_module

    module, per_sample = load_module(model_ref, sample_shape, num_classes=num_classes, in_channels=in_channels)
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn((target.batch, *per_sample), generator=gen)
    parity_x = torch.randn((16, *per_sample), generator=gen)  # run_batched copes with a fixed batch
    artifact, parity = export_for_target(module, sample, target, staging, opset=opset or MIN_OPSET,
                                         dynamic_batch=dynamic_batch, parity_samples=parity_x,
                                         metadata={"edgekd.spec": getattr(module, "edgekd_spec", "")})
    return artifact, parity, tuple(sample.shape)


def _export_onnx_file(path: Path, target: TargetSpec, staging: Path, sample_shape):
    """An .onnx MODEL: copied as the hub, built for the target, checked against onnxruntime."""
    import shutil

    import numpy as np

    from .backends.onnxruntime import OrtSession
    from .export import check_parity
    from .targets import Precision

    validate_onnx(path)
    opened = open_model(path, target, work_dir=staging, sample_shape=sample_shape)
    hub = staging / "model.onnx"
    if not hub.exists():
        shutil.copyfile(path, hub)
    if Path(opened.artifact.path).resolve() == path.resolve():  # runs as is: the hub copy is the artifact
        a = opened.artifact
        opened.artifact = type(a).from_file(hub, a.format, target=a.target, precision=a.precision,
                                            tool_versions=a.tool_versions)
    parity = None
    try:
        if target.runtime != Runtime.onnxruntime:
            ref = OrtSession(hub, TargetSpec(name="reference", runtime="onnxruntime", threads=1))
            x = np.random.default_rng(0).standard_normal((16, *opened.input_shape[1:])).astype(np.float32)
            exact = target.precision == Precision.fp32
            parity = check_parity(ref, opened.session, x, check_values=exact, min_top1=0.99 if exact else 0.9)
    finally:
        opened.session.close()
    return opened.artifact, parity, tuple(opened.input_shape)
