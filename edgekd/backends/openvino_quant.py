"""INT8 post-training quantization for OpenVINO with NNCF.

The model (ONNX or OpenVINO IR) is read as an ``openvino.Model``; ``nncf.quantize`` inserts
FakeQuantize operations from calibration statistics, or ``nncf.quantize_with_accuracy_control``
does that and then reverts the layers that cost most accuracy until the drop is within
``max_drop``. The IR (.xml + .bin) is written atomically: both files land under temporary names
next to the destination, the .bin is renamed first and the .xml last, so an .xml that exists
always has its complete .bin.
"""
from __future__ import annotations

import contextlib
import logging
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import BadInputError, EdgeKDError, missing_package
from ._common import fix_openvino_batch, import_openvino
from .calib import check_calibration, split_to_batch

log = logging.getLogger(__name__)

PRESETS = ("performance", "mixed")
# How activation ranges are read from the calibration data (``ranges``):
#   minmax       the least and the largest value over every calibration sample, the statistic ONNX
#                Runtime's minmax calibration takes: the same ranges whatever batch the model was
#                exported with;
#   mean-minmax  NNCF's own default: the mean, over the calibration items NNCF is fed, of each
#                item's least and largest value. An item is one batch of the model's input, so a
#                model exported for batch 1 (what edgekd exports for a target) gets the mean of
#                per-sample extremes: ranges 1.3-1.8x narrower than the data on linear
#                (un-activated) outputs, which clip. Measured in BENCHMARKS.md ("NNCF's activation
#                ranges"): 2-2.5 points of top-1 lost on MobileNetV2 students that minmax keeps.
RANGES = ("minmax", "mean-minmax")


def _imports():
    ov = import_openvino("INT8 quantization for OpenVINO")  # and no vendor telemetry for nncf either
    try:
        import nncf
    except ImportError as exc:
        raise missing_package("nncf", extra="openvino", what="INT8 quantization for OpenVINO") from exc
    return ov, nncf


def _read_model(ov, path: Path):
    if not path.is_file():
        raise BadInputError(f"model {path} does not exist", hint="give an .onnx or OpenVINO .xml file")
    if path.suffix.lower() not in (".onnx", ".xml"):
        raise BadInputError(f"cannot quantize '{path.name}' for OpenVINO",
                            hint="give an .onnx or OpenVINO .xml file")
    try:
        if path.suffix.lower() == ".onnx":
            # convert_model runs OpenVINO's front-end transformations (constant folding among
            # them); Core.read_model leaves grouped-conv weights behind a Reshape, NNCF then keeps
            # their FakeQuantize un-folded and the CPU plugin runs every depthwise conv in f32.
            return ov.convert_model(str(path))
        return ov.Core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001 - ovc raises its own Error classes, not RuntimeError
        raise BadInputError(f"OpenVINO cannot read {path.name}: {_first_line(exc)}") from exc


_NOISE = re.compile(r"^(Check '.*' failed at |FrontEnd API failed with |Summary:$|Traceback )")


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """What OpenVINO or NNCF says, on one line: its lines that say something, joined, cut."""
    lines = [ln.strip(" -") for ln in str(exc).splitlines() if ln.strip(" -")]
    text = " ".join(ln for ln in lines if not _NOISE.match(ln)) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _model_input_shape(model) -> tuple:
    ps = model.inputs[0].get_partial_shape()
    return tuple(int(d.get_length()) if d.is_static else None for d in ps)


def _val_items(val_data: Any, batch_dim: "int | None") -> list[tuple[np.ndarray, np.ndarray]]:
    """(x, y) arrays or an iterable of (x_batch, y_batch) pairs -> list of (x, y) items."""
    if isinstance(val_data, tuple) and len(val_data) == 2 and isinstance(val_data[0], np.ndarray):
        x, y = val_data
        step = batch_dim or 64
        return [(np.ascontiguousarray(x[i:i + step], np.float32), np.asarray(y[i:i + step]))
                for i in range(0, len(x) - (len(x) % step if batch_dim else 0), step)]
    return list(val_data)


def top1_validation_fn(compiled_model, items: Iterable[tuple[np.ndarray, np.ndarray]]):
    """NNCF's validation_fn for classifiers: (top-1 accuracy, per-sample correctness)."""
    out = compiled_model.outputs[0]
    per_item: list[float] = []
    for x, y in items:
        logits = compiled_model(x)[out]
        per_item.extend((np.argmax(logits, axis=1) == np.asarray(y).reshape(-1)).astype(float).tolist())
    acc = float(np.mean(per_item)) if per_item else 0.0
    return acc, per_item


@contextlib.contextmanager
def _nncf_logs_to_stderr():
    """NNCF's logger writes to the stdout it saw at import; keep stdout clean for --json."""
    moved = []
    for h in logging.getLogger("nncf").handlers:
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.__stdout__:
            moved.append((h, h.setStream(sys.stderr)))
    try:
        yield
    finally:
        for h, old in moved:
            h.setStream(old)


def save_ir_atomic(ov, model, out_xml: "str | Path") -> Path:
    """Save an openvino.Model as IR with the backend's atomic writer (.bin first, then .xml)."""
    from ._common import save_ir

    out_xml = Path(out_xml)
    if out_xml.suffix.lower() != ".xml":
        raise BadInputError(f"OpenVINO IR path '{out_xml}' must end in .xml")
    return save_ir(model, out_xml)[0]


def quantize_openvino(onnx_or_xml_path: "str | Path", out_xml: "str | Path",
                      calib: "Iterable[np.ndarray]", *, preset: str = "performance",
                      subset_size: int = 300, max_drop: float | None = None,
                      val_data: Any = None, val_fn: Callable | None = None,
                      fast_bias_correction: bool = True, ranges: str = "minmax",
                      batch: "int | None" = None) -> Path:
    """Quantize with NNCF and save the INT8 IR at ``out_xml`` (+ .bin); returns the .xml path.

    ``preset``: 'performance' (symmetric activations, fastest on CPU) or 'mixed' (asymmetric
    activations, better for activations that are not centred, e.g. after GELU/SiLU).
    ``subset_size``: how many calibration samples NNCF collects statistics on. With
    ``max_drop`` (absolute top-1 drop, e.g. 0.01 for one point) accuracy control is used; it
    needs ``val_data`` ((x, y) arrays or (x_batch, y_batch) pairs) and optionally ``val_fn``
    (NNCF's validation_fn(compiled_model, items) -> (metric, per-item values); default top-1).
    ``ranges``: 'minmax' (default) or 'mean-minmax' (NNCF's own default), see ``RANGES``.
    ``batch``: a dynamic batch dimension becomes this one first (the target's; _common says why).
    """
    ov, nncf = _imports()
    if preset not in PRESETS:
        raise BadInputError(f"unknown NNCF preset '{preset}'; known: {', '.join(PRESETS)}")
    if ranges not in RANGES:
        raise BadInputError(f"OpenVINO's quantizer (NNCF) takes activation ranges {' or '.join(RANGES)}, "
                            f"not '{ranges}'", hint="use --method minmax (or mean-minmax) for an OpenVINO target")
    if subset_size < 1:
        raise BadInputError(f"subset_size {subset_size} must be at least 1")
    model = _read_model(ov, Path(onnx_or_xml_path))
    fix_openvino_batch(model, batch)
    shape = _model_input_shape(model)
    batches = split_to_batch(check_calibration(calib, shape), shape[0] if shape else None)
    n_samples = sum(len(b) for b in batches)
    dataset = nncf.Dataset(batches)
    preset_enum = (nncf.QuantizationPreset.PERFORMANCE if preset == "performance"
                   else nncf.QuantizationPreset.MIXED)
    # subset_size counts dataset items (batches); cap it at what there is.
    subset = max(1, min(subset_size, len(batches)))
    advanced = _advanced_parameters(nncf, ranges)
    try:
        with contextlib.redirect_stdout(sys.stderr), _nncf_logs_to_stderr():
            if max_drop is None:
                qmodel = nncf.quantize(model, dataset, preset=preset_enum, subset_size=subset,
                                       fast_bias_correction=fast_bias_correction,
                                       advanced_parameters=advanced)
            else:
                if not 0.0 <= max_drop < 1.0:
                    raise BadInputError(f"max_drop {max_drop} must be in [0, 1) (0.01 = one point)")
                if val_data is None:
                    raise BadInputError("accuracy control (max_drop) needs validation data",
                                        hint="pass val_data=(x, y)")
                items = _val_items(val_data, shape[0] if shape else None)
                if not items:
                    raise BadInputError("validation data for accuracy control is empty")
                qmodel = nncf.quantize_with_accuracy_control(
                    model, dataset, nncf.Dataset(items), val_fn or top1_validation_fn,
                    max_drop=float(max_drop), drop_type=nncf.DropType.ABSOLUTE, preset=preset_enum,
                    subset_size=subset, fast_bias_correction=fast_bias_correction,
                    advanced_quantization_parameters=advanced)
    except nncf.ValidationError as exc:
        raise BadInputError(f"NNCF rejected the quantization settings: {_first_line(exc)}") from exc
    except EdgeKDError:
        raise
    except Exception as exc:  # noqa: BLE001 - NNCF and OpenVINO raise many unrelated types
        raise BadInputError(f"NNCF cannot quantize {Path(onnx_or_xml_path).name}: "
                            f"{_first_line(exc)}",
                            hint="try an onnxruntime int8 target, or keep the model fp32") from exc
    log.info("NNCF quantized %s on %d calibration samples", onnx_or_xml_path, n_samples)
    return save_ir_atomic(ov, qmodel, out_xml)


def _advanced_parameters(nncf, ranges: str):
    """NNCF's advanced parameters for ``ranges``: None (its defaults) for 'mean-minmax'."""
    if ranges == "mean-minmax":
        return None
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)


def count_fake_quantize(xml_path: "str | Path") -> int:
    """How many FakeQuantize operations an IR holds (0 in an fp32 model)."""
    ov, _ = _imports()
    model = ov.Core().read_model(str(xml_path))
    return sum(1 for op in model.get_ops() if op.get_type_name() == "FakeQuantize")


def ir_paths(xml_path: "str | Path") -> Sequence[Path]:
    x = Path(xml_path)
    return (x, x.with_suffix(".bin"))
