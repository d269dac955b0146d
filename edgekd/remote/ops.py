"""Running edgekd on a remote target: probe the device, send the target and the model, run an
edgekd command there and bring its JSON (and the device's fingerprint) back.

The device runs the same target minus ``remote:`` (sent along as YAML), so it measures with
its own local code path, exactly as `edgekd bench` would there.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .._version import __version__
from ..errors import BadInputError, RuntimeMissingError
from ..targets import MeasureSettings, TargetSpec
from ..backends.base import side_files  # noqa: F401 - the files a model needs beside it
from .ssh import Completed, Remote, SSHTarget, rjoin, rquote, safe_name

log = logging.getLogger(__name__)

FILE_MARK = b"\n--edgekd-remote-file--\n"
_PROBE_MARK = "edgekd-probe"


class Upload(str):
    """A local file given as an argument of a remote command: copied first, replaced by its remote path."""


# The pushed target YAML, as an argument of a remote command.
TARGET = "\0edgekd-remote-target\0"


@dataclass(frozen=True)
class Probe:
    """What a device says about itself (one ssh round trip)."""

    host: str
    arch: str
    home: str
    edgekd_version: str | None
    returncode: int
    stderr: str
    elapsed_s: float

    @property
    def version_ok(self) -> bool:
        return self.edgekd_version == __version__


def ssh_for(target: TargetSpec) -> SSHTarget:
    if target.remote is None:
        raise BadInputError(f"target '{target.name}' has no remote: section",
                            hint="add remote: {host: ...} to its YAML (see docs/REMOTE.md)")
    return SSHTarget(target.remote, target.name, target.source)


def is_remote(target: TargetSpec) -> bool:
    return target.remote is not None


_probe_cache: dict[tuple, Probe] = {}
_probe_lock = threading.Lock()


def probe(target: TargetSpec, *, fresh: bool = False) -> Probe:
    """Reach the device and ask for its host name, architecture and edgekd version.

    Raises RuntimeMissingError (exit 4) naming the host and the cause when ssh cannot get in.
    """
    return _probe(ssh_for(target), fresh=fresh)


def _probe(ssh: SSHTarget, *, fresh: bool = False, planned: Sequence[tuple[str, str]] = ()) -> Probe:
    """`probe`, checking the PLANNED files (`SSHTarget.plan`) in the same round trip."""
    key = (ssh.label, tuple(ssh.ssh_argv()), ssh.spec.command, tuple(sorted(ssh.spec.env.items())))
    checks = ssh.checks_line(planned) + "; " if planned else ""
    with _probe_lock:
        cached = None if fresh else _probe_cache.get(key)
    if cached is not None:
        if planned:
            res = ssh.run(checks + "true", timeout_s=60, what="checking files")
            ssh.read_checks(planned, res.text if res.returncode == 0 else "")
        return cached
    line = (checks + f"printf '{_PROBE_MARK} %s %s %s\\n' \"$(uname -n)\" \"$(uname -m)\" \"$HOME\"; "
            + ssh.edgekd_line(["--version"]))
    res = ssh.run(line, timeout_s=60, what="probing the device")
    if planned:
        ssh.read_checks(planned, res.text)
    host, arch, home = ssh.spec.host, "", ""
    version = None
    for ln in res.text.splitlines():
        if ln.startswith("edgekd-have "):
            continue
        if ln.startswith(_PROBE_MARK + " "):
            parts = ln.split()
            host, arch = (parts[1] if len(parts) > 1 else host), (parts[2] if len(parts) > 2 else "")
            home = " ".join(parts[3:])
        m = re.search(r"version\s+(\S+)", ln)
        if m and not ln.startswith(_PROBE_MARK):
            version = m.group(1)
    p = Probe(host=host, arch=arch, home=home, edgekd_version=version, returncode=res.returncode, stderr=res.stderr,
              elapsed_s=res.elapsed_s)
    with _probe_lock:
        _probe_cache[key] = p
    return p


def check_device(target: TargetSpec) -> Probe:
    """Probe and insist on a working edgekd of this very version on the device."""
    return prepare(target)[1]


def prepare(target: TargetSpec, files: Sequence["tuple[Path, str | None, str | None]"] = ()
            ) -> tuple[SSHTarget, Probe]:
    """`check_device`, also asking in the same round trip which of FILES ((local path, name,
    key) as `SSHTarget.push` takes them) are on the device already: the SSHTarget returned then
    pushes them without a round trip of its own for the check."""
    ssh = ssh_for(target)
    p = _probe(ssh, planned=[ssh.plan(f, name=n, key=k) for f, n, k in files])
    if p.returncode != 0 or p.edgekd_version is None:
        raise ssh.remote_error(Completed(p.returncode if p.returncode else 127, b"", p.stderr, p.elapsed_s),
                               "running edgekd")
    if not p.version_ok:
        raise RuntimeMissingError(
            f"edgekd on {ssh.label} is version {p.edgekd_version}, this one is {__version__}",
            hint=f"install edgekd {__version__} on the device (pip install edgekd=={__version__}), "
                 f"or point remote.command at one of that version")
    return ssh, p


def remote_target_yaml(target: TargetSpec, settings: MeasureSettings | None = None) -> str:
    """The target as the device sees it: the same YAML minus ``remote:``."""
    import yaml

    d = target.model_dump(mode="json", exclude={"remote", "source"})
    if settings is not None:
        d["measure"] = settings.model_dump(mode="json")
    return yaml.safe_dump(d, sort_keys=False)


def group_files(path: "str | Path") -> list["tuple[Path, str | None, str | None]"]:
    """A model file and its side files as (local path, name, key) for `SSHTarget.push`, the
    model last. A lone file is keyed by its own sha256; a model with side files by the hash of
    all of them, so they share a folder and the model finds its data there."""
    from ..util_io import sha256_file

    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"model file {p} does not exist", hint="check the path")
    sides = side_files(p)
    for s in sides:
        if not s.is_file():
            raise BadInputError(f"{s.name}, which {p.name} loads, is missing beside it", hint="restore it")
    if not sides:
        return [(p, None, None)]
    key = hashlib.sha256("\n".join(sha256_file(f) for f in [p, *sides]).encode()).hexdigest()
    return [(f, f.name, key) for f in [*sides, p]]


def push_group(ssh: SSHTarget, path: "str | Path") -> dict[Path, str]:
    """Copy a model file and its side files to one device folder; {local path: remote path}."""
    out = {f: ssh.push(f, name=n, key=k) for f, n, k in group_files(path)}
    return {Path(path): out.pop(Path(path)), **out}


def push_model(ssh: SSHTarget, path: "str | Path") -> str:
    """Copy a model file (with its side files: an OpenVINO .bin, ONNX external data) to the
    device; return the model's remote path."""
    return push_group(ssh, path)[Path(path)]


def _looks_like_file(ref: str) -> bool:
    from ..models.ref import looks_like_path

    return looks_like_path(ref)


@dataclass
class RemoteRun:
    """One remote edgekd command's result: stdout (text), an optional collected file, the probe."""

    completed: Completed
    probe: Probe
    ssh: SSHTarget
    file: bytes | None = None
    args: list[str] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return self.completed.text

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise RuntimeMissingError(f"edgekd on {self.ssh.label} did not answer with JSON "
                                      f"(got {self.stdout[:80]!r})",
                                      hint="run the command on the device by hand to see what it prints") from exc


def run_edgekd(target: TargetSpec, args: Sequence[Any], *, settings: MeasureSettings | None = None,
               env: Mapping[str, str] | None = None, collect: str | None = None, stdout_to_stderr: bool = False,
               stderr_lines: Callable[[str], None] | None = None, timeout_s: float | None = None,
               what: str = "", allow_fail: bool = False, inputs: Mapping[str, str] | None = None,
               links: Mapping[str, str] | None = None, ssh: SSHTarget | None = None) -> RemoteRun:
    """Run ``edgekd ARGS`` on TARGET's device and return what it printed.

    In ARGS, ``Upload(path)`` is a local file copied to the device first (content-addressed,
    verified) and replaced by its remote path, ``TARGET`` is the target's YAML minus ``remote:``
    (with ``settings`` as its measure: section when given), and ``Remote(path)`` a path already on
    the device. ``collect`` is a remote file (relative to a fresh run directory) whose bytes come
    back in ``RemoteRun.file``, also when the command fails; ``inputs`` maps names in that run
    directory to remote files copied there first, ``links`` likewise for files the command only
    reads (hard-linked when the file system allows, else copied; names may hold sub-folders, so
    a model keeps its place beside a manifest.json). A non-zero remote exit raises the
    same EdgeKDError class as it would here, with the device named (unless ``allow_fail``).

    Round trips: one that probes the device (once per process) and checks which uploads are
    there already, one per upload that is not, and the run, which writes the target's YAML
    into the run folder itself. ``ssh``: the SSHTarget of a `prepare` that checked the uploads.
    """
    if ssh is None:
        ssh, p = prepare(target, [f for a in args if isinstance(a, Upload) for f in group_files(a)])
    else:
        p = check_device(target)
    run_dir = rjoin(ssh.workdir, "runs", secrets.token_hex(6))
    line = f"mkdir -p {rquote(run_dir)} && cd {rquote(run_dir)} && "
    argv: list[str] = []
    for a in args:
        if a is TARGET or a == TARGET:
            text = remote_target_yaml(target, settings)
            if len(text) > 32_000:  # far over any target; kept well under a command line's limit
                argv.append(Remote(ssh.write_text(text, f"{target.name}.yaml")))
                continue
            dest = rjoin(run_dir, ".edgekd-target", safe_name(f"{target.name}.yaml"))
            line += f"mkdir -p {rquote(dest.rsplit('/', 1)[0])} && printf '%s' {shlex.quote(text)} > {rquote(dest)} && "
            argv.append(Remote(dest))
        elif isinstance(a, Upload):
            argv.append(Remote(push_model(ssh, a)))
        elif isinstance(a, Remote):
            argv.append(a)
        else:
            argv.append(str(a))
    for name, src in (inputs or {}).items():
        line += f"cp -f {rquote(src)} {rquote(rjoin(run_dir, name))} && "
    for name, src in (links or {}).items():
        if name.startswith("/") or ".." in name.split("/"):
            raise BadInputError(f"run-folder name '{name}' must be a relative path inside the run folder")
        dst = rjoin(run_dir, name)
        line += (f"mkdir -p {rquote(dst.rsplit('/', 1)[0])} && "
                 f"{{ ln -f {rquote(src)} {rquote(dst)} 2>/dev/null || cp -f {rquote(src)} {rquote(dst)}; }} && ")
    line += ssh.edgekd_line(argv, env)
    if stdout_to_stderr:
        line += " >&2"
    line += "; rc=$?"
    if collect:
        mark = FILE_MARK.decode().strip("\n")
        f = rquote(rjoin(run_dir, collect))
        line += f"; if [ -f {f} ]; then printf '\\n%s\\n' {mark!s}; cat {f}; fi"
    line += f"; cd / && rm -rf {rquote(run_dir)}; exit $rc"
    res = ssh.run(line, timeout_s=timeout_s, what=what or f"edgekd {argv[0] if argv else ''}".strip(),
                  stderr_lines=stderr_lines)
    out, collected = res.stdout, None
    if collect and FILE_MARK in out:
        out, collected = out.split(FILE_MARK, 1)
    res = Completed(res.returncode, out, res.stderr, res.elapsed_s)
    run = RemoteRun(completed=res, probe=p, ssh=ssh, file=collected, args=[str(a) for a in argv])
    if res.returncode != 0 and not allow_fail:
        raise ssh.remote_error(res, what or f"edgekd {argv[0] if argv else ''}".strip())
    return run


def trust_args(path: "str | Path") -> list[str]:
    """["--trust-code"] when PATH is a file that holds code (TorchScript, .pt2) and this process
    may run it (models.ref.may_run_code): the device then may too. Else []."""
    from ..models.ref import TORCH_SUFFIXES, TRUST_FLAG, may_run_code

    p = Path(str(path))
    if p.suffix.lower() in TORCH_SUFFIXES and p.is_file() and may_run_code(p):
        return [TRUST_FLAG]
    return []


def remote_fingerprint(ssh: SSHTarget, p: Probe) -> dict:
    s = ssh.spec
    return {"host": s.host, "port": s.port, "user": s.user, "device_host": p.host, "arch": p.arch,
            "edgekd_version": p.edgekd_version}


def remote_bench(model_ref: "str | Path", target: TargetSpec, *, settings: MeasureSettings | None = None,
                 sample_shape: tuple | None = None, on_progress: Callable[[int, int], None] | None = None,
                 env: Mapping[str, str] | None = None, in_channels: int = 1):
    """`bench` on the target's device: copy the model there (if it is a file), run
    `edgekd bench --json` with the target minus ``remote:``, and return its BenchResult, whose
    environment is the device's fingerprint plus ``remote`` (how it was reached), and whose
    ``memory`` is the size and peak memory the device measured (its peak_source says so)."""
    import numpy as np

    from ..latency.measure import BenchResult
    from ..latency.memory import memory_from_dict
    from ..latency.stats import LatencyStats

    ref = str(model_ref)
    model_arg: Any = Upload(ref) if _looks_like_file(ref) else ref
    args: list[Any] = ["bench", model_arg, "--target", TARGET, "--json", "--samples", "samples.json"]
    if sample_shape:
        args += ["--shape", ",".join(str(int(d)) for d in sample_shape)]
    if in_channels != 1:
        args += ["--in-channels", str(int(in_channels))]
    args += trust_args(ref)
    run = run_edgekd(target, args, settings=settings or target.measure, env=env, collect="samples.json",
                     what=f"bench of {Path(ref).name if model_arg is not ref else ref}")
    d = run.json()
    env_d = dict(d.get("environment") or {})
    env_d["remote"] = remote_fingerprint(run.ssh, run.probe)
    lat = dict(d["latency_ms"])
    stats = LatencyStats.from_dict({**lat, "warmup": d.get("warmup_iters", 0), "unstable": d.get("unstable", False),
                                    "environment": env_d})
    samples = np.asarray(json.loads(run.file)["samples_ms"] if run.file else [], dtype=np.float64)
    if on_progress is not None:
        on_progress(int(stats.n), int(stats.n))
    return BenchResult(target=target.name, model=ref, model_sha256=str(d.get("model_sha256", "")),
                       artifact_format=str(d.get("artifact_format", "")), stats=stats, samples_ms=samples,
                       first_inference_ms=float(d.get("first_inference_ms") or 0.0),
                       build_s=float(d.get("build_s") or 0.0), load_s=float(d.get("load_s") or 0.0),
                       input_shape=tuple(d.get("input_shape") or ()), environment=env_d,
                       memory=_on_device(memory_from_dict(d.get("memory")), run.probe.host))


def _on_device(mem, host: str):
    """A MemoryUse the device measured, its peak_source naming the device (None stays None)."""
    from dataclasses import replace

    return None if mem is None else replace(mem, peak_source=f"{mem.peak_source} on device {host}")


def remote_runtime(target: TargetSpec) -> dict:
    """The device's view of the target: its `edgekd targets --json` row (available, reason, version)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgekd-remote-") as tmp:
        local = Path(tmp) / safe_name(f"{target.name}.yaml")
        local.write_text(remote_target_yaml(target), encoding="utf-8")
        ssh, p = prepare(target, [(local, None, None)])
        yaml_dir = ssh.push(local).rsplit("/", 1)[0]
    if yaml_dir.startswith("~/") and p.home:
        yaml_dir = rjoin(p.home, yaml_dir[2:])
    run = run_edgekd(target, ["targets", "--json"], env={"EDGEKD_TARGETS_PATH": yaml_dir},
                     what="listing targets", timeout_s=120, ssh=ssh)
    rows = [r for r in run.json().get("targets", []) if r.get("name") == target.name]
    if not rows:
        raise RuntimeMissingError(f"edgekd on {ssh.label} did not list target '{target.name}'")
    return rows[0]
