"""Runtime backends behind one protocol (base.Backend). Import is cheap: runtimes load lazily."""
from __future__ import annotations

from ..errors import RuntimeMissingError
from ..registry import Registry
from ..targets import Runtime, TargetSpec
from .base import Artifact, ArtifactFormat, Backend, Session, sha256_file

backends: Registry[type] = Registry("runtime backend", entry_point_group="edgekd.backends")
backends.register_lazy("torch", "edgekd.backends.torch:TorchBackend")
backends.register_lazy("onnxruntime", "edgekd.backends.onnxruntime:OnnxRuntimeBackend")
backends.register_lazy("openvino", "edgekd.backends.openvino:OpenVINOBackend")
backends.register_lazy("tensorrt", "edgekd.backends.tensorrt:TensorRTBackend")
backends.register_lazy("executorch", "edgekd.backends.executorch:ExecuTorchBackend")


def get_backend(runtime: "str | Runtime") -> Backend:
    name = runtime.value if isinstance(runtime, Runtime) else str(runtime)
    return backends.get(name)()


def require_backend(target: TargetSpec) -> Backend:
    """The target's backend, or RuntimeMissingError naming what to install."""
    backend = get_backend(target.runtime)
    ok, reason = backend.available(target)
    if not ok:
        raise RuntimeMissingError(f"target '{target.name}' cannot run here: {reason}")
    return backend


__all__ = ["Artifact", "ArtifactFormat", "Backend", "Session", "sha256_file", "backends",
           "get_backend", "require_backend"]
