"""PyTorch on the CPU (or CUDA): the eager fp32 reference, TorchScript and torch.export files."""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import BadInputError
from ..targets import Device, TargetSpec
from ..models.ref import (EXPORT_SUFFIXES, TORCHSCRIPT_SUFFIXES, load_torch_file,  # noqa: F401
                          module_sha256, note_made_here, set_mode)
from .base import Artifact, ArtifactFormat, Backend, Session, package_version


class TorchSession(Session):
    """Runs an nn.Module (eager, TorchScript or an exported program's module) under inference_mode."""

    def __init__(self, module, target: TargetSpec | None = None, *, input_shape=None, path=None):
        import torch

        self._torch = torch
        self.device = torch.device("cuda" if target is not None and target.device == Device.cuda else "cpu")
        self._threads = int(target.threads) if target is not None and target.threads else None
        if self._threads:
            torch.set_num_threads(self._threads)
        self.module = set_mode(module, False).to(self.device) if hasattr(module, "eval") else module
        self.path = path
        self.input_names = ["input"]
        self.output_names = ["logits"]
        self.input_shapes = [list(input_shape)] if input_shape is not None else [None]
        self.input_dtypes = [np.dtype(np.float32)]
        self.runtime_name = "torch"
        self.runtime_version = torch.__version__

    def run(self, inputs: "np.ndarray | Mapping[str, np.ndarray]") -> list[np.ndarray]:
        torch = self._torch
        x = inputs[self.input_names[0]] if isinstance(inputs, Mapping) else inputs
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        if self._threads and torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)  # the pool is process-global: others may change it
        with torch.inference_mode():
            try:
                out = self.module(t)
            except RuntimeError as exc:
                raise BadInputError(f"the torch model failed on an input of shape {tuple(x.shape)}: "
                                    f"{str(exc).splitlines()[0][:160]}",
                                    hint="pass --shape C,H,W matching the model") from exc
        if isinstance(out, (tuple, list)):
            out = out[0]
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return [out.detach().cpu().numpy()]


def save_torchscript(module, sample, path: Path, target: TargetSpec) -> Artifact:
    """Trace ``module`` on ``sample`` and save it as TorchScript atomically -> its Artifact."""
    import torch

    from ..util_io import atomic_path

    was_training = module.training
    set_mode(module, False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about data-dependent control flow
            traced = torch.jit.trace(module, sample)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise BadInputError(f"cannot trace the model to TorchScript on an input of shape {tuple(sample.shape)} "
                            f"({str(exc).strip().splitlines()[0][:160]})",
                            hint="make the model traceable or use an ONNX target") from exc
    finally:
        set_mode(module, was_training)
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        torch.jit.save(traced, str(tmp))
    note_made_here(path)  # these bytes came from our own module: loading them back needs no opt-in
    return Artifact.from_file(path, ArtifactFormat.TORCHSCRIPT, target=target.name,
                              precision=target.precision.value, tool_versions=TorchBackend().versions(),
                              meta={"input_shape": tuple(sample.shape)})


class TorchBackend(Backend):
    name = "torch"
    runtime_module = "torch"
    artifact_format = ArtifactFormat.TORCHSCRIPT
    builds_from = "torch"

    def available(self, target: TargetSpec | None = None) -> tuple[bool, str]:
        # found, not imported, unless a CUDA check needs it: listing targets (and the device probe
        # of every remote command) should not pay torch's import
        if importlib.util.find_spec("torch") is None:
            return False, "the 'torch' package is not installed (pip install torch==2.13.0)"
        if target is not None and target.device == Device.cuda:
            import torch

            if not torch.cuda.is_available():
                return False, "no CUDA GPU is visible to torch here"
        if target is not None and target.device not in (Device.cpu, Device.cuda):
            return False, f"torch targets run on cpu or cuda, not {target.device.value}"
        return True, package_version("torch")

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path, calib: Any | None = None) -> Artifact:
        raise BadInputError(f"target '{target.name}' runs torch models, not ONNX ({Path(onnx_path).name})",
                            hint="give a TorchScript/.pt2 file or a model spec, or pick an ONNX target such as ort-cpu")

    def build_module(self, module, sample, target: TargetSpec, out_dir: Path, *, calib: Any | None = None,
                     name: str = "module") -> Artifact:
        """The eager module itself is the artifact (held in memory; `edgekd export` traces it)."""
        return self.artifact_for_module(module, target, input_shape=tuple(sample.shape), name=name)

    def load(self, artifact: Artifact, target: TargetSpec) -> Session:
        module = artifact.meta.get("module") if artifact.meta else None
        if module is None:
            module, _ = load_torch_file(Path(artifact.path))
        return TorchSession(module, target, input_shape=artifact.meta.get("input_shape") if artifact.meta else None,
                            path=artifact.path)

    @staticmethod
    def artifact_for_module(module, target: TargetSpec, *, input_shape=None, name="module") -> Artifact:
        """An in-memory eager module as an Artifact (its hash covers the weights)."""
        return Artifact(path=Path(name), format="torch-eager", sha256=module_sha256(module),
                        target=target.name, precision=target.precision.value,
                        tool_versions=TorchBackend().versions(),
                        meta={"module": module, "input_shape": input_shape})
