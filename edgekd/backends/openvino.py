"""OpenVINO: ONNX -> IR (.xml + .bin), compiled with the target's precision and threads.

fp32 targets pin the CPU plugin's inference precision to f32: on CPUs with AMX/AVX512-BF16
the plugin would otherwise run bf16 silently and report a different model's latency.
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BadInputError
from ..targets import Device, Precision, TargetSpec
from ._common import (check_file, check_input_shape, fix_openvino_batch, import_openvino, int8_input_error,
                      onnx_is_quantized, save_ir, validate_onnx)
from .base import Artifact, ArtifactFormat, Backend, Session, count_samples, package_version

_DEVICES = {Device.cpu: "CPU", Device.gpu: "GPU", Device.npu: "NPU"}


def _ov():
    return import_openvino()


def _sync_infer_of(ov):
    """The compiled binding's InferRequest.infer(request, inputs, share_outputs, decode_strings),
    without the Python wrapper's input dispatch and result dict; the wrapper's infer where this
    OpenVINO has no such binding."""
    base = getattr(getattr(ov, "_pyopenvino", None), "InferRequest", None)
    if base is not None and callable(getattr(base, "infer", None)):
        return base.infer
    return lambda req, inputs, share_outputs, decode: req.infer(share_outputs=share_outputs)


_CORE = None


def _core():
    """One openvino.Core per process, as OpenVINO advises. A Core per session crashed the process
    on the next signal it received (SIGTERM, here) once three had been made and dropped — as a
    measurement over several loads does (tests/test_backends.py)."""
    global _CORE
    if _CORE is None:
        _CORE = _ov().Core()
    return _CORE


def compile_properties(target: TargetSpec) -> dict:
    """The compile-time properties a target implies (exposed for tests and benchmark_app parity)."""
    import openvino.properties as props
    import openvino.properties.hint as hints

    ov = _ov()
    cfg: dict = {hints.performance_mode: hints.PerformanceMode.LATENCY, hints.num_requests: 1,
                 props.num_streams: 1}
    if target.precision in (Precision.fp32, Precision.int8):
        # int8 models keep their quantized ops; the non-quantized rest stays f32, not bf16.
        cfg[hints.inference_precision] = ov.Type.f32
    elif target.precision == Precision.fp16:
        cfg[hints.inference_precision] = ov.Type.f16
    elif target.precision == Precision.bf16:
        cfg[hints.inference_precision] = ov.Type.bf16
    if target.threads:
        cfg[props.inference_num_threads] = int(target.threads)
    return cfg


class OVSession(Session):
    def __init__(self, xml: Path, target: TargetSpec):
        ov = _ov()
        core = _core()
        try:
            model = core.read_model(str(xml))
        except Exception as exc:  # noqa: BLE001 - openvino raises RuntimeError subclasses
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise BadInputError(f"openvino cannot read {xml}: {msg}",
                                hint="check that the .xml and its .bin are complete") from exc
        device = _DEVICES.get(target.device)
        if device is None:
            raise BadInputError(f"target '{target.name}' has device '{target.device.value}', "
                                "which OpenVINO does not drive", hint="use cpu, gpu or npu")
        fix_openvino_batch(model, target.batch)  # the target's batch: see _common
        self._fixed_shapes = [list(p.get_partial_shape().to_string().strip("[]").split(","))
                              for p in model.inputs]
        try:
            self.compiled = core.compile_model(model, device, compile_properties(target))
        except RuntimeError as exc:
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise BadInputError(f"openvino cannot compile {xml} for {device} ({target.name}): {msg}",
                                hint="check the model and the target's precision and device") from exc
        self._req = self.compiled.create_infer_request()
        self._sync_infer = _sync_infer_of(ov)
        self._ov = ov
        self._bound, self._bound_feed = None, {}
        self._out_views = None  # the request's static output buffers, once it has run
        self.path = xml
        self.input_names = [p.get_any_name() for p in model.inputs]
        self.input_shapes = [[int(d) if d.strip().lstrip("-").isdigit() and int(d) >= 0 else None
                              for d in s] for s in self._fixed_shapes]
        self.input_dtypes = [np.dtype(p.get_element_type().to_dtype()) for p in model.inputs]
        self.output_names = [p.get_any_name() if p.get_names() else f"output{i}"
                             for i, p in enumerate(model.outputs)]
        self.runtime_name = "openvino"
        self.runtime_version = ov.__version__.split("-")[0]

    def inference_precision(self) -> str:
        import openvino.properties.hint as hints

        # e.g. "f32", "bf16": the element type's short name, whatever the repr looks like
        return self.compiled.get_property(hints.inference_precision).get_type_name()

    def run(self, inputs: "np.ndarray | Mapping[str, np.ndarray]") -> list[np.ndarray]:
        # The same prepared input object as last time (the measurement loop's case) is already
        # bound to the request through shared memory, so a run is one infer() call, as in
        # OpenVINO's own benchmark_app; any other input is bound first.
        if inputs is self._bound and self._out_views is not None:
            # static outputs stay where the request put them last time: run it and copy them out
            # once, without the Python wrapper's dispatch and result dict (~25 us a call)
            try:
                # the binding's own synchronous infer: it runs on this thread, as benchmark_app
                # -api sync does (start_async + wait hands the request to an executor thread,
                # ~20 us more a call), with no inputs to dispatch and the outputs left shared
                self._sync_infer(self._req, {}, True, False)
            except RuntimeError as exc:
                self._raise_run_error(exc, self._bound_feed)
            return [v.copy() for v in self._out_views]
        if inputs is not self._bound:
            feed = self._as_dict(inputs)
            try:
                for name, arr in feed.items():
                    self._req.set_tensor(name, self._ov.Tensor(np.ascontiguousarray(arr), shared_memory=True))
            except RuntimeError as exc:
                self._raise_run_error(exc, feed)
            self._bound, self._bound_feed = inputs, feed  # keep the arrays alive while bound
        try:
            results = self._req.infer()  # copies the outputs out of the request once
        except RuntimeError as exc:  # diagnose off the timed path: only when OpenVINO refuses
            self._raise_run_error(exc, self._bound_feed)
        if all(not o.get_partial_shape().is_dynamic for o in self.compiled.outputs):
            self._out_views = [self._req.get_output_tensor(i).data for i in range(len(self.compiled.outputs))]
        return [results[o] for o in self.compiled.outputs]

    def _raise_run_error(self, exc: Exception, feed: Mapping[str, np.ndarray]):
        self._bound, self._bound_feed, self._out_views = None, {}, None
        for name, shape in zip(self.input_names, self.input_shapes):
            if name in feed:
                check_input_shape(name, shape, np.shape(feed[name]), str(self.path))
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"openvino failed to run {self.path.name}: {msg}") from exc


class OpenVINOBackend(Backend):
    name = "openvino"
    runtime_module = "openvino"
    artifact_format = ArtifactFormat.OPENVINO_IR
    native_suffixes = (".xml",)
    quantizer_packages = (("openvino", "openvino"), ("nncf", "openvino"))

    def available(self, target: TargetSpec | None = None) -> tuple[bool, str]:
        if importlib.util.find_spec("openvino") is None:  # found; imported only to list devices
            return False, "the 'openvino' package is not installed (pip install 'edgekd[openvino]')"
        if target is None or target.device == Device.cpu:
            return True, package_version("openvino").split("-")[0]
        ov = import_openvino()

        if target.device != Device.cpu:
            dev = _DEVICES.get(target.device)
            if dev not in ov.Core().available_devices:
                return False, f"OpenVINO sees no {dev} device here (available: {', '.join(ov.Core().available_devices)})"
        return True, ov.__version__.split("-")[0]

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path, calib: Any | None = None) -> Artifact:
        ov = _ov()
        src = Path(onnx_path)
        out_dir = Path(out_dir)
        t0 = time.perf_counter()
        if src.suffix.lower() == ".xml":
            check_file(src, "OpenVINO IR", (".xml",))
            model = ov.Core().read_model(str(src))
        else:
            validate_onnx(src)
            if target.precision == Precision.int8:
                if calib is None and not onnx_is_quantized(src):
                    raise int8_input_error(target, f"is INT8 and {src.name} is not quantized")
                if calib is not None:
                    return self.quantize(src, target, out_dir, calib)
            try:
                model = ov.convert_model(str(src))
            except Exception as exc:  # noqa: BLE001
                msg = str(exc).strip().splitlines()[0][:200]
                raise BadInputError(f"openvino cannot convert {src}: {msg}") from exc
        fix_openvino_batch(model, target.batch)
        xml, bin_ = save_ir(model, out_dir / "model.xml")
        return Artifact.from_file(xml, ArtifactFormat.OPENVINO_IR, target=target.name,
                                  precision=target.precision.value, extra_paths=(bin_,),
                                  tool_versions=self.versions(), build_s=time.perf_counter() - t0)

    def load(self, artifact: Artifact, target: TargetSpec) -> Session:
        p = check_file(artifact.path, "OpenVINO IR", (".xml",))
        if not p.with_suffix(".bin").exists():
            raise BadInputError(f"OpenVINO IR {p} has no weights file {p.with_suffix('.bin').name} beside it",
                                hint="copy the .bin next to the .xml")
        return OVSession(p, target)

    def _quantize(self, src: Path, target: TargetSpec, out_dir: Path, calib: Sequence[np.ndarray], *,
                  stem: str, preset: str = "performance", subset_size: int = 300,
                  max_drop: float | None = None, val_data: Any = None, val_fn: Any = None,
                  method: str = "minmax", **_: Any) -> Artifact:
        """NNCF post-training quantization; with ``max_drop``, accuracy control on ``val_data``;
        ``method`` is how activation ranges are read (openvino_quant.RANGES)."""
        from .openvino_quant import quantize_openvino

        t0 = time.perf_counter()
        xml = quantize_openvino(src, out_dir / f"{stem}.int8.xml", calib, preset=preset,
                                subset_size=subset_size, max_drop=max_drop, val_data=val_data,
                                val_fn=val_fn, ranges=method, batch=target.batch)
        return Artifact.from_file(
            xml, ArtifactFormat.OPENVINO_IR, target=target.name, precision="int8",
            extra_paths=(xml.with_suffix(".bin"),),
            tool_versions={"openvino": package_version("openvino"), "nncf": package_version("nncf")},
            build_s=time.perf_counter() - t0,
            meta={"quantizer": "nncf.quantize_with_accuracy_control" if max_drop is not None
                  else "nncf.quantize", "preset": preset, "ranges": method, "subset_size": subset_size,
                  "max_drop": max_drop, "calib_samples": count_samples(calib), "source": str(src)})
