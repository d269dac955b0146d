"""The measurement protocol (LATENCY.md), one code path for every backend's Session.

Single stream, fixed inputs prepared before timing; the first inference is timed apart; a
time-based warm-up (>= warmup_s and >= warmup_iters); then >= min_iters samples and >= min_time_s
of timing, each sample one `perf_counter_ns` around one `session.run`.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..targets import MeasureSettings, TargetSpec, load_target
from .environment import fingerprint
from .stats import LatencyStats


@dataclass(frozen=True)
class Measurement:
    stats: LatencyStats
    samples_ms: np.ndarray
    first_inference_ms: float
    warmup_iters: int
    warmup_s: float


@dataclass(frozen=True)
class BenchResult:
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
                "p99_trustworthy": s.p99_trustworthy,
            },
            "warmup_iters": s.warmup,
            "first_inference_ms": self.first_inference_ms,
            "build_s": self.build_s,
            "load_s": self.load_s,
            "unstable": s.unstable,
            "environment": dict(self.environment),
        }
        if include_samples:
            d["samples_ms"] = [float(v) for v in self.samples_ms]
        return d


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
                    clock: Callable[[], int] = time.perf_counter_ns) -> Measurement:
    """Time ``session.run(inputs)`` per LATENCY.md and summarise the samples."""
    settings = settings or MeasureSettings()
    run = session.run

    t0 = clock()
    run(inputs)
    first_ms = (clock() - t0) / 1e6

    warm_iters, warm_start = 0, clock()
    warm_ns = int(settings.warmup_s * 1e9)
    while warm_iters < settings.warmup_iters or clock() - warm_start < warm_ns:
        run(inputs)
        warm_iters += 1
    warm_s = (clock() - warm_start) / 1e9

    samples = np.empty(max(settings.min_iters, 1024), dtype=np.int64)
    n, min_ns = 0, int(settings.min_time_s * 1e9)
    timed_ns = 0
    while n < settings.min_iters or timed_ns < min_ns:
        if n >= settings.max_iters:
            break
        if n == samples.size:
            samples = np.resize(samples, samples.size * 2)
        t = clock()
        run(inputs)
        dt = clock() - t
        samples[n] = dt
        timed_ns += dt
        n += 1
        if on_progress is not None and (n & 63) == 0:
            on_progress(n, settings.min_iters)
    samples_ms = samples[:n].astype(np.float64) / 1e6
    stats = LatencyStats.from_samples(samples_ms, warmup=warm_iters, confidence=settings.confidence,
                                      unstable_iqr=settings.unstable_iqr, environment=environment)
    return Measurement(stats=stats, samples_ms=samples_ms, first_inference_ms=first_ms,
                       warmup_iters=warm_iters, warmup_s=warm_s)


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
    settings = settings or MeasureSettings()
    k = settings.sessions
    if k <= 1 or reload is None:
        return measure_session(session, inputs, settings, environment=environment, on_progress=on_progress,
                               clock=clock)
    per = settings.model_copy(update={"sessions": 1, "min_iters": max(10, -(-settings.min_iters // k)),
                                      "min_time_s": settings.min_time_s / k,
                                      "max_iters": max(10, settings.max_iters // k)})
    later = per.model_copy(update={"warmup_s": settings.warmup_s / k})
    parts: list[Measurement] = []
    for i in range(k):
        s = session if i == 0 else reload()
        try:
            done = sum(p.samples_ms.size for p in parts)
            progress = (lambda n, _total, done=done: on_progress(done + n, settings.min_iters)) if on_progress else None
            parts.append(measure_session(s, inputs, later if i else per, environment=environment,
                                         on_progress=progress, clock=clock))
        finally:
            if i:
                close_session(s)
    samples_ms = np.concatenate([p.samples_ms for p in parts])
    warm = sum(p.warmup_iters for p in parts)
    stats = LatencyStats.from_samples(samples_ms, warmup=warm, confidence=settings.confidence,
                                      unstable_iqr=settings.unstable_iqr, environment=environment)
    return Measurement(stats=stats, samples_ms=samples_ms, first_inference_ms=parts[0].first_inference_ms,
                       warmup_iters=warm, warmup_s=sum(p.warmup_s for p in parts))


def environment_fingerprint(target: TargetSpec, session, input_shape) -> dict:
    return fingerprint(runtime=getattr(session, "runtime_name", "") or target.runtime.value,
                       runtime_version=getattr(session, "runtime_version", ""),
                       precision=target.precision.value, threads=target.threads,
                       batch=target.batch, input_shape=tuple(input_shape), device=target.device.value,
                       target=target.name)


def bench(model_ref: "str | Path", target: "str | TargetSpec", *, work_dir: "str | Path | None" = None,
          settings: MeasureSettings | None = None, sample_shape: tuple | None = None,
          on_progress: Callable[[int, int], None] | None = None) -> BenchResult:
    """Open MODEL for TARGET (building its artifact if needed) and measure it per LATENCY.md."""
    from ..backends.resolve import open_model

    spec = load_target(target)
    if spec.remote is not None:  # measured on the device itself, over SSH (edgekd.remote)
        from ..remote.ops import remote_bench

        return remote_bench(model_ref, spec, settings=settings, sample_shape=sample_shape, on_progress=on_progress)
    settings = settings or spec.measure
    with contextlib.ExitStack() as stack:
        if work_dir is None and settings.sessions > 1:  # the artifact must outlive the first load
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="edgekd-bench-"))
        opened = open_model(model_ref, spec, work_dir=Path(work_dir) if work_dir else None,
                            sample_shape=sample_shape)
        m, env = measure_opened(opened, spec, settings, on_progress=on_progress)
    art = opened.artifact
    return BenchResult(target=spec.name, model=str(model_ref), model_sha256=art.sha256,
                       artifact_format=art.format, stats=m.stats, samples_ms=m.samples_ms,
                       first_inference_ms=m.first_inference_ms, build_s=float(opened.build_s or 0.0),
                       load_s=float(getattr(opened, "first_load_s", 0.0) or 0.0), input_shape=tuple(opened.input_shape),
                       environment=env)


def measure_opened(opened, target: TargetSpec, settings: MeasureSettings, *,
                   on_progress: Callable[[int, int], None] | None = None) -> "tuple[Measurement, dict]":
    """Measure a model open_model has loaded (its artifact reloaded for each further load of
    ``settings.sessions``), then close its session: (Measurement, environment fingerprint)."""
    from ..backends import require_backend

    backend = require_backend(target)
    try:
        shape = tuple(opened.input_shape)
        inputs = make_inputs(opened.session, shape)
        env = environment_fingerprint(target, opened.session, shape)
        m = measure_loads(opened.session, lambda: backend.load(opened.artifact, target), inputs, settings,
                          environment=env, on_progress=on_progress)
    finally:
        close_session(opened.session)
    return m, env


# Name used by the public API.
measure_latency = measure_session
