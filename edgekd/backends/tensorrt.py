"""TensorRT (10.x Python API): an engine built from the hub ONNX with fp16/int8 flags and a
timing cache; run by tensor name with torch CUDA buffers on a torch CUDA stream.

tensorrt is imported only inside the methods that need it. INT8 engines are built from a QDQ
ONNX model (explicit quantization: the scales are in the graph, no calibrator).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BadInputError, RuntimeMissingError, missing_package
from ..models.ref import ENGINE_SUFFIXES
from ..targets import Device, Precision, TargetSpec
from ..util_io import atomic_write_bytes
from ._common import check_file, int8_input_error, validate_onnx
from .base import Artifact, ArtifactFormat, Backend, Session, count_samples, package_version

WORKSPACE_BYTES = 1 << 30


def _trt():
    try:
        import tensorrt
    except ImportError as exc:
        raise missing_package("tensorrt", extra="tensorrt", what="the tensorrt targets (NVIDIA GPU)") from exc
    return tensorrt


def _require_cuda():
    import torch

    if not torch.cuda.is_available():
        raise RuntimeMissingError("the tensorrt targets need an NVIDIA GPU with CUDA; none is visible here")
    return torch


class TrtSession(Session):
    def __init__(self, engine_path: Path, target: TargetSpec):
        trt = _trt()
        torch = _require_cuda()
        self._torch = torch
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if engine is None:
            raise BadInputError(f"{engine_path} is not a TensorRT engine for this TensorRT/GPU",
                                hint="engines are specific to the TensorRT version and GPU: rebuild it with edgekd export")
        self.engine = engine
        self.context = engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.input_shapes = [[d if d >= 0 else None for d in engine.get_tensor_shape(n)] for n in self.input_names]
        self.input_dtypes = [np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in self.input_names]
        self._out_dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in self.output_names}
        self.runtime_name = "tensorrt"
        self.runtime_version = trt.__version__
        self.path = engine_path
        self._buffers: dict[str, Any] = {}

    def run(self, inputs: "np.ndarray | Mapping[str, np.ndarray]") -> list[np.ndarray]:
        torch = self._torch
        feed = self._as_dict(inputs)
        with torch.cuda.stream(self.stream):
            for name in self.input_names:
                arr = np.ascontiguousarray(feed[name])
                buf = self._buffers.get(name)
                if buf is None or tuple(buf.shape) != arr.shape:
                    buf = torch.empty(arr.shape, dtype=getattr(torch, str(arr.dtype)), device="cuda")
                    self._buffers[name] = buf
                buf.copy_(torch.from_numpy(arr), non_blocking=False)
                if not self.context.set_input_shape(name, tuple(arr.shape)):
                    raise BadInputError(f"TensorRT engine {self.path} rejects input shape {arr.shape} for '{name}'",
                                        hint="rebuild the engine for this shape")
                self.context.set_tensor_address(name, buf.data_ptr())
            outs = []
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                buf = self._buffers.get(name)
                if buf is None or tuple(buf.shape) != shape:
                    buf = torch.empty(shape, dtype=getattr(torch, str(self._out_dtypes[name])), device="cuda")
                    self._buffers[name] = buf
                self.context.set_tensor_address(name, buf.data_ptr())
                outs.append(buf)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeMissingError(f"TensorRT failed to execute {self.path}")
        self.stream.synchronize()
        return [o.cpu().numpy() for o in outs]


class TensorRTBackend(Backend):
    name = "tensorrt"
    runtime_module = "tensorrt"
    artifact_format = ArtifactFormat.TENSORRT_ENGINE
    native_suffixes = ENGINE_SUFFIXES
    # Quantizing writes a QDQ ONNX file (no GPU needed); building the engine needs tensorrt.
    quantizer_packages = (("onnxruntime", None),)

    def available(self, target: TargetSpec | None = None) -> tuple[bool, str]:
        try:
            import tensorrt as trt
        except ImportError:
            return False, ("the 'tensorrt' package is not installed (needs an NVIDIA GPU; "
                           "pip install 'edgekd[tensorrt]')")
        try:
            import torch

            if not torch.cuda.is_available():
                return False, "tensorrt is installed but no CUDA GPU is visible here"
        except ImportError:
            return False, "torch is needed for TensorRT buffers"
        if target is not None and target.device != Device.cuda:
            return False, f"tensorrt targets run on cuda, not {target.device.value}"
        return True, trt.__version__

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path, calib: Any | None = None,
              input_shape: tuple | None = None) -> Artifact:
        trt = _trt()
        _require_cuda()
        src = validate_onnx(onnx_path)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(src)):
            errs = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
            raise BadInputError(f"TensorRT cannot parse {src}: {errs[:300]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if target.precision in (Precision.fp16, Precision.int8):
            config.set_flag(trt.BuilderFlag.FP16)
        if target.precision == Precision.int8:
            from ._common import onnx_is_quantized

            if calib is not None and not onnx_is_quantized(src):
                src = Path(self.quantize(src, target, out_dir, calib).path)  # QDQ, symmetric int8
            if not onnx_is_quantized(src):
                raise int8_input_error(target, f"builds INT8 engines from QDQ ONNX, and {src.name} has no QDQ nodes")
            config.set_flag(trt.BuilderFlag.INT8)
        # Dynamic dimensions get one optimization profile at the target's batch and shape.
        profile, dynamic = builder.create_optimization_profile(), False
        for i in range(network.num_inputs):
            inp = network.get_input(i)
            shape = list(inp.shape)
            if any(d < 0 for d in shape):
                dynamic = True
                want = [target.batch] + list(input_shape or target.input_shape or shape[1:])
                if any(d < 0 for d in want):
                    raise BadInputError(f"input '{inp.name}' of {src.name} has dynamic dims {shape}",
                                        hint="give the target an input_shape or pass --shape C,H,W")
                profile.set_shape(inp.name, want, want, want)
        if dynamic:
            config.add_optimization_profile(profile)
        cache_path = out_dir / "timing.cache"
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=True)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BadInputError(f"TensorRT could not build an engine from {src.name} for '{target.name}'",
                                hint="run with -v to see TensorRT's log")
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
        engine_path = atomic_write_bytes(out_dir / "model.engine", bytes(serialized))
        return Artifact.from_file(engine_path, ArtifactFormat.TENSORRT_ENGINE, target=target.name,
                                  precision=target.precision.value, tool_versions=self.versions(),
                                  build_s=time.perf_counter() - t0, meta={"timing_cache": str(cache_path)})

    def load(self, artifact: Artifact, target: TargetSpec) -> Session:
        check_file(artifact.path, "TensorRT engine", ENGINE_SUFFIXES)
        return TrtSession(Path(artifact.path), target)

    def _quantize(self, src: Path, target: TargetSpec, out_dir: Path, calib: Sequence[np.ndarray], *,
                  stem: str, method: str = "minmax", per_channel: bool = True, **_: Any) -> Artifact:
        """The QDQ ONNX model TensorRT's explicit quantization consumes: symmetric INT8 activations
        and weights (zero point 0, the only kind TensorRT takes), made by ONNX Runtime's quantizer.
        Turning it into an engine (INT8 builder flag) is build()'s job; no calibrator is needed."""
        from .onnxruntime_quant import quantize_for_tensorrt

        t0 = time.perf_counter()
        path = quantize_for_tensorrt(src, out_dir / f"{stem}.int8.qdq.onnx", calib, method=method,
                                     per_channel=per_channel)
        return Artifact.from_file(
            path, ArtifactFormat.ONNX, target=target.name, precision="int8",
            tool_versions={"onnxruntime": package_version("onnxruntime")}, build_s=time.perf_counter() - t0,
            meta={"quantizer": "onnxruntime.quantize_static", "format": "QDQ", "consumer": "tensorrt",
                  "method": method, "activation_type": "int8", "symmetric_activations": True,
                  "calib_samples": count_samples(calib), "source": str(src)})
