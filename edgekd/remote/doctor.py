"""`edgekd doctor`: check a target end to end and say what to fix.

Local target: the runtime is installed, and a tiny model builds, loads and runs.
Remote target: ssh gets in, the device's edgekd is this version, the target's runtime is there,
a tiny model is copied over (sha256-checked) and measured there, and its fingerprint comes back.
Every check is a `Check`; the first failure decides the exit code (4 for anything missing).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .._version import __version__
from ..errors import EXIT_OK, EXIT_RUNTIME_MISSING, EdgeKDError
from ..targets import MeasureSettings, Runtime, TargetSpec

# A round trip, not a measurement: a handful of runs.
TINY_SETTINGS = MeasureSettings(warmup_s=0.0, warmup_iters=1, min_iters=10, min_time_s=0.0)
TINY_SPEC = "convnet:width=8,depth=2,res=16"  # for torch targets, which do not run ONNX


@dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped (an earlier check failed)
    detail: str = ""
    fix: str = ""
    exit_code: int = EXIT_OK
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = "ok" if self.ok else ("skipped" if self.ok is None else "fail")
        return d


@dataclass
class DoctorReport:
    target: str
    remote: str | None
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def exit_code(self) -> int:
        for c in self.checks:
            if c.ok is False:
                return c.exit_code or EXIT_RUNTIME_MISSING
        return EXIT_OK

    def to_dict(self) -> dict:
        return {"target": self.target, "remote": self.remote, "ok": self.ok, "exit_code": self.exit_code,
                "edgekd_version": __version__, "checks": [c.to_dict() for c in self.checks]}


def tiny_onnx(path: Path) -> Path:
    """A one-op ONNX model (Relu on 1x1x4x4), written with onnx.helper: no torch needed."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 4, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "edgekd_doctor", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgekd")
    model.ir_version = 7  # old enough for any runtime edgekd supports
    onnx.save(model, str(path))
    return path


def _step(checks: list[Check], name: str, fn: Callable[[], "tuple[str, str] | str"],
          on_check: Callable[[Check], None] | None) -> bool:
    """Run one check; a raised EdgeKDError becomes a failed Check with its hint as the fix."""
    t0 = time.perf_counter()
    try:
        out = fn()
        detail, fix = (out if isinstance(out, tuple) else (out, ""))
        c = Check(name, True, detail, fix, EXIT_OK, time.perf_counter() - t0)
    except EdgeKDError as exc:
        c = Check(name, False, exc.message, exc.hint or "", exc.exit_code, time.perf_counter() - t0)
    checks.append(c)
    if on_check:
        on_check(c)
    return bool(c.ok)


def _skip(checks: list[Check], names: list[str], why: str, on_check) -> None:
    for n in names:
        c = Check(n, None, f"skipped: {why}")
        checks.append(c)
        if on_check:
            on_check(c)


def _round_trip(target: TargetSpec, model: str, sample_shape=None) -> str:
    from ..latency.bench import bench

    r = bench(model, target, settings=TINY_SETTINGS, sample_shape=sample_shape)
    e = r.environment
    where = f" on {e.get('host')}" if e.get("host") else ""
    return (f"tiny model ran {r.stats.n} times{where}: p50 {r.stats.p50:.4f} ms, first inference "
            f"{r.first_inference_ms:.2f} ms ({e.get('runtime')} {e.get('runtime_version')})")


def doctor(target: TargetSpec, *, on_check: Callable[[Check], None] | None = None) -> DoctorReport:
    """Check TARGET end to end; never raises for what it checks (each failure is a Check)."""
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="edgekd-doctor-") as tmp:
        model = TINY_SPEC if target.runtime == Runtime.torch else str(tiny_onnx(Path(tmp) / "doctor_tiny.onnx"))
        shape = None if target.runtime == Runtime.torch else (1, 4, 4)
        if target.remote is None:
            _local(target, model, shape, checks, on_check)
        else:
            _remote(target, model, shape, checks, on_check)
    label = None
    if target.remote is not None:
        from .ssh import SSHTarget

        label = SSHTarget(target.remote, target.name).label
    return DoctorReport(target=target.name, remote=label, checks=checks)


def _local(target, model, shape, checks, on_check) -> None:
    from ..backends import get_backend
    from ..errors import RuntimeMissingError

    def runtime():
        ok, why = get_backend(target.runtime).available(target)
        if not ok:
            raise RuntimeMissingError(f"{target.runtime.value} cannot run target '{target.name}' here: {why}")
        return f"{target.runtime.value} {why} ({target.summary()}); edgekd {__version__}"

    if not _step(checks, "runtime", runtime, on_check):
        _skip(checks, ["round trip"], "the runtime is missing", on_check)
        return
    _step(checks, "round trip", lambda: _round_trip(target, model, shape), on_check)


def _remote(target, model, shape, checks, on_check) -> None:
    from ..errors import RuntimeMissingError
    from .ops import check_device, probe, push_model, remote_runtime, ssh_for

    ssh = ssh_for(target)
    later = ["edgekd", "runtime", "copy", "round trip"]

    def reach():
        p = probe(target, fresh=True)  # raises, naming host and cause, when ssh cannot get in
        return f"ssh to {ssh.label} works ({p.elapsed_s:.1f} s); device {p.host} ({p.arch})"

    if not _step(checks, "ssh", reach, on_check):
        _skip(checks, later, "ssh does not get in", on_check)
        return

    def version():
        p = check_device(target)
        return f"edgekd {p.edgekd_version} on the device and here"

    if not _step(checks, "edgekd", version, on_check):
        _skip(checks, later[1:], "no usable edgekd on the device", on_check)
        return

    def runtime():
        row = remote_runtime(target)
        if not row.get("available"):
            raise RuntimeMissingError(f"{target.runtime.value} cannot run target '{target.name}' on {ssh.label}: "
                                      f"{row.get('reason')}", hint="install it on the device")
        return f"{target.runtime.value} {row.get('runtime_version')} on the device ({target.summary()})"

    if not _step(checks, "runtime", runtime, on_check):
        _skip(checks, later[2:], "the runtime is missing on the device", on_check)
        return

    if model != TINY_SPEC:
        def copy():
            dest = push_model(ssh, model)
            return f"tiny model copied and sha256-checked at {dest}"

        if not _step(checks, "copy", copy, on_check):
            _skip(checks, later[3:], "copying failed", on_check)
            return
    else:
        _skip(checks, ["copy"], "a torch target builds its tiny model on the device", on_check)
    _step(checks, "round trip", lambda: _round_trip(target, model, shape), on_check)
