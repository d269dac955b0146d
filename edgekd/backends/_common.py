"""Small pieces shared by the backends."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import BadInputError, missing_package
from ..models.ref import describe_shape
from ..util_io import atomic_path, check_file


def validate_onnx(path: "str | Path") -> Path:
    """Load and check an ONNX file; a truncated or corrupt one is a BadInputError."""
    import onnx

    p = check_file(path, "ONNX model", (".onnx",))
    try:
        model = onnx.load(str(p), load_external_data=False)
        onnx.checker.check_model(str(p))
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{p} is not a valid ONNX model ({first[:160]})",
                            hint="the file may be truncated or corrupt; export it again") from exc
    if not model.graph.input:
        raise BadInputError(f"ONNX model {p} has no inputs")
    return p


# Set to 1 to leave OpenVINO's and NNCF's usage telemetry as those packages ship it.
TELEMETRY_ENV = "EDGEKD_OPENVINO_TELEMETRY"


def no_vendor_telemetry() -> None:
    """Unless EDGEKD_OPENVINO_TELEMETRY=1, keep the ``openvino_telemetry`` package from being
    imported in this process, so that OpenVINO's model conversion and NNCF fall back to their own
    no-op stubs (both do when it is missing). Otherwise every ``convert_model`` and every
    quantization sends a usage event to a web analytics service from a forked child process, which
    costs a fork of this (large) process per conversion (a profile converts each of hundreds of
    blocks), waits on the network where there is none, and is terminated mid-request when it times
    out. No effect once the package is already imported."""
    import sys

    if os.environ.get(TELEMETRY_ENV) != "1" and "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # import raises ImportError: the stubs are used


def import_openvino(what: str = "the openvino targets"):
    """``import openvino`` with no_vendor_telemetry first (a missing package: exit 4 with the pip
    command)."""
    no_vendor_telemetry()
    try:
        import openvino
    except ImportError as exc:
        raise missing_package("openvino", extra="openvino", what=what) from exc
    return openvino


def copy_atomic(src: Path, dest: Path) -> Path:
    if src.resolve() == dest.resolve():
        return dest
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def check_input_shape(name: str, expected, got, model_path: str = "") -> None:
    """Raise BadInputError when a concrete dimension of ``got`` contradicts ``expected``."""
    if expected is None:
        return
    exp = list(expected)
    if len(exp) != len(got) or any(isinstance(e, int) and e > 0 and e != g for e, g in zip(exp, got)):
        where = f" of {model_path}" if model_path else ""
        raise BadInputError(f"input '{name}'{where} expects shape {describe_shape(exp)}, got "
                            f"{describe_shape(got)}", hint="pass --shape C,H,W matching the model")


def int8_input_error(target, problem: str, *, calib_builds: bool = False) -> BadInputError:
    """The one refusal of an INT8 target handed a model it cannot run as INT8 and no calibration
    data: ``problem`` follows "target 'NAME' "; ``calib_builds``: calibration data at build time
    would do (the hint says --data first), else the model must be quantized first."""
    cmd = f"edgekd quantize MODEL --target {target.name} --data SPEC --out DIR"
    return BadInputError(f"target '{target.name}' {problem}",
                         hint=f"pass --data SPEC (or: {cmd})" if calib_builds else f"quantize it first: {cmd}")


def onnx_is_quantized(path: "str | Path") -> bool:
    """True when the ONNX graph already carries QDQ (or QLinear) nodes."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul")
               for n in m.graph.node)


def save_ir(model, xml_path: Path) -> tuple[Path, Path]:
    """Save an ov.Model as IR atomically: both files under temporary names, then renamed."""
    ov = import_openvino()
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_xml = xml_path.with_name(f".{xml_path.stem}.{os.getpid()}.tmp.xml")
    tmp_bin = tmp_xml.with_suffix(".bin")
    try:
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        bin_path = xml_path.with_suffix(".bin")
        os.replace(tmp_bin, bin_path)  # weights first: an .xml never points at a missing .bin
        os.replace(tmp_xml, xml_path)
    finally:
        for p in (tmp_xml, tmp_bin):
            if p.exists():
                p.unlink()
    return xml_path, xml_path.with_suffix(".bin")


def fix_openvino_batch(model, batch: "int | None") -> None:
    """Give every input of an ov.Model whose leading (batch) dimension is dynamic the target's
    ``batch``, in place. A target runs one batch size, and OpenVINO 2026.4's CPU plugin computed
    an INT8 model with a dynamic batch wrongly at batch 1: a mobilenetv2 digits student read 79.4% top-1 one sample at a time through its NNCF IR, 96.9%
    in batches of 2 or more and 96.9% from the same IR reshaped to a static batch of 1 (ONNX
    Runtime's INT8 of the same graph 96.9%). Static shapes are also what OpenVINO compiles best."""
    if not batch:
        return
    ov = import_openvino()
    shapes = {}
    for i, port in enumerate(model.inputs):
        ps = port.get_partial_shape()
        if ps.rank.is_static and ps.rank.get_length() >= 1 and ps[0].is_dynamic:
            shapes[i] = ov.PartialShape([ov.Dimension(int(batch))] + [ps[k] for k in range(1, ps.rank.get_length())])
    if shapes:
        model.reshape(shapes)
