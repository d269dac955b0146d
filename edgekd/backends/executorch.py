"""ExecuTorch with the XNNPACK delegate: a torch module -> torch.export -> .pte program.

This runtime builds from the torch module itself (``builds_from = "torch"``), not from the hub
ONNX file: the program is captured by torch.export, lowered with XNNPACK's partitioner (every
op XNNPACK runs goes to the delegate, the rest to ExecuTorch's portable kernels) and serialized
to one .pte file. INT8 targets quantize with XNNPACK's PT2E quantizer (executorch_quant.py).

The .pte records ExecuTorch's memory plan: the planned arena (``planned_arena_bytes``) holds
the tensors the portable runtime sees; what runs inside the XNNPACK delegate lives in the
delegate's own workspace, outside that plan (docs/MEMORY.md).
"""
from __future__ import annotations

import importlib.util
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BadInputError, missing_package
from ..models.ref import PTE_SUFFIXES, TORCH_SUFFIXES, load_torch_file, set_mode, stored_input_shape
from ..targets import Device, Precision, TargetSpec
from ..util_io import atomic_path, check_file
from ._common import check_input_shape, int8_input_error
from .base import Artifact, ArtifactFormat, Backend, Session, count_samples, package_version
from .executorch_export import capture, first_line, lower, planned_arena_bytes, quiet_import_noise

PIP = "pip install 'edgekd[executorch]'"


def _require() -> None:
    if importlib.util.find_spec("executorch") is None:
        raise missing_package("executorch", extra="executorch", what="the executorch targets")
    quiet_import_noise()


def set_threads(n: "int | None") -> None:
    """XNNPACK's thread pool is process-wide: size it as the target says."""
    if not n:
        return
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != int(n):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            portable_lib._unsafe_reset_threadpool(int(n))


def pte_input_shape(path: "str | Path") -> tuple:
    """The first input's shape a .pte program's 'forward' method declares (read without loading it)."""
    _require()
    from executorch.runtime import Runtime

    meta = Runtime.get().load_program(Path(path)).metadata("forward")
    return tuple(int(d) for d in meta.input_tensor_meta(0).sizes())


class ETSession(Session):
    """A loaded .pte program's 'forward' method."""

    def __init__(self, path: Path, target: TargetSpec):
        import torch
        from executorch.runtime import Runtime

        self._torch = torch
        self.path = path
        self._threads = int(target.threads) if target.threads else None
        set_threads(self._threads)
        try:
            program = Runtime.get().load_program(Path(path))
            if "forward" not in program.method_names:
                raise BadInputError(f"ExecuTorch program {path.name} has no 'forward' method "
                                    f"(it has {', '.join(sorted(program.method_names)) or 'none'})")
            self.method = program.load_method("forward")
        except BadInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - the runtime raises RuntimeError/ValueError
            raise BadInputError(f"ExecuTorch cannot load {path.name} ({first_line(exc)})",
                                hint="the file may be truncated, or made by another ExecuTorch version") from exc
        self._program = program  # the method refers to it
        meta = self.method.metadata
        n_in = meta.num_inputs()
        self.input_names = [f"input{i}" if n_in > 1 else "input" for i in range(n_in)]
        self.output_names = [f"output{i}" for i in range(meta.num_outputs())]
        self.input_shapes = [list(meta.input_tensor_meta(i).sizes()) for i in range(n_in)]
        self.input_dtypes = [np.dtype(np.float32)] * n_in
        self.runtime_name = "executorch"
        self.runtime_version = package_version("executorch")
        self._planned: "int | None | bool" = False

    @property
    def planned_arena_bytes(self) -> int | None:
        """The program's memory-planned arena, read from the file when first asked (not at load:
        parsing the program would count in the load's memory)."""
        if self._planned is False:
            self._planned = planned_arena_bytes(Path(self.path))
        return self._planned

    def run(self, inputs: "np.ndarray | Mapping[str, np.ndarray]") -> list[np.ndarray]:
        feed = self._as_dict(inputs)
        arrays = [feed[n] for n in self.input_names]
        try:
            tensors = [self._torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays]
            outs = self.method.execute(tensors)
        except Exception as exc:  # noqa: BLE001 - the runtime raises RuntimeError on a bad input
            for name, shape, a in zip(self.input_names, self.input_shapes, arrays):
                check_input_shape(name, shape, np.shape(a), str(self.path))
            raise BadInputError(f"ExecuTorch failed to run {self.path.name}: {first_line(exc)}") from exc
        return [o.numpy() if hasattr(o, "numpy") else np.asarray(o) for o in outs]


class ExecuTorchBackend(Backend):
    name = "executorch"
    runtime_module = "executorch.runtime"
    artifact_format = ArtifactFormat.EXECUTORCH_PROGRAM
    builds_from = "torch"
    native_suffixes = PTE_SUFFIXES
    quantizer_packages = (("executorch", "executorch"), ("torchao", "executorch"))

    def available(self, target: TargetSpec | None = None) -> tuple[bool, str]:
        if importlib.util.find_spec("executorch") is None:
            return False, f"the 'executorch' package is not installed ({PIP})"
        if target is not None and target.device != Device.cpu:
            return False, f"executorch targets run on cpu (XNNPACK), not {target.device.value}"
        return True, package_version("executorch")

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path, calib: Any | None = None) -> Artifact:
        """From a torch file (edgekd checkpoint or .pt2) that records its input shape; ONNX is
        refused: ExecuTorch programs come from torch.export, not from the hub ONNX file."""
        src = Path(onnx_path)
        module, sample = self._module_of(src, target, f"target '{target.name}' builds from a torch model "
                                         f"(torch.export), not {src.name}",
                                         hint="give the model spec, an edgekd checkpoint or a .pt2 file")
        return self.build_module(module, sample, target, out_dir, calib=calib, name=src.stem)

    def build_module(self, module, sample, target: TargetSpec, out_dir: Path, *, calib: Any | None = None,
                     name: str = "module") -> Artifact:
        _require()
        t0 = time.perf_counter()
        out_dir = Path(out_dir)
        if target.precision == Precision.int8:
            if calib is None:
                raise int8_input_error(target, "is INT8 and needs calibration data", calib_builds=True)
            return self._quantize_module(module, sample, target, out_dir, list(calib), stem="model")
        if target.precision != Precision.fp32:
            raise BadInputError(f"target '{target.name}' asks for {target.precision.value}; ExecuTorch "
                                "targets here are fp32 or int8", hint="set precision: fp32 or int8")
        pte = lower(capture(module, sample))
        return self._write(pte, out_dir / "model.pte", target, sample, t0, meta={"source": name})

    def _write(self, pte: bytes, path: Path, target: TargetSpec, sample, t0: float, meta: dict) -> Artifact:
        with atomic_path(path, suffix=".pte") as tmp:
            tmp.write_bytes(pte)
        return Artifact.from_file(path, ArtifactFormat.EXECUTORCH_PROGRAM, target=target.name,
                                  precision=target.precision.value, tool_versions=self.versions(),
                                  build_s=time.perf_counter() - t0,
                                  meta={**meta, "input_shape": tuple(sample.shape),
                                        "planned_arena_bytes": planned_arena_bytes(pte)})

    def _quantize_module(self, module, sample, target: TargetSpec, out_dir: Path,
                         calib: Sequence[np.ndarray], *, stem: str, per_channel: bool = True) -> Artifact:
        from .executorch_quant import quantize_pt2e

        t0 = time.perf_counter()
        exported = quantize_pt2e(module, sample, calib, per_channel=per_channel)
        pte = lower(exported, what="the quantized model")
        return self._write(pte, out_dir / f"{stem}.int8.pte", target, sample, t0,
                           meta={"quantizer": "xnnpack-pt2e", "per_channel": per_channel,
                                 "calib_samples": count_samples(calib)})

    def _quantize(self, src: Path, target: TargetSpec, out_dir: Path, calib: Sequence[np.ndarray], *,
                  stem: str, per_channel: bool = True, **_: Any) -> Artifact:
        """`edgekd quantize` and the pipeline hand a file: a torch one (checkpoint or .pt2)."""
        module, sample = self._module_of(src, target, f"ExecuTorch quantizes a torch model (torch.export), "
                                         f"not {src.name}", hint="give an edgekd checkpoint (.pt) or a .pt2 file")
        return self._quantize_module(module, sample, target, out_dir, calib, stem=stem,
                                     per_channel=per_channel)

    @staticmethod
    def _module_of(src: Path, target: TargetSpec, refusal: str, *, hint: str):
        """(the module in eval mode, a zero batch of the target's batch size) from a torch file
        (checkpoint or .pt2) that records its input shape; another file is refused with ``refusal``."""
        if src.suffix.lower() not in TORCH_SUFFIXES:
            raise BadInputError(refusal, hint=hint)
        import torch

        module, _ = load_torch_file(src)
        shape = stored_input_shape(src)
        if not shape:
            raise BadInputError(f"{src.name} does not record its input shape",
                                hint="give a student spec or an edgekd checkpoint, or pass --shape C,H,W")
        return set_mode(module, False), torch.zeros((target.batch, *shape))

    def load(self, artifact: Artifact, target: TargetSpec) -> Session:
        _require()
        p = check_file(artifact.path, "ExecuTorch program", PTE_SUFFIXES)
        return ETSession(p, target)
