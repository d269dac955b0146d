"""Small pieces shared by the ONNX-consuming backends."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import BadInputError
from ..util_io import atomic_path


def check_file(path: "str | Path", what: str, suffixes: tuple[str, ...] = ()) -> Path:
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{what} {p} does not exist", hint="check the path")
    if not p.is_file():
        raise BadInputError(f"{what} {p} is not a file", hint="pass the model file itself")
    if p.stat().st_size == 0:
        raise BadInputError(f"{what} {p} is empty", hint="re-export the model")
    if suffixes and p.suffix.lower() not in suffixes:
        raise BadInputError(f"{what} {p} has suffix '{p.suffix}', expected one of {', '.join(suffixes)}")
    return p


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


def copy_atomic(src: Path, dest: Path) -> Path:
    if src.resolve() == dest.resolve():
        return dest
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def describe_shape(shape) -> str:
    return "(" + ", ".join("?" if not isinstance(d, int) else str(d) for d in shape) + ")"


def check_input_shape(name: str, expected, got, model_path: str = "") -> None:
    """Raise BadInputError when a concrete dimension of ``got`` contradicts ``expected``."""
    if expected is None:
        return
    exp = list(expected)
    if len(exp) != len(got) or any(isinstance(e, int) and e > 0 and e != g for e, g in zip(exp, got)):
        where = f" of {model_path}" if model_path else ""
        raise BadInputError(f"input '{name}'{where} expects shape {describe_shape(exp)}, got "
                            f"{describe_shape(got)}", hint="pass --shape C,H,W matching the model")


def onnx_is_quantized(path: "str | Path") -> bool:
    """True when the ONNX graph already carries QDQ (or QLinear) nodes."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul")
               for n in m.graph.node)
