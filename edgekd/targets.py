"""Targets: a named device + runtime + precision, loaded from targets/*.yaml (data, not code)."""
from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import BadInputError


class Runtime(str, Enum):
    torch = "torch"
    onnxruntime = "onnxruntime"
    openvino = "openvino"
    tensorrt = "tensorrt"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    int8 = "int8"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    gpu = "gpu"  # OpenVINO's GPU plugin
    npu = "npu"


class MeasureSettings(BaseModel):
    """The measurement protocol's knobs (docs/LATENCY.md). Defaults live here and only here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warmup_s: float = Field(1.0, ge=0.0, description="minimum warm-up time in seconds")
    warmup_iters: int = Field(10, ge=1, description="minimum warm-up iterations")
    min_iters: int = Field(200, ge=10, description="minimum number of timed inferences")
    min_time_s: float = Field(1.0, ge=0.0, description="minimum total timed seconds")
    max_iters: int = Field(100_000, ge=10, description="stop sampling after this many")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="confidence of the p90 interval")
    unstable_iqr: float = Field(0.10, gt=0.0, description="IQR/median above which a run is unstable")
    sessions: int = Field(1, ge=1, le=64, description=(
        "load the model this many times and split the samples evenly between the loads (the "
        "first warmed up for warmup_s, each further one for warmup_s / sessions); a runtime places "
        "a loaded model's buffers anew on every load, which can move the median by several "
        "percent from one load to the next"))


class RemoteSpec(BaseModel):
    """How to reach a target device over SSH (used by remote measurement)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    user: Optional[str] = None
    port: int = Field(22, ge=1, le=65535)
    identity_file: Optional[str] = None
    command: str = "edgekd"
    workdir: str = "~/.edgekd-remote"
    connect_timeout_s: float = Field(10.0, gt=0)
    command_timeout_s: float = Field(900.0, gt=0)
    strict_host_key_checking: Literal["yes", "accept-new", "no"] = Field(
        "accept-new", description="ssh StrictHostKeyChecking; accept-new trusts a host on first use")
    known_hosts_file: Optional[str] = Field(
        None, description="known_hosts to use; None = ssh/known_hosts under the edgekd cache dir")
    env: dict[str, str] = Field(default_factory=dict, description="environment set for the remote command")
    ssh_options: dict[str, str] = Field(default_factory=dict, description="extra `ssh -o KEY=VALUE` options")
    copy_retries: int = Field(3, ge=1, le=10, description="attempts to copy a file before giving up")

    @field_validator("host", "user")
    @classmethod
    def _no_option_lookalike(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (not v or v.startswith("-") or any(c.isspace() or c in "@/" for c in v)):
            raise ValueError("must be a plain host or user name (no leading '-', spaces, '@' or '/')")
        return v

    @field_validator("env", "ssh_options")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        for k in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                raise ValueError(f"'{k}' is not a valid name (letters, digits, '_')")
        return v


class TargetSpec(BaseModel):
    """One target. Frozen: a target never changes once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    name: str
    description: str = ""
    runtime: Runtime
    device: Device = Device.cpu
    precision: Precision = Precision.fp32
    threads: Optional[int] = Field(None, ge=1, description="intra-op threads; None = runtime default")
    batch: int = Field(1, ge=1)
    input_shape: Optional[tuple[int, ...]] = Field(
        None, description="per-sample input shape (C, H, W); None = the model's own")
    layout: str = "NCHW"
    round_to: int = Field(8, ge=1, description="channel multiple the target's kernels prefer")
    measure: MeasureSettings = MeasureSettings()
    remote: Optional[RemoteSpec] = None
    source: Optional[str] = Field(None, description="file the target was loaded from")

    @field_validator("layout")
    @classmethod
    def _layout(cls, v: str) -> str:
        if v not in ("NCHW", "NHWC", "NC"):
            raise ValueError("layout must be NCHW, NHWC or NC")
        return v

    @property
    def is_int8(self) -> bool:
        return self.precision == Precision.int8

    def summary(self) -> str:
        thr = f", {self.threads} threads" if self.threads else ""
        return f"{self.runtime.value} on {self.device.value}, {self.precision.value}, batch {self.batch}{thr}"


def targets_dirs() -> list[Path]:
    """Where named targets are looked up, first match wins.

    EDGEKD_TARGETS_PATH (os.pathsep-separated), ./targets, the repository's targets/ (editable
    install), and the copy packed into the wheel.
    """
    dirs: list[Path] = []
    env = os.environ.get("EDGEKD_TARGETS_PATH")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    dirs += [Path.cwd() / "targets", here.parent / "targets", here / "_data" / "targets"]
    seen, out = set(), []
    for d in dirs:
        key = str(d.resolve()) if d.exists() else str(d)
        if key not in seen and d.is_dir():
            seen.add(key)
            out.append(d)
    return out


def _read_yaml(path: Path) -> dict:
    from .util_io import read_yaml_mapping

    return read_yaml_mapping(path, what="target file", read_hint="check the target path",
                             shape_hint="see targets/ort-cpu.yaml for an example")[0]


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def measure_settings(base: MeasureSettings, overrides: dict, *, what: str = "option") -> MeasureSettings:
    """``base`` with ``overrides`` (e.g. from command-line options), validated: a value out of
    range is a BadInputError naming it, not a traceback."""
    try:
        return MeasureSettings.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        raise BadInputError(f"invalid measurement {what}: {_validation_message(exc)}",
                            hint="see `edgekd bench --help` for what each one means") from exc


def target_from_dict(data: dict, *, name: str | None = None, source: str | None = None) -> TargetSpec:
    data = dict(data)
    if name and "name" not in data:
        data["name"] = name
    if source:
        data["source"] = source
    try:
        return TargetSpec.model_validate(data)
    except ValidationError as exc:
        where = source or data.get("name", "target")
        raise BadInputError(f"invalid target {where}: {_validation_message(exc)}",
                            hint="fix the field named, see targets/*.yaml for examples") from exc


def load_target_file(path: str | os.PathLike) -> TargetSpec:
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"target file {p} does not exist", hint="check the path")
    return target_from_dict(_read_yaml(p), name=p.stem, source=str(p))


def _named_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in targets_dirs():
        for f in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            found.setdefault(f.stem, f)
    return found


def target_names() -> list[str]:
    return sorted(_named_files())


def load_target(name_or_path: "str | os.PathLike | TargetSpec") -> TargetSpec:
    """A target by name (``ort-cpu``) or by the path of a YAML file."""
    if isinstance(name_or_path, TargetSpec):
        return name_or_path
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        return load_target_file(text)
    files = _named_files()
    if text not in files:
        import difflib

        close = difflib.get_close_matches(text, list(files), n=1)
        did = f" (did you mean '{close[0]}'?)" if close else ""
        raise BadInputError(f"unknown target '{text}'{did}; known targets: {', '.join(sorted(files))}",
                            hint="or pass the path of a target YAML file")
    return load_target_file(files[text])


def list_targets() -> list[TargetSpec]:
    return [load_target_file(p) for _, p in sorted(_named_files().items())]


def int8_target_names() -> list[str]:
    out = []
    for name in target_names():
        try:
            if load_target(name).is_int8:
                out.append(name)
        except BadInputError:
            continue
    return out


def fp32_twin(target: TargetSpec) -> TargetSpec:
    """The fp32 target that runs the same runtime, device, threads and batch as ``target``
    (the reference an INT8 model is compared with)."""
    if target.runtime.value == "tensorrt":
        # TensorRT's reference is the fp16 engine (fp32 is never what one deploys there).
        for cand in ("tensorrt-fp16",):
            if cand in target_names():
                return load_target(cand)
    base = target.name[:-len("-int8")] if target.name.endswith("-int8") else None
    if base and base in target_names():
        twin = load_target(base)
        if (twin.runtime, twin.device, twin.precision) == (target.runtime, target.device, Precision.fp32):
            return twin.model_copy(update={"threads": target.threads, "batch": target.batch})
    return target.model_copy(update={"precision": Precision.fp32, "name": f"{target.name}-fp32"})
