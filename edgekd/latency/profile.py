"""Latency profiles (docs/LATENCY.md "Profiles and prediction"): the profiler (the file format and its
entries are in latency.profile_file, the loader and writer that keep the predictor's fit current
in latency.fit; both re-exported here).

A profile is versioned JSON (``"schema": "edgekd.profile/v1"``) for one family on one target:
the target, the environment fingerprint, the measurement protocol, whole-candidate entries
(spec, params, MACs, the blocks it runs, LatencyStats), block entries (one per unique block the
runtime executes), pair entries (two blocks that follow each other in a candidate, run
together), the runtime's per-inference overhead, and the predictor's calibration and
held-out validation (edgekd.latency.fit). The profiler rewrites the whole file atomically
after every measured entry, so a killed run leaves a valid profile holding what was complete,
and ``resume=True`` measures only what is missing.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import BadInputError, EdgeKDError
from .environment import compare, describe_mismatch
from .pieces import (MAX_COPIES, _overhead_module, cold_copies, l2_bytes,  # noqa: F401 (re-exported)
                     measure_block, measure_module, measure_onnx, measure_pair, measure_with_reference,
                     open_reference)
from .measure import SLICE_S, close_session
from .memory import RSS_SOURCE, PeakProcess, memory_record
from .stats import LatencyStats
from .cost import QUIET_MIN
from .drift import QUIET_FRACTION, quiet_stats, steady_stats  # noqa: F401 (re-exported)
from .fit import calibration_indices, load_profile, save_profile  # noqa: F401 (re-exported)
from .profile_plan import bridge_plan, calibration_specs, probe_signature, reference_spec  # noqa: F401 (re-exported)
from .profile_file import (SCHEMA, PAIR_SEP, BlockEntry, ModelEntry, PairEntry, Profile,  # noqa: F401 (re-exported)
                           _now, model_pairs, pair_key, salvage_profile)

GRID_NAMES = ("small", "default")
# Blocks are many and short: they get a shorter protocol than whole models (stored in the file).
BLOCK_WARMUP_S = 0.05  # >= 500 runs of a block that takes under 0.1 ms
BLOCK_MIN_TIME_S = 0.25
# Whole models are what the predictor is fitted on and judged by: their samples are split over
# this many loads (at least; MeasureSettings.sessions), so that one load's placement of the
# model's buffers does not move the value by 5-10% (docs/LATENCY.md, "Several loads").
MODEL_SESSIONS = 3
# Blocks too (their cost alone is summed, less the overhead), over fewer loads: they are many,
# and a profile must stay within minutes.
BLOCK_SESSIONS = 2
# A pair is measured in alternation with its first block (the reading is their difference): one
# load. On openvino-cpu, pair minus first over 12 loads each varied by SD 0.31 us measured one
# after the other and by 0.05 us in alternation: what moved it was the machine, not the load.
PAIR_SESSIONS = 1
# The few models the predictor is calibrated on (predict.calibration_indices, by capacity) carry
# every prediction: their samples are spread over twice as many loads (same total time), which
# halves the variance a load's placement adds. A grid extended by --resume may calibrate on
# models measured before with fewer; the protocol says how each kind was measured.
CALIBRATION_SESSIONS = 2 * MODEL_SESSIONS
# Every whole model is measured in alternation with one reference candidate (the grid's middle
# one by capacity), loaded once per profiling process and held: its readings say how fast the
# machine ran while each model was measured. On openvino-cpu, 8 mobilenetv2 candidates measured
# 5 times over 5 minutes varied by SD 0.3-3.6% (mean 2.0%) measured alone, and by 0.4-2.0% (mean
# 1.1%) as their ratio to the reference; one round ran 7% slow for every model, and the reference
# by as much. The models share the time of each load with it (min_time_s counts both).
REFERENCE = "the grid's middle candidate by capacity"


def current_fingerprint(target) -> dict:
    """This machine's fingerprint for ``target`` (no session needed)."""
    from ..backends import get_backend
    from .environment import fingerprint

    try:
        ok, version = get_backend(target.runtime).available(target)
    except EdgeKDError:  # backend module not installed: compare what is known
        ok, version = False, ""
    return fingerprint(runtime=target.runtime.value, runtime_version=version if ok else "",
                       precision=target.precision.value, threads=target.threads, batch=target.batch,
                       input_shape=None, device=target.device.value, target=target.name)


def profile_target(profile: Profile):
    """The TargetSpec the profile was measured on, as stored in it."""
    from ..targets import target_from_dict

    return target_from_dict({k: v for k, v in profile.target.items() if k != "source"})


def check_here(profile: Profile, *, strict: bool = False) -> str | None:
    """check_fingerprint against this machine's fingerprint for the profile's own target; None
    also when this install cannot describe that target (nothing to compare against)."""
    try:
        here = current_fingerprint(profile_target(profile))
    except EdgeKDError:
        return None
    return check_fingerprint(profile, here, strict=strict)


def check_fingerprint(profile: Profile, current: Mapping[str, Any], *, strict: bool = False) -> str | None:
    """None when the profile applies here; else the mismatch text (BadInputError if strict)."""
    keys = [k for k in ("cpu", "logical_cores", "threads", "runtime", "runtime_version", "precision",
                        "batch", "device") if current.get(k) not in (None, "") or k == "threads"]
    if not compare(profile.fingerprint, current, keys):
        return None
    text = (f"profile {profile.label} was measured in another environment "
            f"({describe_mismatch(profile.fingerprint, current, keys)})")
    if strict:
        raise BadInputError(text, hint="re-profile on this machine or drop --strict")
    return text + "; its numbers may not hold here"


def check_options(*, in_channels: int = 1, num_classes: int = 10, min_time_s: float | None = None,
                  block_min_time_s: float | None = None) -> None:
    """BadInputError for the options no profile can be made with (named as `edgekd profile` does)."""
    if in_channels < 1 or num_classes < 1:
        raise BadInputError(f"--in-channels {in_channels} and --num-classes {num_classes} must be at least 1")
    for opt, v in (("--min-time", min_time_s), ("--block-min-time", block_min_time_s)):
        if v is not None and v < 0:
            raise BadInputError(f"{opt} {v} must not be negative")


def read_grid(grid: str, family: str, *, in_channels: int = 1, num_classes: int = 10) -> list[str]:
    """Canonical specs of a named grid ('small', 'default') or a grid file (one spec per line)."""
    from ..models import family_grid, parse_spec

    if grid in GRID_NAMES:
        return [parse_spec(s).spec for s in family_grid(family, grid, in_channels=in_channels,
                                                            num_classes=num_classes)]
    p = Path(grid)
    if not p.is_file():
        raise BadInputError(f"--grid '{grid}' is neither {' nor '.join(GRID_NAMES)} nor an existing file",
                            hint="pass small, default, or a file with one spec per line")
    specs: list[str] = []
    for lineno, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            cfg = parse_spec(line)
        except BadInputError as exc:
            raise BadInputError(f"{p}:{lineno}: {exc.one_line()}") from exc
        if cfg.family != family:
            raise BadInputError(f"{p}:{lineno}: spec '{line}' is of family '{cfg.family}', not '{family}'",
                                hint=f"profile one family per file (--family {cfg.family})")
        if cfg.spec not in specs:
            specs.append(cfg.spec)
    if not specs:
        raise BadInputError(f"grid file {p} lists no specs", hint="write one spec per line")
    return specs


# --------------------------------------------------------------------------- measuring


@dataclass
class ProfileEvent:
    """Progress of a profile run: kind is 'planned', 'start', 'measured' or 'done' (and
    'salvaged', with the warning in ``what``, when --resume finds a file cut short)."""

    kind: str
    what: str = ""  # 'overhead', 'block', 'pair', 'model'
    name: str = ""
    done: int = 0
    total: int = 0
    latency_ms: float | None = None


@dataclass
class ProfileRun:
    profile: Profile
    path: Path
    measured: list[str]
    skipped: list[str]
    elapsed_s: float


def profile_family(target, family: str, *, out: "str | Path", grid: str = "default", resume: bool = False,
                   in_channels: int = 1, num_classes: int = 10, min_time_s: float | None = None,
                   block_min_time_s: float | None = None, work_dir: "str | Path | None" = None,
                   on_event: Callable[[ProfileEvent], None] | None = None, pairs: bool = True) -> ProfileRun:
    """Measure every candidate of ``grid`` and each unique block they run on ``target`` (and,
    with ``pairs``, each pair of adjacent blocks: the predictor's ``context`` reading).

    The profile at ``out`` is rewritten atomically after every entry; with ``resume`` the entries
    already there (by spec / block key) are kept as they are, and only a few of them are measured
    again, kept apart as the bridges that put this run on the stored one's scale (bridge_plan).
    """
    import tempfile

    from ..backends import require_backend
    from ..models import block_signatures, build_block, build_model, count_macs_params, input_shape
    from ..targets import load_target, measure_settings

    t0 = time.monotonic()
    check_options(in_channels=in_channels, num_classes=num_classes, min_time_s=min_time_s,
                  block_min_time_s=block_min_time_s)
    target = load_target(target)
    out = Path(out)
    specs = read_grid(grid, family, in_channels=in_channels, num_classes=num_classes)
    require_backend(target)
    emit = on_event or (lambda ev: None)

    base = target.measure
    model_settings = measure_settings(base, {"sessions": max(base.sessions, MODEL_SESSIONS),
                                             **({"min_time_s": min_time_s} if min_time_s is not None else {})})
    block_time = block_min_time_s if block_min_time_s is not None else min(BLOCK_MIN_TIME_S, model_settings.min_time_s)
    block_settings = measure_settings(base, {"min_time_s": block_time, "warmup_s": min(BLOCK_WARMUP_S, base.warmup_s),
                                             "sessions": max(base.sessions, BLOCK_SESSIONS)})
    pair_settings = measure_settings(block_settings, {"sessions": max(base.sessions, PAIR_SESSIONS)})
    cal_settings = measure_settings(model_settings, {"sessions": max(model_settings.sessions, CALIBRATION_SESSIONS)})
    protocol = {"model": model_settings.model_dump(), "calibration": cal_settings.model_dump(),
                "block": block_settings.model_dump(), "pair": pair_settings.model_dump(),
                "overhead": block_settings.model_dump(), "order": "per candidate: new blocks, new adjacent pairs, then the model",
                "interleaved": f"each block in alternation with the overhead model, each pair with its first "
                               f"block alone, in slices of {SLICE_S * 1e3:g} ms: the differences the predictor "
                               f"takes carry little of the machine's drift; both also with the probe (the "
                               f"reference model's middle block, held loaded): cost.drift_factor takes out "
                               f"the drift its readings show",
                "reference": None,
                "models": f"each whole model in alternation with the reference model (held loaded: "
                          f"{REFERENCE}); predict.model_latency takes out the drift its readings show",
                "cold_copies": f"per block, copies with their own weights until they exceed 2 x L2, activations "
                               f"within L2/2 (max {MAX_COPIES}; fewer than 2: none)",
                "quiet": f"beside each whole model and its reference: the samples not descheduled (at least "
                         f"{QUIET_MIN}, else the fastest {QUIET_FRACTION:.0%}); cost.model_latency reads them when "
                         f"most samples were descheduled",
                "l2_bytes": l2_bytes(), **({} if pairs else {"pairs": "not measured (--no-pairs)"}),
                "memory": f"per whole model: the size of the artifact measured and the peak memory of one "
                          f"inference ({RSS_SOURCE}; a file artifact in a fork of a process that has "
                          f"imported the runtime only: latency.memory.PeakProcess)"}

    if out.exists() and not resume:
        raise BadInputError(f"profile {out} already exists",
                            hint="pass --resume to complete it, or choose another --out")
    if out.exists():
        try:
            prof = load_profile(out)
        except BadInputError:
            kept = salvage_profile(out)
            if kept is None:
                raise
            prof = kept[0]
            emit(ProfileEvent("salvaged", what=f"warning: {out} was cut short; kept its {kept[1]} whole "
                                               f"entries, measuring what was lost", name=str(out), done=kept[1]))
        for what, have, want in (("target", prof.target_name, target.name), ("family", prof.family, family),
                                 ("in_channels", prof.in_channels, in_channels),
                                 ("num_classes", prof.num_classes, num_classes)):
            if have != want:
                raise BadInputError(f"cannot resume {out}: it was made with {what} {have!r}, not {want!r}",
                                    hint="use the same options or another --out")
        prof.grid = prof.grid + [s for s in specs if s not in prof.grid]
        _note_protocol(prof, protocol)
    else:
        prof = Profile(target=target.model_dump(mode="json"), family=family, in_channels=in_channels,
                       num_classes=num_classes, protocol=protocol, grid=list(specs), created=_now())

    # Plan: the overhead, then per candidate its blocks not yet stored, then the candidate itself.
    sigs = {s: block_signatures(s, in_channels, num_classes=num_classes) for s in specs}
    calibrating = calibration_specs(prof.grid, sigs, prof, in_channels, num_classes)
    plan: list[tuple[str, str, Any]] = []
    skipped: list[str] = []
    if prof.overhead is None:
        plan.append(("overhead", "overhead", None))
    else:
        skipped.append("overhead")
    planned: set[str] = set()
    for s in specs:
        for sig in sigs[s]:
            k = sig["key"]
            if k in prof.blocks:
                if k not in skipped:
                    skipped.append(k)
            elif k not in planned:
                planned.add(k)
                plan.append(("block", k, sig))
        for a, b in zip(sigs[s], sigs[s][1:]) if pairs else ():
            k = pair_key(a["key"], b["key"])
            if k in prof.pairs:
                if k not in skipped:
                    skipped.append(k)
            elif k not in planned:
                planned.add(k)
                plan.append(("pair", k, (a, b)))
        if prof.model(s) is None:
            plan.append(("model", s, None))
        else:
            skipped.append(s)
    plan = bridge_plan(prof, plan)  # a resumed run: stored entries again, to bridge the loads
    emit(ProfileEvent("planned", done=0, total=len(plan)))
    # the reference: kept from the profile being resumed, else the middle of the grid by capacity
    # (a profile made before references keeps its models unreferenced; predict.model_latency)
    if prof.protocol.get("reference") is None:
        prof.protocol["reference"] = reference_spec(prof.grid, sigs, prof, in_channels, num_classes)
    ref_spec = prof.protocol["reference"]
    reference = None
    ref_load = uuid.uuid4().hex[:12]
    # the probe every block and pair is measured in alternation with (cost.drift_factor)
    probe_sig = probe_signature(prof, sigs, ref_spec, in_channels, num_classes)
    probe = None
    peaks = PeakProcess(target)  # whole models' peak memory, each in a fork of one process (latency.memory)

    measured: list[str] = []
    base_elapsed = prof.elapsed_s
    tmp_ctx = tempfile.TemporaryDirectory(prefix="edgekd-profile-") if work_dir is None else None
    root = Path(tmp_ctx.name) if tmp_ctx else Path(work_dir)
    try:
        for i, (what, name, sig) in enumerate(plan):
            emit(ProfileEvent("start", what, name, i, len(plan)))
            wd = root / f"e{i:04d}"
            if what == "overhead":
                shape = tuple(input_shape(specs[0], in_channels))
                m, env = measure_module(_overhead_module(), shape, target, block_settings, wd, "overhead")
                prof.overhead = m.stats
                lat = m.stats.p50
            elif what in ("block", "pair", "bridge-block"):
                if probe is None and probe_sig is not None:
                    probe_module, probe_shape = build_block(dict(probe_sig))
                    probe = open_reference(probe_module, tuple(probe_shape), target, root / "probe")
                if what != "pair":
                    module, shape = build_block(sig)
                    copies = cold_copies(sig)
                    m, over, cold, env, seen = measure_block(module, tuple(shape), target, block_settings, wd,
                                                             copies, probe=probe)
                    entry = BlockEntry(key=name, signature=_jsonable(sig), latency=m.stats,
                                       input_shape=tuple(shape), measured_at=_now(), latency_cold=cold,
                                       copies=copies, overhead=over, probe=seen, probe_load=ref_load if seen else "")
                    if what == "block":
                        prof.blocks[name] = entry
                    else:
                        prof.bridges.append(entry)
                else:
                    m, head, env, seen = measure_pair(sig[0], sig[1], target, pair_settings, wd, probe=probe)
                    prof.pairs[name] = PairEntry(first=sig[0]["key"], second=sig[1]["key"], latency=m.stats,
                                                 measured_at=_now(), first_alone=head.stats,
                                                 probe=seen, probe_load=ref_load if seen else "")
                lat = m.stats.p50
            else:
                shape = tuple(input_shape(name, in_channels))
                model = build_model(name, num_classes=num_classes, in_channels=in_channels)
                macs, params = count_macs_params(model, shape)
                settings = cal_settings if name in calibrating else model_settings
                if reference is None:  # a model is planned, so the grid and its reference exist
                    ref_module = build_model(ref_spec, num_classes=num_classes, in_channels=in_channels)
                    reference = open_reference(ref_module, tuple(input_shape(ref_spec, in_channels)),
                                               target, root / "reference")
                m, ref, env = measure_with_reference(model, shape, target, settings, wd, reference)
                (prof.models if what == "model" else prof.bridges).append(ModelEntry(
                                              family=family, spec=name, params=int(params), macs=int(macs),
                                              blocks=tuple(g["key"] for g in sigs[name]) if what == "model"
                                              else prof.model(name).blocks, latency=m.stats,
                                              input_shape=shape, first_inference_ms=m.first_inference_ms,
                                              measured_at=_now(), reference=ref.stats, reference_load=ref_load,
                                              quiet=quiet_stats(m), reference_quiet=quiet_stats(ref),
                                              steady=steady_stats(m, ref),
                                              memory=memory_record(getattr(m, "artifact", None), target,
                                                                    (target.batch, *shape), peaks)))
                lat = m.stats.p50
            if prof.fingerprint and compare(prof.fingerprint, env):
                raise BadInputError(f"cannot resume {out}: it was measured in another environment "
                                    f"({describe_mismatch(prof.fingerprint, env)})",
                                    hint="profile into a new --out on this machine")
            if not prof.fingerprint:
                prof.fingerprint = {**env, "input_shape": None}
            prof.elapsed_s = base_elapsed + (time.monotonic() - t0)
            _save(prof, out, target)
            if not what.startswith("bridge"):
                measured.append(name)
            _rmtree(wd)
            emit(ProfileEvent("measured", what, name, i + 1, len(plan), lat))
    finally:
        peaks.close()
        for held in (reference, probe):
            if held is not None:
                close_session(held.session)
        if tmp_ctx:
            tmp_ctx.cleanup()
    if not plan:  # nothing to measure: still refit and store (e.g. an older predictor's file)
        _save(prof, out, target)
    elapsed = time.monotonic() - t0
    emit(ProfileEvent("done", done=len(plan), total=len(plan)))
    return ProfileRun(profile=prof, path=out, measured=measured, skipped=skipped, elapsed_s=elapsed)


def _save(prof: Profile, out: Path, target) -> None:
    """save_profile, with the memory fits and per-candidate figures current (size_estimate)."""
    from .size_estimate import memory_summary

    prof.memory = memory_summary(prof, target)
    save_profile(prof, out)


def _note_protocol(prof: Profile, protocol: Mapping) -> None:
    """A resumed profile made under another protocol keeps its header (its entries were measured
    so) and lists each later one under ``protocol.resumed_with``, with when it began: an entry's
    ``measured_at`` says which it was measured under."""
    def core(p: Mapping) -> dict:
        return {k: v for k, v in p.items() if k not in ("reference", "probe", "resumed_with", "since")}

    later = list(prof.protocol.get("resumed_with", []))
    if core(later[-1] if later else prof.protocol) != core(protocol):
        later.append({"since": _now(), **core(protocol)})
        prof.protocol["resumed_with"] = later


def _jsonable(sig: Mapping) -> dict:
    return json.loads(json.dumps(dict(sig), default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)
