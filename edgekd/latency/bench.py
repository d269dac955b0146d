"""bench: MODEL on TARGET, measured per the protocol: on this machine (open_model, then
latency.measure), or on a remote target's device over SSH (edgekd.remote); with the target's
reference workload in alternation when a calibration of it exists (latency.drift)."""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..deploy import check_ref_manifest, open_model
from ..errors import BadInputError
from ..remote.ops import remote_bench
from ..targets import MeasureSettings, TargetSpec, load_target
from ..util_io import sha256_file
from .drift import (REFERENCE_SHARE, REFERENCE_SLICE_S, REFERENCE_SPEC, Calibration, correct, load_calibration,
                    machine_key, reference_input_shape, reference_onnx, runtime_mismatch, save_calibration)
from .memory import measure_memory
from .measure import (SLICE_S, BenchResult, close_session, environment_fingerprint, measure_opened,
                      measure_opened_together)


def bench(model_ref: "str | Path", target: "str | TargetSpec", *, work_dir: "str | Path | None" = None,
          settings: MeasureSettings | None = None, sample_shape: tuple | None = None,
          on_progress: Callable[[int, int], None] | None = None, in_channels: int = 1,
          reference: bool | None = None, memory: bool = False) -> BenchResult:
    """Open MODEL for TARGET (building its artifact if needed) and measure it per docs/LATENCY.md.
    ``in_channels`` is the input channels of a student spec (3 for RGB); a file says its own.
    A file from a compress output must still match its manifest.json (deploy.check_ref_manifest).

    ``reference``: measure the reference workload in alternation and drift-correct against the
    stored calibration (True: required, BadInputError without one; None: when one exists for
    this target and machine; False: never). It takes REFERENCE_SHARE of the timed time, and
    min_time_s is lengthened by as much so the model keeps its own.

    ``memory``: also the artifact's size and the peak memory of one inference (latency.memory;
    a fresh load, in a fresh process for a file), in ``BenchResult.memory``."""
    spec = load_target(target)
    check_ref_manifest(model_ref)
    if spec.remote is not None:  # measured on the device itself, over SSH (edgekd.remote)
        if reference:
            raise BadInputError(f"--reference is not available for remote target '{spec.name}'",
                                hint="drop --reference")
        return remote_bench(model_ref, spec, settings=settings, sample_shape=sample_shape, on_progress=on_progress,
                            in_channels=in_channels)
    settings = settings or spec.measure
    warnings: list[str] = []
    with contextlib.ExitStack() as stack:
        if work_dir is None:  # the artifact must outlive the first load; the reference needs a place
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="edgekd-bench-"))
        cal = None
        if reference is not False:
            cal = stored_calibration(spec)
            if cal is None and reference:
                raise BadInputError(f"no calibration of the reference workload for target '{spec.name}' on this "
                                    f"machine", hint=f"run `edgekd calibrate --target {spec.name}` first")
        opened = open_model(model_ref, spec, work_dir=Path(work_dir), sample_shape=sample_shape,
                            in_channels=in_channels)
        drift = corrected = corrected_samples = None
        ref = open_reference_workload(spec, Path(work_dir), cal) if cal is not None else None
        if isinstance(ref, str):  # the calibration does not apply to this runtime
            warnings.append(ref + "; measured without the reference (run `edgekd calibrate` again)")
            if reference:
                close_session(opened.session)
                raise BadInputError(ref, hint=f"run `edgekd calibrate --target {spec.name}` again")
            ref = None
        if ref is not None:
            stack.callback(close_session, ref.session)
            (m, rm), env = measure_opened_together([opened], spec, _with_reference_time(settings), held=[ref],
                                                   on_progress=on_progress, slices=[SLICE_S, REFERENCE_SLICE_S])
            drift, corrected, corrected_samples = _correct(m, rm, cal, settings)
        else:
            m, env = measure_opened(opened, spec, settings, on_progress=on_progress)
        mem = measure_memory(opened.artifact, spec, tuple(opened.input_shape)) if memory else None
    art = opened.artifact
    return BenchResult(target=spec.name, model=str(model_ref), model_sha256=art.sha256,
                       artifact_format=art.format, stats=m.stats, samples_ms=m.samples_ms,
                       first_inference_ms=m.first_inference_ms, build_s=float(opened.build_s or 0.0),
                       load_s=float(getattr(opened, "first_load_s", 0.0) or 0.0), input_shape=tuple(opened.input_shape),
                       environment=env, drift=drift, corrected=corrected, corrected_samples_ms=corrected_samples,
                       warnings=tuple(warnings), memory=mem)


def _with_reference_time(settings: MeasureSettings) -> MeasureSettings:
    """``settings`` with min_time_s lengthened by the reference's share, so the model measured
    in alternation with it keeps the timed time it would have alone."""
    return settings.model_copy(update={"min_time_s": settings.min_time_s / (1 - REFERENCE_SHARE)})


def _correct(m, rm, cal: Calibration, settings: MeasureSettings):
    """latency.drift.correct of model Measurement ``m`` by reference Measurement ``rm`` against ``cal``."""
    return correct(m, rm, cal.p50_ms, source=f"calibration {cal.path} ({cal.measured_at})",
                   confidence=settings.confidence, unstable_iqr=settings.unstable_iqr)


def open_reference_workload(spec: TargetSpec, work_dir: Path, cal: Calibration | None = None):
    """The reference workload opened for ``spec`` (the caller closes its session); with ``cal``,
    the text saying why that calibration does not apply to this runtime instead, if it does not."""
    path = reference_onnx()
    if cal is not None:
        if sha256_file(path) != cal.reference_sha256:
            return (f"the calibration of {spec.name} was made with another reference file "
                    f"({cal.reference_sha256[:12]})")
    ref = open_model(path, spec, work_dir=work_dir / "reference", sample_shape=reference_input_shape())
    if cal is not None:
        why = runtime_mismatch(cal, environment_fingerprint(spec, ref.session, ref.input_shape))
        if why:
            close_session(ref.session)
            return why
    return ref


# a calibration times the reference for this many times the target's min_time_s (one figure that
# every later measurement divides by deserves more samples than one measurement takes)
CALIBRATE_TIME_FACTOR = 3


def calibrate(target: "str | TargetSpec", *, settings: MeasureSettings | None = None,
              on_progress: Callable[[int, int], None] | None = None) -> Calibration:
    """Measure the reference workload alone on this machine for ``target`` and store its figures
    (latency.drift.save_calibration, atomic): what later measurements' speed factors divide by.
    ``settings`` default to the target's with CALIBRATE_TIME_FACTOR x its min_time_s."""
    from .profile_file import _now

    spec = load_target(target)
    if spec.remote is not None:
        raise BadInputError(f"calibrate measures this machine; target '{spec.name}' runs on a remote device",
                            hint="choose a local target")
    settings = settings or spec.measure.model_copy(
        update={"min_time_s": CALIBRATE_TIME_FACTOR * spec.measure.min_time_s})
    with tempfile.TemporaryDirectory(prefix="edgekd-calibrate-") as tmp:
        ref = open_reference_workload(spec, Path(tmp))
        m, env = measure_opened(ref, spec, settings, on_progress=on_progress)
    cal = Calibration(target=spec.name, fingerprint={**env, **machine_key(spec)}, reference=REFERENCE_SPEC,
                      reference_sha256=sha256_file(reference_onnx()), stats=m.stats, measured_at=_now())
    return replace(cal, path=str(save_calibration(cal)))


def stored_calibration(target: "str | TargetSpec") -> Calibration | None:
    """The calibration of ``target`` stored on this machine (``calibrate``), or None: none yet,
    or the target runs on a remote device."""
    spec = load_target(target)
    return load_calibration(spec.name, machine_key(spec)) if spec.remote is None else None


def calibration_mismatch(spec: TargetSpec, cal: Calibration) -> str | None:
    """Why ``cal`` cannot correct measurements of ``spec`` here (made with another reference
    file, runtime or runtime version: bench would say so and measure without it), or None."""
    with tempfile.TemporaryDirectory(prefix="edgekd-reference-") as tmp:
        ref = open_reference_workload(spec, Path(tmp), cal)
        if isinstance(ref, str):
            return ref
        close_session(ref.session)
    return None


def measure_session_drift(session, inputs, spec: TargetSpec, settings: MeasureSettings, *, environment=None):
    """measure_session on an open session, with the reference workload in alternation and
    drift-corrected figures when a calibration of ``spec`` exists on this machine (as bench):
    (Measurement, DriftReading | None, corrected LatencyStats | None)."""
    from .measure import make_inputs, measure_interleaved, measure_session

    cal = stored_calibration(spec)
    if cal is not None:
        with tempfile.TemporaryDirectory(prefix="edgekd-reference-") as tmp:
            ref = open_reference_workload(spec, Path(tmp), cal)
            if not isinstance(ref, str):
                try:
                    m, rm = measure_interleaved([session, ref.session],
                                                [inputs, make_inputs(ref.session, tuple(ref.input_shape))],
                                                _with_reference_time(settings), environments=[environment, None],
                                                slices=[SLICE_S, REFERENCE_SLICE_S])
                finally:
                    close_session(ref.session)
                drift, corrected, _ = _correct(m, rm, cal, settings)
                return m, drift, corrected
    return measure_session(session, inputs, settings, environment=environment), None, None
