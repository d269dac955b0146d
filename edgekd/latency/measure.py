"""The measurement protocol (docs/LATENCY.md), one code path for every backend's Session.

Single stream, fixed inputs prepared before timing; the first inference is timed apart; a
time-based warm-up (>= warmup_s and >= warmup_iters); then >= min_iters samples and >= min_time_s
of timing, each sample one `perf_counter_ns` around one `session.run`.

Beside each sample the process's involuntary context switches are read (outside the timed
span): a sample during which the process was descheduled is *disturbed*; their count is
reported (LatencyStats.disturbed), and the drift-corrected figures (latency.drift) leave them
out.
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..backends import require_backend
from ..targets import MeasureSettings, TargetSpec
from .environment import fingerprint
from .stats import LatencyStats


@dataclass(frozen=True)
class Measurement:
    stats: LatencyStats
    samples_ms: np.ndarray
    first_inference_ms: float
    warmup_iters: int
    warmup_s: float
    # per sample: whether the process was descheduled during it (None: not observed)
    disturbed: np.ndarray | None = None
    # per sample: the round of alternating slices it was taken in (latency.drift pairs a model's
    # slice with the reference's slices of the same rounds); None: not recorded
    rounds: np.ndarray | None = None
    # the artifact that was loaded and measured (pieces.measure_onnx_together sets it: the profiler
    # measures its size and peak memory); None: not kept
    artifact: object | None = None


def involuntary_switches() -> int:
    """The process's involuntary context switches so far (all its threads): the count grows
    when the kernel takes a CPU from one of them for another process."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


@dataclass(frozen=True)
class BenchResult:
    """One model measured on one target.

    ``stats`` are the raw figures, every sample as timed (``stats.disturbed`` counts the samples
    during which the process was descheduled). ``drift`` is a latency.drift.DriftReading
    (factor, reference_p50_ms, calibrated_p50_ms, source, ...) when the model was measured in
    alternation with the target's reference workload against a stored calibration, else None;
    then ``corrected`` holds the drift-corrected figures (each sample scaled by the speed the
    reference showed in the same rounds, disturbed samples left out), ``corrected_samples_ms``
    those samples in the order they were taken (what the gate judges), and ``judged`` says which
    figures a budget is judged on: "corrected" when ``corrected`` is there, else "raw".
    """
    target: str
    model: str
    model_sha256: str
    artifact_format: str
    stats: LatencyStats
    samples_ms: np.ndarray
    first_inference_ms: float
    build_s: float
    load_s: float
    input_shape: tuple
    environment: Mapping[str, Any] = field(default_factory=dict)
    drift: Any = None  # latency.drift.DriftReading | None
    corrected: LatencyStats | None = None
    corrected_samples_ms: np.ndarray | None = None
    warnings: tuple[str, ...] = ()
    memory: Any = None  # latency.memory.MemoryUse | None: artifact size and peak memory

    @property
    def judged(self) -> str:
        return "corrected" if self.corrected is not None else "raw"

    @property
    def judged_stats(self) -> LatencyStats:
        """The figures a budget is judged on (``judged``)."""
        return self.corrected if self.corrected is not None else self.stats

    def to_dict(self, include_samples: bool = False) -> dict:
        s = self.stats
        d = {
            "target": self.target,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "artifact_format": self.artifact_format,
            "input_shape": list(self.input_shape),
            "latency_ms": {
                "p50": s.p50, "p90": s.p90, "p99": s.p99, "mean": s.mean, "std": s.std,
                "min": s.min, "max": s.max, "n": s.n, "p90_ci": list(s.p90_ci),
                "cv": s.cv, "iqr_over_median": s.iqr_over_median, "confidence": s.confidence,
                "p99_trustworthy": s.p99_trustworthy, "disturbed": s.disturbed,
            },
            "disturbed_samples": s.disturbed,
            "drift": self.drift.to_dict() if self.drift is not None else None,
            "corrected_latency_ms": _brief(self.corrected) if self.corrected is not None else None,
            "judged": self.judged,
            "warnings": list(self.warnings),
            "warmup_iters": s.warmup,
            "first_inference_ms": self.first_inference_ms,
            "build_s": self.build_s,
            "load_s": self.load_s,
            "unstable": s.unstable,
            "environment": dict(self.environment),
            "memory": self.memory.to_dict() if self.memory is not None else None,
        }
        if include_samples:
            d["samples_ms"] = [float(v) for v in self.samples_ms]
        return d


def _brief(s: LatencyStats) -> dict:
    return {"p50": s.p50, "p90": s.p90, "p99": s.p99, "mean": s.mean, "n": s.n, "p90_ci": list(s.p90_ci),
            "iqr_over_median": s.iqr_over_median, "unstable": s.unstable}


def make_inputs(session, batch_shape: tuple, seed: int = 0) -> Any:
    """Fixed random inputs of the session's dtype(s), prepared once before timing."""
    rng = np.random.default_rng(seed)
    names = list(getattr(session, "input_names", ()) or ["input"])
    dtypes = list(getattr(session, "input_dtypes", ()) or [np.float32])
    arrays = {}
    for i, name in enumerate(names):
        dt = np.dtype(dtypes[i] if i < len(dtypes) else np.float32)
        if np.issubdtype(dt, np.floating):
            arr = rng.standard_normal(batch_shape).astype(dt)
        else:
            arr = rng.integers(0, 2, size=batch_shape).astype(dt)
        arrays[name] = np.ascontiguousarray(arr)
    return arrays if len(arrays) > 1 else next(iter(arrays.values()))


def measure_session(session, inputs, settings: MeasureSettings | None = None, *,
                    environment: Mapping[str, Any] | None = None,
                    on_progress: Callable[[int, int], None] | None = None,
                    clock: Callable[[], int] = time.perf_counter_ns,
                    switches: Callable[[], int] | None = involuntary_switches) -> Measurement:
    """Time ``session.run(inputs)`` per docs/LATENCY.md and summarise the samples."""
    return measure_interleaved([session], [inputs], settings, environments=[environment],
                               on_progress=on_progress, clock=clock, switches=switches)[0]


# Interleaved measurement: each session runs for a slice this long before the next one does.
SLICE_S = 0.005


def measure_interleaved(sessions: Sequence, inputs: Sequence, settings: MeasureSettings | None = None, *,
                        environments: Sequence[Mapping[str, Any] | None] | None = None,
                        on_progress: Callable[[int, int], None] | None = None, slice_s: float = SLICE_S,
                        slices: Sequence[float] | None = None,
                        clock: Callable[[], int] = time.perf_counter_ns,
                        switches: Callable[[], int] | None = involuntary_switches) -> list[Measurement]:
    """Time several sessions in alternation, each per docs/LATENCY.md: one Measurement per session.

    Each session's first inference is timed apart; the warm-up runs them in turn (>= warmup_s
    in all, >= warmup_iters each); then they take turns in slices of ``slice_s`` (``slices``:
    one length per session) until each has >= min_iters samples and the samples of all add up
    to >= min_time_s (or one reaches max_iters). The first run of a slice is not timed: it
    brings the session's own data back into the caches the other session used. A machine's
    speed drifts by a few percent over seconds (clocks, other tenants); sessions measured in
    alternating slices see the same drift, so the difference of their medians carries little of
    it (measured on openvino-cpu: pair minus its first block, 12 loads each: SD 0.31 us one
    after the other, 0.05 us interleaved). One session is plain measure_session.

    ``switches()`` (the process's involuntary context switches; None: not observed) is read
    once per sample, after the timed span: a sample whose count grew was disturbed.
    """
    settings = settings or MeasureSettings()
    k = len(sessions)
    runs = [s.run for s in sessions]
    envs = list(environments or [None] * k)
    first_ms = []
    for run, x in zip(runs, inputs):
        t0 = clock()
        run(x)
        first_ms.append((clock() - t0) / 1e6)

    warm = [0] * k
    warm_start, warm_ns = clock(), int(settings.warmup_s * 1e9)
    while min(warm) < settings.warmup_iters or clock() - warm_start < warm_ns:
        for i in range(k):
            runs[i](inputs[i])
            warm[i] += 1
    warm_s = (clock() - warm_start) / 1e9

    size = max(settings.min_iters, 1024)
    samples = [np.empty(size, dtype=np.int64) for _ in range(k)]
    hit = [np.zeros(size, dtype=bool) for _ in range(k)]
    rnd = [np.zeros(size, dtype=np.int32) for _ in range(k)]
    counts = [0] * k
    slice_ns = [int(v * 1e9) for v in (slices if slices is not None else [slice_s] * k)]
    min_ns, cap, floor = int(settings.min_time_s * 1e9), settings.max_iters, settings.min_iters
    timed_ns = 0
    r = 0
    while (min(counts) < floor or timed_ns < min_ns) and max(counts) < cap:
        for i in range(k):
            run, x, buf, hits, n = runs[i], inputs[i], samples[i], hit[i], counts[i]
            start = n
            if k > 1:
                run(x)
                warm[i] += 1
            before = switches() if switches is not None else 0
            slice_end = clock() + slice_ns[i]
            while n < cap:
                if n == buf.size:
                    buf = samples[i] = np.resize(buf, buf.size * 2)
                    hits = hit[i] = np.resize(hits, buf.size)
                    rnd[i] = np.resize(rnd[i], buf.size)
                t = clock()
                run(x)
                end = clock()
                if switches is not None:
                    now = switches()
                    hits[n] = now != before
                    before = now
                buf[n] = end - t
                timed_ns += end - t
                n += 1
                if on_progress is not None and (n & 63) == 0:
                    on_progress(n, floor)
                if end >= slice_end or (k == 1 and n >= floor and timed_ns >= min_ns):
                    break
            counts[i] = n
            rnd[i][start:n] = r  # the slice's samples, numbered once it ends (not per sample)
        r += 1
    out = []
    for i in range(k):
        samples_ms = samples[i][:counts[i]].astype(np.float64) / 1e6
        disturbed = hit[i][:counts[i]].copy() if switches is not None else None
        stats = LatencyStats.from_samples(samples_ms, warmup=warm[i], confidence=settings.confidence,
                                          unstable_iqr=settings.unstable_iqr, environment=envs[i],
                                          disturbed=int(disturbed.sum()) if disturbed is not None else 0)
        out.append(Measurement(stats=stats, samples_ms=samples_ms, first_inference_ms=first_ms[i],
                               warmup_iters=warm[i], warmup_s=warm_s, disturbed=disturbed,
                               rounds=rnd[i][:counts[i]].copy()))
    return out


def close_session(session) -> None:
    """Free a runtime session now (most runtimes free on GC; some hold device memory)."""
    close = getattr(session, "close", None)
    if close:
        close()


def measure_loads(session, reload: Callable[[], Any] | None, inputs, settings: MeasureSettings | None = None, *,
                  environment: Mapping[str, Any] | None = None,
                  on_progress: Callable[[int, int], None] | None = None,
                  clock: Callable[[], int] = time.perf_counter_ns) -> Measurement:
    """measure_session over ``settings.sessions`` loads of one model, samples pooled.

    The first load is ``session``; each further one comes from ``reload()`` and is closed after.
    min_iters, min_time_s and max_iters are split evenly between the loads; the first load is
    warmed up as the protocol says (which settles the machine: clocks, caches) and each further
    one for at least warmup_iters and warmup_s / sessions (its own first runs: allocation,
    kernel selection); the first inference reported is the first load's. A runtime places a
    model's buffers anew on each load, and on a busy or small machine that alone can move the
    median by 5-10% from one load to the next while the timings of one load agree within 1-3%;
    pooling several loads measures the model, not one placement of it.
    """
    return measure_loads_interleaved([session], [reload] if reload is not None else None, [inputs], settings,
                                     environments=[environment], on_progress=on_progress, clock=clock)[0]


def measure_loads_interleaved(sessions: Sequence, reloads: Sequence[Callable[[], Any] | None] | None,
                              inputs: Sequence,
                              settings: MeasureSettings | None = None, *,
                              environments: Sequence[Mapping[str, Any] | None] | None = None,
                              on_progress: Callable[[int, int], None] | None = None,
                              clock: Callable[[], int] = time.perf_counter_ns,
                              slices: Sequence[float] | None = None) -> list[Measurement]:
    """measure_interleaved over ``settings.sessions`` loads of each model (as measure_loads):
    every load measures all the models together; one Measurement per model, samples pooled.

    A ``None`` in ``reloads`` holds that session through every load: it is measured alongside
    each load of the others and neither reloaded nor closed here (a reference that has to stay
    the same placement from one model to the next)."""
    settings = settings or MeasureSettings()
    k = settings.sessions
    envs = list(environments or [None] * len(sessions))
    if k <= 1 or reloads is None or all(r is None for r in reloads):
        return measure_interleaved(sessions, inputs, settings, environments=envs, on_progress=on_progress,
                                   clock=clock, slices=slices)
    per = settings.model_copy(update={"sessions": 1, "min_iters": max(10, -(-settings.min_iters // k)),
                                      "min_time_s": settings.min_time_s / k,
                                      "max_iters": max(10, settings.max_iters // k)})
    later = per.model_copy(update={"warmup_s": settings.warmup_s / k})
    parts: list[list[Measurement]] = []
    for i in range(k):
        opened: list = []
        try:
            current = list(sessions)
            if i:
                for j, reload in enumerate(reloads):  # appended once open: closed even if the next fails
                    if reload is not None:
                        opened.append(reload())
                        current[j] = opened[-1]
            done = sum(p[0].samples_ms.size for p in parts)
            progress = (lambda n, _total, done=done: on_progress(done + n, settings.min_iters)) if on_progress else None
            parts.append(measure_interleaved(current, inputs, later if i else per, environments=envs,
                                             on_progress=progress, clock=clock, slices=slices))
        finally:
            for s in opened:
                close_session(s)
    offsets = np.cumsum([0] + [max(int(m.rounds.max()) + 1 if m.rounds is not None and m.rounds.size else 0
                                   for m in p) for p in parts[:-1]])  # rounds numbered across loads
    out = []
    for j in range(len(sessions)):
        mine = [p[j] for p in parts]
        samples_ms = np.concatenate([m.samples_ms for m in mine])
        warm = sum(m.warmup_iters for m in mine)
        hits = None if any(m.disturbed is None for m in mine) else np.concatenate([m.disturbed for m in mine])
        rounds = None if any(m.rounds is None for m in mine) else np.concatenate(
            [m.rounds + off for m, off in zip(mine, offsets)])
        stats = LatencyStats.from_samples(samples_ms, warmup=warm, confidence=settings.confidence,
                                          unstable_iqr=settings.unstable_iqr, environment=envs[j],
                                          disturbed=int(hits.sum()) if hits is not None else 0)
        out.append(Measurement(stats=stats, samples_ms=samples_ms, first_inference_ms=mine[0].first_inference_ms,
                               warmup_iters=warm, warmup_s=sum(m.warmup_s for m in mine), disturbed=hits,
                               rounds=rounds))
    return out


def environment_fingerprint(target: TargetSpec, session, input_shape) -> dict:
    return fingerprint(runtime=getattr(session, "runtime_name", "") or target.runtime.value,
                       runtime_version=getattr(session, "runtime_version", ""),
                       precision=target.precision.value, threads=target.threads,
                       batch=target.batch, input_shape=tuple(input_shape), device=target.device.value,
                       target=target.name)


def measure_opened(opened, target: TargetSpec, settings: MeasureSettings, *,
                   on_progress: Callable[[int, int], None] | None = None) -> "tuple[Measurement, dict]":
    """Measure a model open_model has loaded (its artifact reloaded for each further load of
    ``settings.sessions``), then close its session: (Measurement, environment fingerprint)."""
    ms, env = measure_opened_together([opened], target, settings, on_progress=on_progress)
    return ms[0], env


def measure_opened_together(openeds: Sequence, target: TargetSpec, settings: MeasureSettings, *,
                            held: Sequence = (), on_progress: Callable[[int, int], None] | None = None,
                            slices: Sequence[float] | None = None) -> "tuple[list[Measurement], dict]":
    """Measure models open_model has loaded in alternation (measure_loads_interleaved), then
    close their sessions: (one Measurement per model, environment fingerprint of the first).

    ``held`` models (open_model results too) are measured alongside every load of the others,
    after them in the returned list, and are neither reloaded nor closed (the caller's).
    ``slices``: one slice length (s) per model, ``openeds`` then ``held``."""
    backend = require_backend(target)
    try:
        every = [*openeds, *held]
        shapes = [tuple(o.input_shape) for o in every]
        inputs = [make_inputs(o.session, shape) for o, shape in zip(every, shapes)]
        envs = [environment_fingerprint(target, o.session, shape) for o, shape in zip(every, shapes)]
        reloads = [lambda o=o: backend.load(o.artifact, target) for o in openeds] + [None] * len(held)
        ms = measure_loads_interleaved([o.session for o in every], reloads, inputs, settings,
                                       environments=envs, on_progress=on_progress, slices=slices)
    finally:
        for o in openeds:
            close_session(o.session)
    return ms, envs[0]


# Name used by the public API.
measure_latency = measure_session
