"""The Backend protocol: each runtime knows how to build (convert/quantize) and run, nothing else.

Timing is not here: latency/measure.py times any Session the same way.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..targets import TargetSpec


class ArtifactFormat:
    ONNX = "onnx"
    OPENVINO_IR = "openvino-ir"
    TENSORRT_ENGINE = "tensorrt-engine"
    TORCHSCRIPT = "torchscript"
    EXPORTED_PROGRAM = "torch-export"

    ALL = (ONNX, OPENVINO_IR, TENSORRT_ENGINE, TORCHSCRIPT, EXPORTED_PROGRAM)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


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


class Backend(ABC):
    """One runtime. Heavy imports happen inside methods, never at module import."""

    name: str = ""
    artifact_format: str = ArtifactFormat.ONNX

    @abstractmethod
    def available(self, target: TargetSpec | None = None) -> tuple[bool, str]:
        """(True, version) or (False, the reason: which package or device is missing)."""

    @abstractmethod
    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              calib: Any | None = None) -> Artifact:
        """Turn the hub ONNX file into this runtime's artifact for ``target``, under ``out_dir``."""

    @abstractmethod
    def load(self, artifact: Artifact, target: TargetSpec) -> Session:
        """Load an artifact into a runnable Session configured as the target says."""

    def versions(self) -> dict[str, str]:
        ok, ver = self.available()
        return {self.name: ver} if ok else {}
