"""Targets: a named device + runtime + precision, loaded from targets/*.yaml (data, not code)."""
from __future__ import annotations

import logging
import os
import re
from enum import Enum
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import BadInputError

log = logging.getLogger(__name__)

# A target name becomes a file and folder name (OUT/<target>/, <target>-<family>.json): a slug.
_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_HOST = re.compile(r"[A-Za-z0-9._:%-]+")  # a host name, IPv4 or IPv6 address (no shell characters)
_USER = re.compile(r"[A-Za-z0-9._-]+")


class Runtime(str, Enum):
    torch = "torch"
    onnxruntime = "onnxruntime"
    openvino = "openvino"
    tensorrt = "tensorrt"
    executorch = "executorch"


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
    def _no_option_lookalike(cls, v: Optional[str], info) -> Optional[str]:
        allowed = _HOST if info.field_name == "host" else _USER
        if v is not None and (v.startswith("-") or not allowed.fullmatch(v)):
            raise ValueError(f"must be a plain {info.field_name} name (letters, digits, '.', '-', '_'"
                             f"{', :, %' if info.field_name == 'host' else ''}; no leading '-')")
        return v

    @field_validator("known_hosts_file")
    @classmethod
    def _known_hosts_name(cls, v: Optional[str]) -> Optional[str]:
        # ssh appends host keys to it: a target must not be able to aim that at ~/.bashrc
        if v is not None and "known_hosts" not in Path(v).name:
            raise ValueError("must be a file whose name contains 'known_hosts' (ssh appends host keys to it)")
        return v

    @field_validator("env", "ssh_options")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                raise ValueError(f"'{k}' is not a valid name (letters, digits, '_')")
            if any(ord(c) < 32 or ord(c) == 127 for c in str(val)):
                raise ValueError(f"the value of '{k}' holds a control character (a line break?)")
        return v


# ---------------------------------------------------------------- ssh options a target may set

SSH_ALLOW_ENV = "EDGEKD_SSH_ALLOW"
# Options that only tune the one connection to remote.host: ciphers and keys, timeouts and
# keep-alives, authentication methods, host-key handling, logging. Everything else (ProxyCommand,
# LocalCommand, KnownHostsCommand, ProxyJump, Include, Match, forwardings, ControlPath, SendEnv,
# SetEnv, ForwardAgent, PKCS11Provider, ...) can run a program here, open another connection, or
# send local data or credentials somewhere: refused unless SSH_ALLOW_ENV names it.
SAFE_SSH_OPTIONS = frozenset(o.lower() for o in (
    "AddressFamily", "CASignatureAlgorithms", "CheckHostIP", "Ciphers", "Compression",
    "ConnectionAttempts", "ConnectTimeout", "FingerprintHash", "GSSAPIAuthentication",
    "HashKnownHosts", "HostKeyAlgorithms", "HostKeyAlias", "IdentitiesOnly", "IPQoS",
    "KbdInteractiveAuthentication", "KexAlgorithms", "LogLevel", "MACs", "NumberOfPasswordPrompts",
    "PasswordAuthentication", "PreferredAuthentications", "PubkeyAcceptedAlgorithms",
    "PubkeyAcceptedKeyTypes", "PubkeyAuthentication", "RekeyLimit", "RequiredRSASize",
    "ServerAliveCountMax", "ServerAliveInterval", "TCPKeepAlive", "UpdateHostKeys",
    "VerifyHostKeyDNS"))
# Options a field of remote: (or edgekd itself) sets: never taken from ssh_options.
_SSH_OPTION_FIELDS = {"hostname": "remote.host", "port": "remote.port", "user": "remote.user",
                      "identityfile": "remote.identity_file", "remotecommand": "remote.command",
                      "userknownhostsfile": "remote.known_hosts_file",
                      "stricthostkeychecking": "remote.strict_host_key_checking",
                      "batchmode": "nothing (edgekd always runs ssh with BatchMode=yes)"}
_SAFE_VALUE = re.compile(r"[A-Za-z0-9@%+,._:/~-]+")


def ssh_options_allowed_here() -> frozenset[str]:
    """The ssh options this machine's user allows beyond SAFE_SSH_OPTIONS (lower case): the
    environment variable EDGEKD_SSH_ALLOW, e.g. ``ProxyJump,ControlPath``. A target file cannot
    set it (remote.env is the device's environment, never this process's)."""
    raw = os.environ.get(SSH_ALLOW_ENV, "")
    return frozenset(w.lower() for w in re.split(r"[\s,]+", raw) if w)


def checked_ssh_options(remote: "RemoteSpec", target: str = "", source: "str | None" = None) -> dict[str, str]:
    """``remote.ssh_options`` once each is allowed: an option of SAFE_SSH_OPTIONS with a plain
    value, or one that EDGEKD_SSH_ALLOW names. BadInputError (exit 2) names the first refused."""
    allowed = ssh_options_allowed_here()
    where = f"target '{target}'" + (f" ({source})" if source else "")
    out: dict[str, str] = {}
    for key, value in remote.ssh_options.items():
        low = key.lower()
        if low in _SSH_OPTION_FIELDS:
            raise BadInputError(f"remote.ssh_options.{key} of {where} is not taken from ssh_options",
                                hint=f"set {_SSH_OPTION_FIELDS[low]} instead")
        if low in allowed:
            out[key] = str(value)
            continue
        if low not in SAFE_SSH_OPTIONS:
            raise BadInputError(f"remote.ssh_options.{key} of {where} is refused: ssh options other than "
                                f"connection settings can run a program here or send local data elsewhere",
                                hint=f"if you trust that file, allow it on this machine with "
                                     f"{SSH_ALLOW_ENV}={key} (docs/REMOTE.md)")
        if not _SAFE_VALUE.fullmatch(str(value)):
            raise BadInputError(f"remote.ssh_options.{key} of {where} has the value {str(value)!r}, with "
                                f"spaces, quotes or other characters ssh options do not need",
                                hint=f"write it without them, or allow it as given with {SSH_ALLOW_ENV}={key}")
        out[key] = str(value)
    return out


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

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not _SLUG.fullmatch(v):
            raise ValueError(f"{v!r} is not a target name: use up to 100 lowercase letters, digits, "
                             f"'-', '_' and '.', starting with a letter or digit (e.g. 'my-board'); "
                             f"set name: (or rename the file) to such a slug")
        return v

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


def _shipped_targets_dirs() -> list[Path]:
    """The targets edgekd ships: the repository's targets/ (editable install) and the wheel's copy."""
    here = Path(__file__).resolve().parent
    return [here.parent / "targets", here / "_data" / "targets"]


def targets_dirs() -> list[Path]:
    """Where named targets are looked up, first match wins.

    EDGEKD_TARGETS_PATH (os.pathsep-separated), ./targets, the repository's targets/ (editable
    install), and the copy packed into the wheel. A name found before the shipped ones that is
    also shipped is said once on stderr (``_named_files``): it is whoever wrote that folder's
    file that decides how, and where, the target runs.
    """
    dirs: list[Path] = []
    env = os.environ.get("EDGEKD_TARGETS_PATH")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs += [Path.cwd() / "targets", *_shipped_targets_dirs()]
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
        parts.append(f"{loc}: {str(err['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def measure_settings(base: MeasureSettings, overrides: dict, *, what: str = "option") -> MeasureSettings:
    """``base`` with ``overrides`` (e.g. from command-line options), validated: a value out of
    range is a BadInputError naming it, not a traceback."""
    try:
        return MeasureSettings.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        raise BadInputError(f"invalid measurement {what}: {_validation_message(exc)}",
                            hint="see `edgekd bench --help` for what each one means") from exc


MEASURE_ENV = "EDGEKD_MEASURE"


def measure_overrides_from_env() -> dict:
    """The measurement settings EDGEKD_MEASURE sets for every target read whose file does not
    set them itself, e.g. ``warmup_s=0.05,min_time_s=0.1,min_iters=60``: a quick look (a smoke
    test, a test suite), not a figure to set a budget by. Empty when unset; a malformed value is
    a BadInputError."""
    text = os.environ.get(MEASURE_ENV, "").strip()
    out: dict = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in MeasureSettings.model_fields:
            raise BadInputError(f"{MEASURE_ENV} has '{part}', which is not KEY=VALUE with KEY one of "
                                f"{', '.join(MeasureSettings.model_fields)}",
                                hint=f"e.g. {MEASURE_ENV}=warmup_s=0.05,min_time_s=0.1, or unset it")
        out[key] = value.strip()
    return out


def target_from_dict(data: dict, *, name: str | None = None, source: str | None = None) -> TargetSpec:
    data = dict(data)
    if name and "name" not in data:
        data["name"] = name
    if source:
        data["source"] = source
    try:
        spec = TargetSpec.model_validate(data)
    except ValidationError as exc:
        where = source or data.get("name", "target")
        raise BadInputError(f"invalid target {where}: {_validation_message(exc)}",
                            hint="fix the field named, see targets/*.yaml for examples") from exc
    given = data.get("measure") if isinstance(data.get("measure"), dict) else {}
    env = {k: v for k, v in measure_overrides_from_env().items() if k not in given}
    if env:  # what the target file says itself stays
        log.info("%s sets the measurement of %s: %s", MEASURE_ENV, spec.name, env)
        spec = spec.model_copy(update={"measure": measure_settings(spec.measure, env, what=f"setting in {MEASURE_ENV}")})
    return spec


def load_target_file(path: str | os.PathLike) -> TargetSpec:
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"target file {p} does not exist", hint="check the path")
    return target_from_dict(_read_yaml(p), name=p.stem, source=str(p))


_shadow_said: set[tuple[str, str]] = set()


def _named_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    shipped: dict[str, Path] = {}
    roots = {str(d.resolve()) for d in _shipped_targets_dirs() if d.is_dir()}
    for d in targets_dirs():
        is_shipped = str(d.resolve()) in roots
        for f in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            found.setdefault(f.stem, f)
            if is_shipped:
                shipped.setdefault(f.stem, f)
    for name, f in sorted(found.items()):
        if name in shipped and f != shipped[name] and (name, str(f)) not in _shadow_said:
            _shadow_said.add((name, str(f)))
            log.warning("target '%s' is read from %s, which shadows the shipped %s (how and where "
                        "it runs, remote: included, is that file's)", name, f, shipped[name])
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
    """Every target that loads; a file that does not (bad YAML, an unknown field) is skipped with
    a warning naming it, so one broken file on EDGEKD_TARGETS_PATH does not hide the others."""
    out = []
    for _, p in sorted(_named_files().items()):
        try:
            out.append(load_target_file(p))
        except BadInputError as exc:
            log.warning("skipping target file %s: %s", p, exc.one_line())
    return out


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
