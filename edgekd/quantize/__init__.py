"""INT8 post-training quantization, one front door per target runtime.

    quantize_for_target(onnx, target, out_dir, calib)  -> Artifact      (quantize only)
    quantize_model(onnx, target, out_dir, calib, (x, y)) -> QuantReport (quantize, compare, keep)

ONNX Runtime: static QDQ INT8 (ort.py). OpenVINO: NNCF (nncf_ov.py). TensorRT: the QDQ ONNX file
TensorRT's explicit quantization consumes (tensorrt.py); the engine is the tensorrt backend's job.
Each runtime's quantizer is imported inside its branch, so importing this package is cheap.

An INT8 model that is not faster than the fp32 model on the same runtime (p50 ratio >= 1.0) is
not kept unless ``force=True``: quantize_model raises VerdictError with both numbers.
"""
from __future__ import annotations

import importlib.util
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import BadInputError, VerdictError, missing_package
from ..targets import TargetSpec, load_target
from .evaluate import QuantReport, SideResult, int8_target_names

__all__ = ["quantize_for_target", "quantize_model", "require_int8_target", "check_runtime",
           "QuantReport", "SideResult", "int8_target_names"]


def require_int8_target(target: "str | TargetSpec") -> TargetSpec:
    """The target, or BadInputError (exit 2) naming the int8 targets that exist."""
    spec = load_target(target)
    if not spec.is_int8:
        names = ", ".join(int8_target_names()) or "none"
        raise BadInputError(f"target '{spec.name}' is {spec.precision.value}, not int8",
                            hint=f"quantize for an int8 target: {names}")
    return spec


def check_runtime(target: TargetSpec, *, evaluate: bool = True) -> None:
    """RuntimeMissingError (exit 4) naming the package when the target's runtime is not here."""
    rt = target.runtime.value
    need = {"onnxruntime": [("onnxruntime", None)],
            "openvino": [("openvino", "openvino"), ("nncf", "openvino")],
            "tensorrt": [("onnxruntime", None)] + ([("tensorrt", "tensorrt")] if evaluate else [])}
    if rt not in need:
        raise BadInputError(f"target '{target.name}' uses runtime '{rt}', which has no int8 quantizer",
                            hint=f"use one of: {', '.join(int8_target_names())}")
    for pkg, extra in need[rt]:
        if importlib.util.find_spec(pkg) is None:
            raise missing_package(pkg, extra=extra, what=f"target '{target.name}'")
    if evaluate and rt == "tensorrt":
        from ..backends import require_backend

        require_backend(target)


def _version(pkg: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return ""


def quantize_for_target(onnx_path: "str | Path", target: "str | TargetSpec", out_dir: "str | Path",
                        calib: "Iterable[np.ndarray]", *, method: str = "minmax",
                        per_channel: bool = True, preset: str = "performance",
                        subset_size: int = 300, max_drop: float | None = None,
                        val_data: Any = None, val_fn: Any = None, name: str | None = None):
    """Quantize ``onnx_path`` for an int8 ``target``; the Artifact lands under ``out_dir``.

    onnxruntime: ``method``/``per_channel`` apply. openvino: ``preset``, ``subset_size`` and, with
    ``max_drop``, accuracy control on ``val_data``/``val_fn``. tensorrt: a QDQ ONNX model with
    symmetric int8 activations (the engine is built by the tensorrt backend from it).
    """
    from ..backends.base import Artifact, ArtifactFormat

    spec = require_int8_target(target)
    check_runtime(spec, evaluate=False)
    src = Path(onnx_path)
    if not src.is_file():
        raise BadInputError(f"ONNX model {src} does not exist", hint="check the path")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    calib = list(calib) if not isinstance(calib, (list, tuple)) else calib
    stem = name or src.stem
    n_calib = int(sum(len(np.asarray(b)) for b in calib))
    t0 = time.perf_counter()
    rt = spec.runtime.value
    if rt == "onnxruntime":
        from .ort import default_activation_type, quantize_onnx_static

        act = default_activation_type()
        path = quantize_onnx_static(src, out_dir / f"{stem}.int8.onnx", calib, method=method,
                                    per_channel=per_channel, activation_type=act)
        return Artifact.from_file(
            path, ArtifactFormat.ONNX, target=spec.name, precision="int8",
            tool_versions={"onnxruntime": _version("onnxruntime")}, build_s=time.perf_counter() - t0,
            meta={"quantizer": "onnxruntime.quantize_static", "format": "QDQ", "method": method,
                  "activation_type": act, "weight_type": "int8",
                  "per_channel": per_channel, "calib_samples": n_calib, "source": str(src)})
    if rt == "openvino":
        from .nncf_ov import quantize_openvino

        xml = quantize_openvino(src, out_dir / f"{stem}.int8.xml", calib, preset=preset,
                                subset_size=subset_size, max_drop=max_drop, val_data=val_data,
                                val_fn=val_fn)
        return Artifact.from_file(
            xml, ArtifactFormat.OPENVINO_IR, target=spec.name, precision="int8",
            extra_paths=(xml.with_suffix(".bin"),),
            tool_versions={"openvino": _version("openvino"), "nncf": _version("nncf")},
            build_s=time.perf_counter() - t0,
            meta={"quantizer": "nncf.quantize_with_accuracy_control" if max_drop is not None
                  else "nncf.quantize", "preset": preset, "subset_size": subset_size,
                  "max_drop": max_drop, "calib_samples": n_calib, "source": str(src)})
    # tensorrt (check_runtime rejected anything else)
    from .tensorrt import quantize_for_tensorrt

    path = quantize_for_tensorrt(src, out_dir / f"{stem}.int8.qdq.onnx", calib, method=method,
                                 per_channel=per_channel)
    return Artifact.from_file(
        path, ArtifactFormat.ONNX, target=spec.name, precision="int8",
        tool_versions={"onnxruntime": _version("onnxruntime")}, build_s=time.perf_counter() - t0,
        meta={"quantizer": "onnxruntime.quantize_static", "format": "QDQ", "consumer": "tensorrt",
              "method": method, "activation_type": "int8", "symmetric_activations": True,
              "calib_samples": n_calib, "source": str(src)})


def _move_into(artifact, dest_dir: Path):
    """Move a staged artifact's files into dest_dir (.xml last), return the moved Artifact."""
    moved = {}
    for p in sorted(artifact.paths, key=lambda q: q.suffix == ".xml"):
        moved[p] = dest_dir / p.name
        os.replace(p, moved[p])
    return replace(artifact, path=moved[artifact.path],
                   extra_paths=tuple(moved[p] for p in artifact.extra_paths))


def quantize_model(onnx_path: "str | Path", target: "str | TargetSpec", out_dir: "str | Path",
                   calib: "Iterable[np.ndarray]", val: "tuple[np.ndarray, np.ndarray]", *,
                   method: str = "minmax", max_drop: float | None = None, force: bool = False,
                   rounds: int = 3, settings=None, **opts) -> QuantReport:
    """Quantize, then compare with fp32 through the runtime; keep the INT8 model only if it pays.

    ``val``: (x, y) numpy arrays. Not faster (int8 p50 / fp32 p50 >= 1.0), or an accuracy drop
    above ``max_drop``, raises VerdictError (its ``report`` attribute holds the QuantReport) and
    nothing is written to ``out_dir``, unless ``force``. The report JSON is written next to the
    kept artifact as ``<stem>.int8.quant.json``.
    """
    from ..util_io import atomic_write_json
    from .evaluate import compare

    spec = require_int8_target(target)
    check_runtime(spec, evaluate=True)
    x_val, y_val = (np.asarray(val[0], dtype=np.float32), np.asarray(val[1]))
    if len(x_val) == 0:
        raise BadInputError("validation data is empty", hint="give a data spec with a validation split")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    calib = list(calib) if not isinstance(calib, (list, tuple)) else calib
    with tempfile.TemporaryDirectory(prefix=".edgekd-quant-", dir=out_dir) as staging:
        stage = Path(staging)
        if spec.runtime.value == "openvino" and max_drop is not None:
            opts.setdefault("val_data", (x_val, y_val))
        art = quantize_for_target(onnx_path, spec, stage / "int8", calib, method=method,
                                  max_drop=max_drop, **opts)
        fp32, int8 = compare(onnx_path, art, spec, x_val, y_val, stage / "fp32", settings=settings,
                             rounds=rounds)
        report = QuantReport(target=spec.name, method=_method_label(spec, method, opts),
                             calib_samples=int(sum(len(b) for b in calib)), fp32=fp32, int8=int8,
                             forced=force, val_samples=len(x_val))
        problems = _problems(report, max_drop)
        for side in (fp32, int8):
            if side.stats is not None and side.stats.unstable:
                report.notes.append(f"{side.target} latency was unstable (IQR/median "
                                    f"{side.stats.iqr_over_median:.2f}); rerun on a quieter machine")
        if problems and not force:
            err = VerdictError(f"{'; '.join(problems)}; the INT8 model was not kept",
                               hint="pass --force (force=True) to keep it anyway")
            err.report = report
            raise err
        report.notes.extend(problems)
        report.artifact = _move_into(art, out_dir)
        report.kept = True
    atomic_write_json(out_dir / f"{report.artifact.path.name.split('.int8')[0]}.int8.quant.json",
                      report.to_dict())
    return report


def _method_label(spec: TargetSpec, method: str, opts: dict) -> str:
    if spec.runtime.value == "openvino":
        return f"nncf:{opts.get('preset', 'performance')}"
    return method


def _problems(report: QuantReport, max_drop: float | None) -> list[str]:
    out = []
    ratio = report.p50_ratio
    if not math.isnan(ratio) and ratio >= 1.0:
        out.append(f"INT8 is not faster on {report.target}: p50 {report.int8.p50:.4f} ms vs "
                   f"{report.fp32.p50:.4f} ms fp32 on {report.fp32.target} (ratio {ratio:.2f}); "
                   f"p90 {report.int8.p90:.4f} vs {report.fp32.p90:.4f} ms")
    drop = report.accuracy_drop
    if max_drop is not None and drop is not None and drop > max_drop + 1e-12:
        out.append(f"accuracy dropped {drop * 100:.2f} points ({report.fp32.accuracy:.4f} -> "
                   f"{report.int8.accuracy:.4f}), more than --max-drop {max_drop}")
    return out
