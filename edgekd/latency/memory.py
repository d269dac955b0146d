"""Memory beside latency: the size of a model's serialized artifact and the peak memory of one
inference (docs/MEMORY.md).

    artifact_size(artifact)                    -> (bytes, what was counted)
    measure_peak(load, input_shape)            -> (peak bytes or None, how it was measured)
    measure_memory(artifact, target, shape)    -> MemoryUse

Size is the bytes of the artifact's files as the runtime reads them (an OpenVINO .xml and its
.bin, an ONNX file and its external data, a .pte program); a model held in memory (the torch
eager target) counts its parameters and buffers.

Peak memory is measured, the same way for every runtime: the high-water mark of the process's
resident memory from just before the model is loaded through its first RUNS inferences, minus the
resident memory before (Linux: VmHWM reset through /proc/self/clear_refs, read back from
/proc/self/status). A file artifact is measured in a fresh process that has imported the
runtime and nothing else (a runtime may keep scratch memory across loads); a module held in
memory, in this one. It covers what running the model costs a device: the weights as the
runtime holds them (often packed into a second layout), the activation arena and the kernels'
scratch.
ExecuTorch also reports its planned arena (the memory plan in the .pte); it is shown beside the
peak, not as it: tensors inside the XNNPACK delegate live in the delegate's own workspace,
outside that plan, so the plan alone undercounts a delegated model many times over.
"""
from __future__ import annotations

import ctypes
import gc
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

RUNS = 3  # inferences measured after the load: ONNX Runtime allocates its planned memory pattern on the second
RSS_SOURCE = f"rss high-water growth over load + {RUNS} inferences"


@dataclass(frozen=True)
class MemoryUse:
    """Size and peak memory of one model on one target (bytes; None when not measurable here)."""

    size_bytes: int | None
    size_of: str
    peak_bytes: int | None
    peak_source: str
    planned_arena_bytes: int | None = None

    @property
    def size_kb(self) -> float | None:
        return None if self.size_bytes is None else self.size_bytes / 1024.0

    @property
    def peak_mb(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / (1024.0 * 1024.0)

    def to_dict(self) -> dict:
        return {"size_bytes": self.size_bytes, "size_kb": self.size_kb, "size_of": self.size_of,
                "peak_bytes": self.peak_bytes, "peak_mb": self.peak_mb, "peak_source": self.peak_source,
                "planned_arena_bytes": self.planned_arena_bytes}

    def describe(self) -> str:
        """One line for tables and messages, e.g. 'size 24.1 KB (executorch-pte), peak 1.20 MB'."""
        size = "size ?" if self.size_kb is None else f"size {self.size_kb:.1f} KB ({self.size_of})"
        peak = "peak ?" if self.peak_mb is None else f"peak {self.peak_mb:.2f} MB"
        return f"{size}, {peak}"


def artifact_size(artifact: Any) -> tuple[int | None, str]:
    """(bytes, what was counted) of an artifact: its files, or an in-memory module's tensors."""
    module = (getattr(artifact, "meta", None) or {}).get("module")
    fmt = str(getattr(artifact, "format", "") or "")
    paths = [Path(p) for p in (getattr(artifact, "paths", None) or (artifact.path,))]
    files = [p for p in paths if p.is_file()]
    if files:
        return int(sum(p.stat().st_size for p in files)), fmt
    if module is not None and hasattr(module, "state_dict"):
        tensors = module.state_dict().values()
        return int(sum(t.numel() * t.element_size() for t in tensors)), f"{fmt} (parameters and buffers)"
    return None, fmt


def _status_kb() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def _reset_hwm() -> bool:
    """Reset the process's resident high-water mark to its current resident size (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    """Give freed heap pages back to the system first, so a model that reuses them is counted."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def measure_peak(load: Callable[[], Any], input_shape: tuple) -> tuple[int | None, str, Any]:
    """(peak bytes, how, session): ``load()`` a session and run it RUNS times on zeros of
    ``input_shape``, measuring the resident high-water growth over all of it (a runtime may
    allocate its steady-state memory after the first run: ONNX Runtime's memory pattern). None
    where /proc cannot say (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None, "not measured (needs Linux /proc)", load()
    _trim_heap()
    if not _reset_hwm():
        return None, "not measured (/proc/self/clear_refs refused)", load()
    before = _status_kb()["VmRSS"]
    session = load()
    x = np.zeros(tuple(input_shape), dtype=np.float32)
    for _ in range(RUNS):
        session.run(x)
    peak = _status_kb()["VmHWM"]
    return max(0, peak - before) * 1024, RSS_SOURCE, session


def _isolated(artifact: Any, target: Any) -> bool:
    """Measured in a fresh process: a file artifact of a runtime other than torch. A runtime may
    keep scratch memory across loads in one process (XNNPACK's workspace is process-wide), so a
    model measured after a larger one would show no growth."""
    runtime = getattr(getattr(target, "runtime", None), "value", None)
    files = [Path(p) for p in (getattr(artifact, "paths", None) or ())]
    return (runtime is not None and runtime != "torch" and bool(files) and all(p.is_file() for p in files)
            and not (getattr(artifact, "meta", None) or {}).get("module"))


def _peak_in_child(artifact: Any, target: Any, input_shape: tuple) -> tuple[int | None, str, int | None]:
    import json
    import subprocess

    from ..errors import BadInputError

    job = {**_job(artifact, input_shape), "target": target.model_dump(mode="json")}
    proc = subprocess.run([sys.executable, "-m", "edgekd.latency.memory"], input=json.dumps(job),
                          capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise BadInputError(f"measuring the peak memory of {Path(artifact.path).name} failed: {why}")
    out = json.loads(lines[-1])
    return out["peak_bytes"], out["source"] + " (fresh process)", out["planned_arena_bytes"]


def _job(artifact: Any, input_shape: tuple) -> dict:
    return {"path": str(artifact.path), "extra_paths": [str(p) for p in artifact.extra_paths],
            "format": artifact.format, "shape": list(input_shape)}


class PeakProcess:
    """One process that has imported ``target``'s runtime and nothing else, measuring each
    artifact in a fork of itself: the same state as a fresh process (_peak_in_child) for every
    model, without importing the runtime again per model (seconds each for ExecuTorch, which
    imports torch). A job it cannot answer is measured in a fresh process instead (_peak_in_child,
    whose error names the cause). The profiler holds one per run; ``close()`` ends it."""

    def __init__(self, target: Any):
        self.target = target
        self.proc = None

    def measure(self, artifact: Any, input_shape: tuple) -> tuple[int | None, str, int | None]:
        import json
        import subprocess

        if self.proc is None:
            self.proc = subprocess.Popen([sys.executable, "-m", "edgekd.latency.memory", "--serve"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True)
            self.proc.stdin.write(json.dumps(self.target.model_dump(mode="json")) + "\n")
        try:
            self.proc.stdin.write(json.dumps(_job(artifact, input_shape)) + "\n")
            self.proc.stdin.flush()
            out = json.loads(self.proc.stdout.readline() or "{}")
        except (OSError, ValueError):
            out = {}
        if "peak_bytes" not in out:  # measured in a fresh process instead, which names what failed
            self.close()
            return _peak_in_child(artifact, self.target, tuple(input_shape))
        return out["peak_bytes"], out["source"] + " (fresh process, forked after the runtime's import)", \
            out["planned_arena_bytes"]

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - ending it is all that is left to do
                self.proc.kill()
            self.proc = None


def measure_memory(artifact: Any, target: Any, input_shape: tuple, *, load: Callable[[], Any] | None = None,
                   peaks: PeakProcess | None = None) -> MemoryUse:
    """Size and peak memory of ``artifact`` on ``target``: a fresh session is loaded (through the
    target's backend unless ``load`` is given), run once and closed; a file artifact of a runtime
    other than torch is measured in a fresh process (``_isolated``), or in a fork of ``peaks``."""
    size, size_of = artifact_size(artifact)
    if load is None and _isolated(artifact, target):
        peak, source, planned = (peaks.measure(artifact, tuple(input_shape)) if peaks is not None
                                 else _peak_in_child(artifact, target, tuple(input_shape)))
        return MemoryUse(size_bytes=size, size_of=size_of, peak_bytes=peak, peak_source=source,
                         planned_arena_bytes=planned)
    if load is None:
        from ..backends import require_backend

        backend = require_backend(target)
        load = lambda: backend.load(artifact, target)  # noqa: E731
    peak, source, session = measure_peak(load, input_shape)
    planned = getattr(session, "planned_arena_bytes", None)
    close = getattr(session, "close", None)
    if close:
        close()
    return MemoryUse(size_bytes=size, size_of=size_of, peak_bytes=peak, peak_source=source,
                     planned_arena_bytes=planned)


def memory_record(artifact: Any, target: Any, input_shape: tuple, peaks: PeakProcess | None = None) -> dict | None:
    """measure_memory(...).to_dict() as a profile stores it per whole model, with the seconds it
    took; None without an artifact; a peak that cannot be measured is None, with the reason in
    ``peak_source``."""
    from ..errors import EdgeKDError

    import time

    if artifact is None:
        return None
    t0 = time.monotonic()
    try:
        out = measure_memory(artifact, target, tuple(input_shape), peaks=peaks).to_dict()
    except EdgeKDError as exc:
        size, size_of = artifact_size(artifact)
        out = MemoryUse(size, size_of, None, f"not measured ({exc.one_line()})").to_dict()
    return {**out, "elapsed_s": round(time.monotonic() - t0, 3)}


def _runtime(target_doc: dict):
    """(target, backend) in a measuring process, the runtime imported first: its set-up is not the
    model's memory."""
    import importlib

    from ..backends import require_backend
    from ..targets import TargetSpec

    target = TargetSpec.model_validate(target_doc)
    backend = require_backend(target)
    if backend.runtime_module:
        importlib.import_module(backend.runtime_module)
    return target, backend


def _measure_job(job: dict, target, backend) -> dict:
    from ..backends.base import Artifact

    art = Artifact(path=Path(job["path"]), format=job["format"], sha256="",
                   extra_paths=tuple(Path(p) for p in job["extra_paths"]))
    peak, source, session = measure_peak(lambda: backend.load(art, target), tuple(job["shape"]))
    return {"peak_bytes": peak, "source": source, "planned_arena_bytes": getattr(session, "planned_arena_bytes", None)}


def _child() -> None:
    """`python -m edgekd.latency.memory` with a job on stdin: one load and run, measured."""
    import json

    job = json.loads(sys.stdin.read())
    print(json.dumps(_measure_job(job, *_runtime(job["target"]))))


def _resident_file_pages() -> list[tuple[int, int]]:
    """(start, page count) runs of this process's readable file-backed pages that are resident
    (/proc/self/maps and the present bit of /proc/self/pagemap). A fork's page tables leave such
    pages out until they are touched again, which would count the runtime's own code as the model's."""
    import os
    import struct

    page = os.sysconf("SC_PAGE_SIZE")
    runs: list[tuple[int, int]] = []
    with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb", buffering=0) as pm:
        for line in maps:
            parts = line.split()
            if len(parts) < 6 or not parts[5].startswith("/") or "r" not in parts[1]:
                continue
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            n = (hi - lo) // page
            data = os.pread(pm.fileno(), 8 * n, 8 * (lo // page))
            flags = struct.unpack(f"{len(data) // 8}Q", data)
            start = None
            for i, f in enumerate(flags + (0,)):
                if f >> 63 and start is None:
                    start = i
                elif not f >> 63 and start is not None:
                    runs.append((lo + start * page, i - start))
                    start = None
    return runs


def _touch(runs: list[tuple[int, int]]) -> None:
    import os

    page = os.sysconf("SC_PAGE_SIZE")
    for start, n in runs:
        for i in range(n):
            ctypes.string_at(start + i * page, 1)


def _serve() -> None:
    """`python -m edgekd.latency.memory --serve` (PeakProcess): the target on the first line of
    stdin, then one job per line, each measured in a fork of this process; one JSON line out per job."""
    import json
    import os

    target, backend = _runtime(json.loads(sys.stdin.readline()))
    runs = _resident_file_pages()
    for line in sys.stdin:
        job = json.loads(line)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the fork: load, run, report, and leave without tearing anything down
            os.close(r)
            try:
                _touch(runs)  # resident again, as in the process forked from: not the model's memory
                out = _measure_job(job, target, backend)
            except BaseException as exc:  # noqa: BLE001 - reported to the profiler as one line
                out = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            os.write(w, json.dumps(out).encode())
            os._exit(0)
        os.close(w)
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        text = b"".join(chunks).decode() or json.dumps({"error": f"the measuring process ended with status {status}"})
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def memory_from_dict(d: "Mapping | None") -> MemoryUse | None:
    if not d:
        return None
    return MemoryUse(size_bytes=d.get("size_bytes"), size_of=str(d.get("size_of", "")),
                     peak_bytes=d.get("peak_bytes"), peak_source=str(d.get("peak_source", "")),
                     planned_arena_bytes=d.get("planned_arena_bytes"))


def check_budget_values(max_size_kb: float | None, max_peak_mb: float | None) -> None:
    """BadInputError for a memory budget that is not a positive number."""
    from ..errors import BadInputError

    for opt, v, unit in (("--max-size-kb", max_size_kb, "kilobytes"), ("--max-peak-mb", max_peak_mb, "megabytes")):
        if v is not None and not v > 0:
            raise BadInputError(f"{opt} {v} must be a positive number of {unit}")


def budget_results(mem: MemoryUse, max_size_kb: float | None, max_peak_mb: float | None
                   ) -> list[tuple[str, "bool | None", float | None, float, str]]:
    """(name, within the budget (None: not measurable here), value, limit, detail) for each
    memory budget given: 'size' in KB of the artifact, 'peak_memory' in MB of one inference."""
    out = []
    if max_size_kb is not None:
        kb = mem.size_kb
        out.append(("size", None if kb is None else kb <= max_size_kb, kb, max_size_kb,
                    (f"{kb:.1f} KB" if kb is not None else "size not known") + f" ({mem.size_of}) vs "
                    f"max {max_size_kb:g} KB"))
    if max_peak_mb is not None:
        mb = mem.peak_mb
        out.append(("peak_memory", None if mb is None else mb <= max_peak_mb, mb, max_peak_mb,
                    (f"{mb:.2f} MB ({mem.peak_source})" if mb is not None else mem.peak_source)
                    + f" vs max {max_peak_mb:g} MB"))
    return out


if __name__ == "__main__":
    _serve() if sys.argv[1:] == ["--serve"] else _child()
