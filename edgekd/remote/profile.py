"""Profiling over SSH, and several targets at once.

`profile_remote` runs `edgekd profile` on the device (the target minus ``remote:``), streams its
progress lines back as ProfileEvents and writes the device's profile here atomically; a failed or
interrupted run still brings back what was complete, and ``resume`` sends the local file over
first. `profile_targets` profiles several targets in parallel, a thread per target, each with its
own output file (`edgekd profile` shows one progress line per target).
"""
from __future__ import annotations

import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import BadInputError, EdgeKDError
from ..targets import TargetSpec, load_target

log = logging.getLogger(__name__)
_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]\s+(\S+)\s+(.+?):\s+p50\s+([0-9.eE+-]+)\s+ms\s*$")


def out_path_for(out: "str | Path", target_name: str, n_targets: int) -> Path:
    """Where TARGET's profile goes: OUT with '{target}' filled in, OUT itself for one target,
    else OUT with the target name before its suffix (p.json -> p.<target>.json)."""
    text = str(out)
    if "{target}" in text:
        return Path(text.replace("{target}", target_name))
    p = Path(text)
    if n_targets <= 1:
        return p
    return p.with_name(f"{p.stem}.{target_name}{p.suffix or '.json'}")


def profile_remote(target: "str | TargetSpec", family: str, *, out: "str | Path", grid: str = "default",
                   resume: bool = False, in_channels: int = 1, num_classes: int = 10,
                   min_time_s: float | None = None, block_min_time_s: float | None = None,
                   on_event: Callable[[Any], None] | None = None, **_ignored):
    """`profile_family` run on TARGET's device; the profile is written to OUT here."""
    from ..backends.base import sha256_file
    from ..latency.profile import ProfileEvent, ProfileRun, load_profile
    from ..util_io import atomic_write_bytes
    from .ops import TARGET, Upload, check_device, run_edgekd, ssh_for
    from .ssh import rjoin

    t0 = time.monotonic()
    spec = load_target(target)
    out = Path(out)
    if out.exists() and not resume:
        raise BadInputError(f"profile {out} already exists",
                            hint="pass --resume to complete it, or choose another --out")
    ssh = ssh_for(spec)
    check_device(spec)
    emit = on_event or (lambda ev: None)

    args: list[Any] = ["profile", "--target", TARGET, "--family", family, "--out", "profile.json",
                       "--in-channels", str(in_channels), "--num-classes", str(num_classes)]
    args += ["--grid", Upload(grid) if Path(grid).is_file() else grid]
    if min_time_s is not None:
        args += ["--min-time", repr(float(min_time_s))]
    if block_min_time_s is not None:
        args += ["--block-min-time", repr(float(block_min_time_s))]
    seed = None
    if resume and out.exists():
        load_profile(out)  # refuse a damaged local file before sending it anywhere
        digest = sha256_file(out)
        seed = rjoin(ssh.workdir, "files", digest, "profile.json")
        ssh.copy_to(out, seed, digest)
        args += ["--resume"]

    measured: list[str] = []

    def on_line(line: str) -> None:
        m = _PROGRESS.match(line.strip())
        if m:
            done, total, what, name, lat = m.groups()
            measured.append(name)
            emit(ProfileEvent("measured", what, name, int(done), int(total), float(lat)))

    emit(ProfileEvent("planned", done=0, total=0))
    run = run_edgekd(spec, args, collect="profile.json", inputs={"profile.json": seed} if seed else None,
                     stdout_to_stderr=True,
                     stderr_lines=on_line, what=f"profile of {family}", allow_fail=True)
    got = run.file
    if got:
        try:
            data = json.loads(got)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and data.get("schema"):
            atomic_write_bytes(out, got)
    if run.completed.returncode != 0:
        raise run.ssh.remote_error(run.completed, f"profile of {family}")
    prof = load_profile(out)
    emit(ProfileEvent("done", done=len(measured), total=len(measured)))
    return ProfileRun(profile=prof, path=out, measured=measured, skipped=[], elapsed_s=time.monotonic() - t0)


@dataclass
class TargetRun:
    target: str
    out: Path
    run: Any = None  # ProfileRun
    error: EdgeKDError | None = None
    remote: bool = False

    def to_dict(self) -> dict:
        """What became of this target: its profile file and counts, or its error and exit code."""
        row: dict = {"target": self.target, "profile": str(self.out), "remote": self.remote, "ok": self.error is None}
        if self.run is not None:
            p = self.run.profile
            row.update(models=len(p.models), blocks=len(p.blocks), complete=p.complete,
                       measured=len(self.run.measured), fingerprint_host=p.fingerprint.get("host"),
                       elapsed_s=round(self.run.elapsed_s, 2))
        if self.error is not None:
            row.update(error=self.error.one_line(), exit_code=self.error.exit_code)
        return row


def profile_targets(targets: Sequence["str | TargetSpec"], family: str, *, out: "str | Path",
                    on_event: Callable[[str, Any], None] | None = None, **kwargs) -> list[TargetRun]:
    """Profile FAMILY on every target at once, a thread per target; remote targets on their devices.

    Each target gets its own file (`out_path_for`). Errors are collected per target (the others
    keep going); ``on_event(target_name, ProfileEvent)`` reports progress from every thread.
    """
    from ..latency.profile import check_options, profile_family

    check_options(**{k: kwargs[k] for k in ("in_channels", "num_classes", "min_time_s", "block_min_time_s")
                     if k in kwargs})
    specs = [load_target(t) for t in targets]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BadInputError(f"target {dupes[0]} is given more than once", hint="name each target once")
    runs = [TargetRun(s.name, out_path_for(out, s.name, len(specs)), remote=s.remote is not None) for s in specs]
    outs = [str(r.out) for r in runs]
    if len(set(outs)) != len(outs):
        raise BadInputError(f"--out {out} gives two targets the same file", hint="put {target} in --out")

    local = [s.name for s in specs if s.remote is None]
    if len(local) > 1:
        log.warning("profiling %d targets on this machine at once (%s): they share its CPU, so their "
                    "numbers disturb each other; profile them one by one for clean numbers", len(local),
                    ", ".join(local))

    def one(spec: TargetSpec, tr: TargetRun) -> None:
        cb = (lambda ev: on_event(spec.name, ev)) if on_event else None
        kw = dict(kwargs)
        if kw.get("work_dir") and len(specs) > 1:  # threads must not share scratch directories
            kw["work_dir"] = Path(kw["work_dir"]) / spec.name
        try:
            fn = profile_remote if spec.remote is not None else profile_family
            tr.run = fn(spec, family, out=tr.out, on_event=cb, **kw)
        except EdgeKDError as exc:
            tr.error = exc

    with ThreadPoolExecutor(max_workers=max(1, len(specs)), thread_name_prefix="edgekd-profile") as pool:
        for f in [pool.submit(one, s, r) for s, r in zip(specs, runs)]:
            f.result()
    return runs
