"""ONNX Runtime: the hub ONNX file runs as is (fp32); INT8 targets take a static QDQ model
(quantized by onnxruntime.quantization, onnxruntime_quant.py)."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BadInputError, missing_package
from ..targets import Device, Precision, TargetSpec
from ._common import check_input_shape, copy_atomic, int8_input_error, onnx_is_quantized, validate_onnx
from .base import Artifact, ArtifactFormat, Backend, Session, count_samples, package_version

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
              "tensor(int8)": np.int8, "tensor(bool)": np.bool_}


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise missing_package("onnxruntime", what="the onnxruntime targets") from exc
    return onnxruntime


class OrtSession(Session):
    def __init__(self, path: Path, target: TargetSpec):
        ort = _ort()
        so = ort.SessionOptions()
        if target.threads:
            so.intra_op_num_threads = int(target.threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if target.device == Device.cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            msg = str(exc).strip().splitlines()[0][:200]
            raise BadInputError(f"onnxruntime cannot load {path}: {msg}",
                                hint="check that the file is a complete ONNX model") from exc
        self.path = path
        inputs = self._sess.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.input_shapes = [list(i.shape) for i in inputs]
        self.input_dtypes = [np.dtype(_ORT_TYPES.get(i.type, np.float32)) for i in inputs]
        self.output_names = [o.name for o in self._sess.get_outputs()]
        self.runtime_name = "onnxruntime"
        self.runtime_version = ort.__version__
        self.providers = self._sess.get_providers()

    def run(self, inputs: "np.ndarray | Mapping[str, np.ndarray]") -> list[np.ndarray]:
        feed = self._as_dict(inputs)
        try:
            return self._sess.run(None, feed)
        except Exception as exc:  # noqa: BLE001
            for name, shape in zip(self.input_names, self.input_shapes):
                if name in feed:
                    check_input_shape(name, shape, feed[name].shape, str(self.path))
            msg = str(exc).strip().splitlines()[0][:200]
            raise BadInputError(f"onnxruntime failed to run {self.path.name}: {msg}") from exc


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    runtime_module = "onnxruntime"
    artifact_format = ArtifactFormat.ONNX
    quantizer_packages = (("onnxruntime", None),)

    def available(self, target: TargetSpec | None = None) -> tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime") is None:  # found; imported only to ask for CUDA
            return False, "the 'onnxruntime' package is not installed (pip install onnxruntime)"
        if target is not None and target.device == Device.cuda:
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return False, "onnxruntime has no CUDAExecutionProvider here (pip install onnxruntime-gpu on a CUDA machine)"
        return True, package_version("onnxruntime") or package_version("onnxruntime-gpu")

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path, calib: Any | None = None) -> Artifact:
        src = validate_onnx(onnx_path)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if target.precision == Precision.int8 and not onnx_is_quantized(src):
            if calib is None:
                raise int8_input_error(target, f"is INT8 and {src.name} is not quantized")
            return self.quantize(src, target, out_dir, calib)
        dest = copy_atomic(src, out_dir / ("model.onnx" if src.parent.resolve() != out_dir.resolve() else src.name))
        return Artifact.from_file(dest, ArtifactFormat.ONNX, target=target.name,
                                  precision=target.precision.value, tool_versions=self.versions(),
                                  build_s=time.perf_counter() - t0)

    def load(self, artifact: Artifact, target: TargetSpec) -> Session:
        return OrtSession(Path(artifact.path), target)

    def _quantize(self, src: Path, target: TargetSpec, out_dir: Path, calib: Sequence[np.ndarray], *,
                  stem: str, method: str = "minmax", per_channel: bool = True, **_: Any) -> Artifact:
        """Static QDQ INT8; ``method``/``per_channel`` apply (onnxruntime_quant.py says why)."""
        from .onnxruntime_quant import default_activation_type, per_channel_weights, quantize_onnx_static

        t0 = time.perf_counter()
        act = default_activation_type()
        path = quantize_onnx_static(src, out_dir / f"{stem}.int8.onnx", calib, method=method,
                                    per_channel=per_channel, activation_type=act)
        return Artifact.from_file(
            path, ArtifactFormat.ONNX, target=target.name, precision="int8",
            tool_versions={"onnxruntime": package_version("onnxruntime")}, build_s=time.perf_counter() - t0,
            meta={"quantizer": "onnxruntime.quantize_static", "format": "QDQ", "method": method,
                  "activation_type": act, "weight_type": "int8",
                  "per_channel": per_channel_weights(path), "calib_samples": count_samples(calib),
                  "source": str(src)})
