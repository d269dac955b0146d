"""INT8 post-training quantization: the algorithm, written once for every runtime.

    quantize_for_target(onnx, target, out_dir, calib)  -> Artifact      (quantize only)
    quantize_model(onnx, target, out_dir, calib, (x, y)) -> QuantReport (quantize, compare, keep)

How a runtime quantizes is its backend's business (Backend.quantize: ONNX Runtime's static QDQ,
NNCF for OpenVINO, the symmetric QDQ file TensorRT consumes); this package decides what to keep.
An INT8 model that is not faster than the fp32 model on the same runtime (p50 ratio >= 1.0) is
not kept unless ``force=True``: quantize_model raises VerdictError with both numbers.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..backends import get_backend, require_backend
from ..backends.base import Artifact
from ..errors import BadInputError, VerdictError
from ..targets import TargetSpec, int8_target_names, load_target
from ..util_io import atomic_write_json
from .evaluate import QuantReport, SideResult, compare

__all__ = ["quantize_for_target", "quantize_model", "quantize_ref", "quantize_source", "quantization_data", "require_int8_target", "check_runtime",
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
    """BadInputError when the target's runtime has no INT8 quantizer; RuntimeMissingError (exit 4)
    naming the package when its quantizer, or (``evaluate``) its runtime, is not here."""
    get_backend(target.runtime).check_quantizer(target)
    if evaluate:
        require_backend(target)


def quantize_source(target: TargetSpec, onnx_path: "str | Path", torch_path: "str | Path") -> Path:
    """The file the target's quantizer reads: the torch file (checkpoint) for a runtime that builds
    from torch (``builds_from``: ExecuTorch quantizes the module itself), else the hub ONNX file."""
    return Path(torch_path if get_backend(target.runtime).builds_from == "torch" else onnx_path)


def quantize_for_target(onnx_path: "str | Path", target: "str | TargetSpec", out_dir: "str | Path",
                        calib: "Iterable[np.ndarray]", **opts: Any) -> Artifact:
    """Quantize ``onnx_path`` for an int8 ``target`` through its backend; the Artifact lands under
    ``out_dir``. Options (``method``, ``per_channel``, ``preset``, ``subset_size``, ``max_drop``,
    ``val_data``, ``val_fn``, ``name``) go to the backend, which uses those it knows."""
    spec = require_int8_target(target)
    return get_backend(spec.runtime).quantize(Path(onnx_path), spec, Path(out_dir), calib, **opts)


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
        if max_drop is not None:  # a quantizer with accuracy control (NNCF) holds to it; others ignore it
            opts.setdefault("val_data", (x_val, y_val))
        art = quantize_for_target(onnx_path, spec, stage / "int8", calib, method=method,
                                  max_drop=max_drop, **opts)
        report = compared(onnx_path, art, spec, x_val, y_val, stage / "fp32",
                          method=_method_label(spec, method, opts),
                          calib_samples=int(sum(len(b) for b in calib)), force=force,
                          settings=settings, rounds=rounds)
        keep_or_refuse(report, report, art, out_dir, max_drop=max_drop, force=force)
    return report


def compared(fp32_source: "str | Path", art: Artifact, spec: TargetSpec, x_val: np.ndarray,
             y_val: np.ndarray, fp32_dir: Path, *, method: str, calib_samples: int, force: bool,
             settings=None, rounds: int = 3) -> QuantReport:
    """The INT8 artifact against fp32, both through the runtime (evaluate.compare), as a
    QuantReport noting a side whose latency was unstable; PTQ and QAD both judge through it."""
    fp32, int8 = compare(fp32_source, art, spec, x_val, y_val, fp32_dir, settings=settings,
                         rounds=rounds)
    report = QuantReport(target=spec.name, method=method, calib_samples=calib_samples, fp32=fp32,
                         int8=int8, forced=force, val_samples=len(x_val))
    for side in (fp32, int8):
        if side.stats is not None and side.stats.unstable:
            report.notes.append(f"{side.target} latency was unstable (IQR/median "
                                f"{side.stats.iqr_over_median:.2f}); rerun on a quieter machine")
    return report


def keep_or_refuse(report, final: QuantReport, staged: Artifact, out_dir: Path, *,
                   max_drop: float | None, force: bool) -> None:
    """The one keep rule for PTQ and QAD: ``final`` (the side chosen) not faster than fp32 or
    over ``max_drop`` raises VerdictError with ``report`` attached, unless ``force``; else its
    ``staged`` artifact moves into ``out_dir`` and ``report`` lands beside it as
    ``<stem>.int8.quant.json``. ``report`` is ``final`` itself, or a report holding it (QAD)."""
    problems = _problems(final, max_drop)
    if problems and not force:
        err = VerdictError(f"{'; '.join(problems)}; the INT8 model was not kept",
                           hint="pass --keep-slower (alias --force; force=True) to keep it anyway")
        err.report = report
        raise err
    report.notes.extend(problems)
    final.artifact = report.artifact = _move_into(staged, out_dir)
    final.kept = report.kept = True
    atomic_write_json(out_dir / f"{final.artifact.path.name.split('.int8')[0]}.int8.quant.json",
                      report.to_dict())


def _method_label(spec: TargetSpec, method: str, opts: dict) -> str:
    if spec.runtime.value == "openvino":
        return f"nncf:{opts.get('preset', 'performance')},{method}"
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


def _onnx_classes(onnx_path: "str | Path") -> "int | None":
    """The static width of an ONNX classifier's first output (its class count), else None."""
    import onnx

    dims = onnx.load(str(onnx_path), load_external_data=False).graph.output[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value) if len(dims) >= 2 and dims[-1].dim_value > 0 else None


def quantization_data(spec: str, onnx_path: "str | Path", calib_size: int, val_size: "int | None",
                      seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(calibration batches, x_val, y_val) from a data spec, at the ONNX model's resolution:
    ``calib_size`` training samples and at most ``val_size`` labelled validation samples."""
    from ..accuracy import check_fits_data
    from ..backends.calib import onnx_input_info
    from ..data import calibration_from_dataset, dataset_arrays, load_data

    _, shape = onnx_input_info(onnx_path)
    res = shape[-1] if len(shape) == 4 and shape[-1] else None
    bundle = load_data(spec, resolution=res) if res else load_data(spec)
    check_fits_data(Path(onnx_path).name, bundle.name, bundle.num_classes, sample_shape=bundle.input_shape,
                    model_shape=shape[1:], outputs=_onnx_classes(onnx_path))
    calib = calibration_from_dataset(bundle.train, calib_size, batch_size=32, seed=seed)
    if not calib or sum(len(b) for b in calib) == 0:
        raise BadInputError(f"calibration set is empty (--calib-size {calib_size}, "
                            f"{len(bundle.train)} training samples in '{spec}')",
                            hint="use --calib-size of at least 1 and data with training samples")
    x_val, y_val = dataset_arrays(bundle.val, val_size, seed=seed)
    if len(x_val) == 0:
        raise BadInputError(f"'{spec}' has no labelled validation samples",
                            hint="give data with a validation split")
    return calib, x_val, y_val


def quantize_ref(model_ref: "str | Path", target: TargetSpec, data_spec: str, out_dir: "str | Path", *,
                 calib_size: int = 300, val_size: "int | None" = None, seed: int = 0,
                 method: str = "minmax", preset: str = "performance", max_drop: float | None = None,
                 force: bool = False, rounds: int = 3) -> QuantReport:
    """`edgekd quantize`: a model reference (an .onnx file or an edgekd checkpoint) quantized for
    an int8 ``target`` on data from ``data_spec``, compared with fp32, kept only if it pays.
    A runtime that builds from torch (``builds_from == "torch"``) is given the checkpoint."""
    spec = require_int8_target(target)
    check_runtime(spec, evaluate=True)
    if calib_size < 0:
        raise BadInputError(f"--calib-size {calib_size} must be positive")
    if max_drop is not None and not 0.0 <= max_drop < 1.0:
        raise BadInputError(f"--max-drop {max_drop} must be in [0, 1) (0.01 = one point)")
    if rounds < 1:
        raise BadInputError(f"--rounds {rounds} must be at least 1")
    from ..deploy import check_ref_manifest, onnx_for_ref

    check_ref_manifest(model_ref)  # a file from a compress output must still match its manifest
    made = not Path(out_dir).exists()
    with tempfile.TemporaryDirectory(prefix="edgekd-quantize-") as tmp:
        onnx_path = onnx_for_ref(model_ref, Path(tmp))
        calib, x_val, y_val = quantization_data(data_spec, onnx_path, calib_size, val_size, seed)
        source = quantize_source(spec, onnx_path, model_ref)
        try:
            return quantize_model(source, spec, out_dir, calib, (x_val, y_val), method=method,
                                  max_drop=max_drop, force=force, rounds=rounds, preset=preset)
        except BaseException:
            if made and Path(out_dir).is_dir() and not any(Path(out_dir).iterdir()):
                Path(out_dir).rmdir()  # a refused INT8 model leaves no empty --out behind
            raise
