"""The Backend protocol: each runtime knows how to build, quantize and run its artifacts, nothing else.

A backend declares what it builds from (``builds_from``: the hub ONNX file, or a torch program).
Quantization is a capability of the backend (``quantize``), as building is: the algorithm that
decides whether an INT8 model is kept (edgekd.quantize) is written once against it. Timing is
not here: latency/measure.py times any Session the same way.
"""
from __future__ import annotations

import importlib.util
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BadInputError, missing_package
from ..targets import TargetSpec
from ..util_io import sha256_file  # noqa: F401 - re-exported: artifacts are keyed by it


class ArtifactFormat:
    ONNX = "onnx"
    OPENVINO_IR = "openvino-ir"
    TENSORRT_ENGINE = "tensorrt-engine"
    TORCHSCRIPT = "torchscript"
    EXPORTED_PROGRAM = "torch-export"
    EXECUTORCH_PROGRAM = "executorch-pte"

    ALL = (ONNX, OPENVINO_IR, TENSORRT_ENGINE, TORCHSCRIPT, EXPORTED_PROGRAM, EXECUTORCH_PROGRAM)


@dataclass(frozen=True)
class Artifact:
    """A built model file (plus side files, e.g. OpenVINO's .bin) and how it was made."""

    path: Path
    format: str
    sha256: str
    target: str | None = None
    precision: str | None = None
    extra_paths: tuple[Path, ...] = ()
    tool_versions: Mapping[str, str] = field(default_factory=dict)
    build_s: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path, format: str, **kw) -> "Artifact":
        p = Path(path)
        return cls(path=p, format=format, sha256=sha256_file(p), **kw)

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.path, *self.extra_paths)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["extra_paths"] = [str(p) for p in self.extra_paths]
        d["tool_versions"] = dict(self.tool_versions)
        d["meta"] = json.loads(json.dumps(dict(self.meta), default=str))
        return d


class Session(ABC):
    """A loaded, ready-to-run model. ``run`` takes one array (or a dict by input name)."""

    input_names: Sequence[str] = ()
    output_names: Sequence[str] = ()
    # Per-input shape as the model declares it; None or a str for a dynamic dimension.
    input_shapes: Sequence[Sequence[Any]] = ()
    input_dtypes: Sequence[np.dtype] = ()
    runtime_name: str = ""
    runtime_version: str = ""

    @abstractmethod
    def run(self, inputs: "np.ndarray | Mapping[str, np.ndarray]") -> list[np.ndarray]:
        ...

    def _as_dict(self, inputs: "np.ndarray | Mapping[str, np.ndarray]") -> dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            return dict(inputs)
        if len(self.input_names) != 1:
            raise ValueError(f"model has {len(self.input_names)} inputs; pass a dict by name")
        return {self.input_names[0]: inputs}

    def close(self) -> None:  # pragma: no cover - most runtimes free on GC
        pass


def package_version(pkg: str) -> str:
    """The installed version of ``pkg``, '' when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return ""


class Backend(ABC):
    """One runtime. Heavy imports happen inside methods, never at module import."""

    name: str = ""
    artifact_format: str = ArtifactFormat.ONNX
    builds_from: str = "onnx"  # what build() takes: "onnx" (the hub file) or "torch" (a module)
    # The module that sets the runtime up, imported before a model loads where its peak memory
    # is measured (latency.memory), so the runtime's own set-up is not counted as the model's.
    runtime_module: str = ""
    native_suffixes: tuple[str, ...] = ()  # files that already are this runtime's artifact, loaded as is
    # What quantize() needs: (package, pip extra or None) pairs. Empty: no INT8 quantizer.
    quantizer_packages: tuple[tuple[str, str | None], ...] = ()

    @abstractmethod
    def available(self, target: TargetSpec | None = None) -> tuple[bool, str]:
        """(True, version) or (False, the reason: which package or device is missing)."""

    @abstractmethod
    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              calib: Any | None = None) -> Artifact:
        """Turn the hub ONNX file into this runtime's artifact for ``target``, under ``out_dir``."""

    def build_module(self, module: Any, sample: Any, target: TargetSpec, out_dir: Path, *,
                     calib: Any | None = None, name: str = "module") -> Artifact:
        """Turn a torch module (traced on ``sample``, a batch tensor) into this runtime's artifact
        for ``target``, under ``out_dir``; ``calib`` (numpy batches) quantizes for an int8 target.
        Only a backend with ``builds_from == "torch"`` has it: the others build from ONNX."""
        raise BadInputError(f"runtime '{self.name}' builds from ONNX, not from a torch module",
                            hint="export the model to ONNX first (edgekd export)")

    @abstractmethod
    def load(self, artifact: Artifact, target: TargetSpec) -> Session:
        """Load an artifact into a runnable Session configured as the target says."""

    @property
    def quantizes(self) -> bool:
        return bool(self.quantizer_packages)

    def check_quantizer(self, target: TargetSpec) -> None:
        """BadInputError when this runtime has no INT8 quantizer, RuntimeMissingError (naming the
        package to install) when its quantizer's packages are not here."""
        if not self.quantizes:
            from ..targets import int8_target_names

            raise BadInputError(f"target '{target.name}' uses runtime '{self.name}', which has no int8 quantizer",
                                hint=f"use one of: {', '.join(int8_target_names())}")
        for pkg, extra in self.quantizer_packages:
            if importlib.util.find_spec(pkg) is None:
                raise missing_package(pkg, extra=extra, what=f"target '{target.name}'")

    def quantize(self, source: Path, target: TargetSpec, out_dir: Path, calib: Any, *,
                 name: str | None = None, **opts: Any) -> Artifact:
        """INT8 post-training quantization of ``source`` (the hub ONNX file; a torch file for a
        runtime that builds from torch) for ``target``, calibrated on ``calib`` (numpy batches);
        the Artifact lands under ``out_dir``.

        Options a runtime does not use are ignored, so one call serves every runtime.
        """
        self.check_quantizer(target)
        src = Path(source)
        if not src.is_file():
            what = "ONNX model" if self.builds_from == "onnx" else "model"
            raise BadInputError(f"{what} {src} does not exist", hint="check the path")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        calib = list(calib) if not isinstance(calib, (list, tuple)) else calib
        return self._quantize(src, target, out_dir, calib, stem=name or src.stem, **opts)

    def _quantize(self, src: Path, target: TargetSpec, out_dir: Path, calib: Sequence[np.ndarray], *,
                  stem: str, **opts: Any) -> Artifact:
        raise NotImplementedError  # pragma: no cover - check_quantizer refuses first

    def versions(self) -> dict[str, str]:
        ok, ver = self.available()
        return {self.name: ver} if ok else {}


def count_samples(batches: Sequence[np.ndarray]) -> int:
    return int(sum(len(np.asarray(b)) for b in batches))


def side_files(path: "str | Path") -> list[Path]:
    """The files a model loads beside itself: an OpenVINO .xml's .bin, an ONNX file's external data.

    External data must sit in the model's own folder (as `edgekd export` writes it); a location
    in a sub-folder or outside is refused, since a device keeps one folder per model. An ONNX
    file that does not parse has none here: whatever loads it says what is wrong with it.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".xml":
        return [p.with_suffix(".bin")]
    if suffix != ".onnx" or not p.is_file():
        return []
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception:  # noqa: BLE001 - onnx raises several unrelated types for bad files
        return []
    names: dict[str, None] = {}
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        tensors = list(g.initializer)
        for node in g.node:
            for a in node.attribute:
                tensors += ([a.t] if a.HasField("t") else []) + list(a.tensors)
                graphs += ([a.g] if a.HasField("g") else []) + list(a.graphs)
        for t in tensors:
            if uses_external_data(t):
                names[ExternalDataInfo(t).location] = None
    out = []
    for loc in names:
        if Path(loc).name != loc:
            raise BadInputError(f"{p.name} keeps external data at '{loc}', not in its own folder",
                                hint="save it with the data file beside the model "
                                     "(onnx.save(..., location='NAME.data'))")
        out.append(p.parent / loc)
    return out
