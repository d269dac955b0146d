"""bench: MODEL on TARGET, measured per the protocol: on this machine (open_model, then
latency.measure), or on a remote target's device over SSH (edgekd.remote)."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Callable

from ..deploy import check_ref_manifest, open_model
from ..remote.ops import remote_bench
from ..targets import MeasureSettings, TargetSpec, load_target
from .measure import BenchResult, measure_opened


def bench(model_ref: "str | Path", target: "str | TargetSpec", *, work_dir: "str | Path | None" = None,
          settings: MeasureSettings | None = None, sample_shape: tuple | None = None,
          on_progress: Callable[[int, int], None] | None = None, in_channels: int = 1) -> BenchResult:
    """Open MODEL for TARGET (building its artifact if needed) and measure it per docs/LATENCY.md.
    ``in_channels`` is the input channels of a student spec (3 for RGB); a file says its own.
    A file from a compress output must still match its manifest.json (deploy.check_ref_manifest)."""
    spec = load_target(target)
    check_ref_manifest(model_ref)
    if spec.remote is not None:  # measured on the device itself, over SSH (edgekd.remote)
        return remote_bench(model_ref, spec, settings=settings, sample_shape=sample_shape, on_progress=on_progress,
                            in_channels=in_channels)
    settings = settings or spec.measure
    with contextlib.ExitStack() as stack:
        if work_dir is None and settings.sessions > 1:  # the artifact must outlive the first load
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="edgekd-bench-"))
        opened = open_model(model_ref, spec, work_dir=Path(work_dir) if work_dir else None,
                            sample_shape=sample_shape, in_channels=in_channels)
        m, env = measure_opened(opened, spec, settings, on_progress=on_progress)
    art = opened.artifact
    return BenchResult(target=spec.name, model=str(model_ref), model_sha256=art.sha256,
                       artifact_format=art.format, stats=m.stats, samples_ms=m.samples_ms,
                       first_inference_ms=m.first_inference_ms, build_s=float(opened.build_s or 0.0),
                       load_s=float(getattr(opened, "first_load_s", 0.0) or 0.0), input_shape=tuple(opened.input_shape),
                       environment=env)
