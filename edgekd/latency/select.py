"""Student selection under a latency budget (docs/LATENCY.md "Profiles and prediction").

Among the profile's candidates predicted at or under ``budget / (1 + eps)`` (eps = the
profile's p95 relative prediction error), take the one with the most capacity (RANKS, the
family's ``rank`` by default); optionally measure it on the profile's target and step down while
it misses the budget.

Two orders: "params" (then MACs) and "macs" (then params; the hf- families': params do not see
resolution, and on published MobileNetV2 checkpoints MACs pick within 0.08 top-1 points of the
best that fits a budget, params 0.52: tools/bench_rank.py, docs/LATENCY.md).

When a verified pick meets the budget with room to spare, the margin eps has done its job and
the measurement is better evidence than the prediction: the predictions of larger candidates
are scaled by the pick's measured/predicted ratio, and the largest whose scaled prediction is
within ``(1 - headroom) x budget`` is measured in turn (at most ``max_up`` times); it replaces
the pick only when its own measurement meets the budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from ..errors import BadInputError, VerdictError
from ..verdict import judge_value
from .predict import check_metric, epsilon, get_calibration, predict_blocks
from .profile_file import Profile
from .recalibrate import (Recalibration, check_factor, make_corrected_measure, recalibrate,
                          verify_settings)


@dataclass(frozen=True)
class Candidate:
    spec: str
    params: int
    macs: int
    predicted_ms: float
    measured_ms: float | None = None  # from the profile (whole-model entry), same metric
    fits: bool = False
    verified_ms: float | None = None  # measured on the target by verify
    derived: bool = False  # not in the grid: predicted from blocks the profile holds
    verified_raw_ms: float | None = None  # the raw reading when verified_ms is drift-corrected
    # artifact size and peak memory of one inference (size_estimate.candidate_memory), set with a
    # memory budget or when the profile measured them; *_from: measured | predicted | estimated
    size_kb: float | None = None
    over_memory: bool = False  # over a memory budget: never picked, not even when stepping up
    size_from: str = ""
    peak_mb: float | None = None
    peak_from: str = ""

    def to_dict(self) -> dict:
        return {"spec": self.spec, "params": self.params, "macs": self.macs,
                "predicted_ms": self.predicted_ms, "measured_ms": self.measured_ms, "fits": self.fits,
                "verified_ms": self.verified_ms, "verified_raw_ms": self.verified_raw_ms,
                "derived": self.derived, "size_kb": self.size_kb, "size_from": self.size_from or None,
                "peak_mb": self.peak_mb, "peak_from": self.peak_from or None, "over_memory": self.over_memory}


# Capacity orders, most capacity last: the key select_student ranks candidates by.
RANKS: dict[str, Callable[[Candidate], tuple]] = {"macs": lambda c: (c.macs, c.params),
                                                  "params": lambda c: (c.params, c.macs)}


def family_rank(family: str) -> str:
    """The capacity order a family declares (models.Family.rank); "macs" for one edgekd does not know."""
    from ..models import get_family

    try:
        return get_family(family).rank
    except BadInputError:  # an unknown family
        return "macs"


def check_rank(rank: str) -> Callable[[Candidate], tuple]:
    if rank not in RANKS:
        raise BadInputError(f"unknown capacity rank '{rank}'; known: {', '.join(RANKS)}", hint="--rank macs or params")
    return RANKS[rank]


@dataclass(frozen=True)
class Selection:
    budget_ms: float
    metric: str
    epsilon: float
    limit_ms: float  # budget / (1 + eps)
    chosen: Candidate
    candidates: tuple[Candidate, ...]  # every candidate, by capacity
    attempts: tuple[Candidate, ...] = ()  # verify: each one measured, in order
    verified: bool = False
    profile: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # predictions (and the profile's stored readings) were multiplied by this (re-calibration)
    speed_factor: float = 1.0
    recalibration: Recalibration | None = None
    # which figure verified_ms is: "raw", or "corrected" (to the speed at re-calibration)
    judged: str = "raw"
    max_size_kb: float | None = None
    memory_note: str = ""  # how many candidates the memory budgets excluded, and why
    max_peak_mb: float | None = None
    memory_fit: dict = field(default_factory=dict)  # size_estimate.fit_memory of the profile
    rank: str = "params"  # the capacity order (RANKS)

    def to_dict(self) -> dict:
        return {"rank": self.rank, "max_size_kb": self.max_size_kb, "max_peak_mb": self.max_peak_mb, "memory_note": self.memory_note,
                "memory_fit": self.memory_fit, "budget_ms": self.budget_ms, "metric": self.metric, "epsilon": self.epsilon,
                "limit_ms": self.limit_ms, "chosen": self.chosen.to_dict(), "verified": self.verified,
                "attempts": [a.to_dict() for a in self.attempts], "profile": self.profile,
                "candidates": [c.to_dict() for c in self.candidates], "warnings": list(self.warnings),
                "speed_factor": self.speed_factor, "judged": self.judged,
                "recalibration": self.recalibration.to_dict() if self.recalibration else None}

    def neighbours(self, k: int = 3) -> list[Candidate]:
        """The candidates around the chosen one (k on each side, by capacity)."""
        i = [c.spec for c in self.candidates].index(self.chosen.spec)
        return list(self.candidates[max(0, i - k): i + k + 1])


# Knob values tried around each profiled candidate; a variant is kept only when every block it
# runs is in the profile (repeated blocks of a stage share one key, so depth is free to vary).
# mobilenetv2's stages have 1-4 blocks, so depths give distinct block counts only across
# 1/3, 1/2, 2/3, 3/4 and 1: 0.6 is the one between 0.5 and 0.67 (per stage 1,2,2,3,2,2,1).
DERIVE_KNOBS: dict[str, dict[str, tuple]] = {
    "mobilenetv2": {"depth": (0.25, 0.34, 0.5, 0.6, 0.67, 0.75, 0.84, 1.0, 1.25, 1.34, 1.5, 1.67, 1.75,
                              2.0)},
    "resnet": {"blocks": tuple(f"{a}-{b}-{c}" for a in range(1, 5) for b in range(1, 5) for c in range(1, 5))},
    "convnet": {"depth": tuple(range(1, 11))},
}


def derived_specs(profile: Profile) -> list[str]:
    """Specs not profiled whole whose blocks are all in the profile (denser choice, same predictor)."""
    from ..models import block_signatures, parse_spec

    knobs = DERIVE_KNOBS.get(profile.family, {})
    if not knobs:
        return []
    have = {m.spec for m in profile.models}
    out: list[str] = []
    for m in profile.models:
        base = parse_spec(m.spec).knobs
        for knob, values in knobs.items():
            for v in values:
                text = f"{profile.family}:" + ",".join(
                    f"{k}={v if k == knob else _fmt(x)}" for k, x in base.items())
                try:
                    spec = parse_spec(text).spec
                    keys = [g["key"] for g in block_signatures(spec, profile.in_channels,
                                                               num_classes=profile.num_classes)]
                except BadInputError:
                    continue
                if spec not in have and all(k in profile.blocks for k in keys):
                    have.add(spec)
                    out.append(spec)
    return out


def _fmt(x) -> str:
    return "-".join(str(v) for v in x) if isinstance(x, (tuple, list)) else format(x, "g") if isinstance(x, float) else str(x)


def candidates(profile: Profile, metric: str = "p90", extra_specs: Sequence[str] = (),
               derive: bool = False, rank: str | None = None) -> list[Candidate]:
    """Every whole-model entry of the profile (plus ``extra_specs``, and with ``derive`` the
    derived_specs, whose blocks are all in it), with its predicted latency, ordered by capacity
    (``rank``, RANKS; None: the family's)."""
    metric = check_metric(metric, what="--metric")
    key = check_rank(rank or family_rank(profile.family))
    out = []
    for m in profile.models_by_capacity():
        out.append(Candidate(spec=m.spec, params=m.params, macs=m.macs,
                             predicted_ms=predict_blocks(profile, m.blocks, metric),
                             measured_ms=m.latency.metric(metric)))
    if extra_specs or derive:
        from ..models import block_signatures, parse_spec

        have = {c.spec for c in out}
        seen = {tuple(m.blocks) for m in profile.models}
        cal = get_calibration(profile, metric)
        # derived variants only inside the calibrated range (no extrapolation of the fit)
        xs = [cal.feature(profile, m.blocks) for m in profile.models if cal.has_feature(profile, m.blocks)]
        lo, hi = (min(xs), max(xs)) if xs else (0.0, 0.0)
        for s, is_extra in [(x, True) for x in extra_specs] + [(x, False) for x in
                                                                (derived_specs(profile) if derive else [])]:
            spec = parse_spec(s).spec
            sigs = block_signatures(spec, profile.in_channels, num_classes=profile.num_classes)
            keys = tuple(g["key"] for g in sigs)
            if spec in have or (not is_extra and (keys in seen or not cal.has_feature(profile, keys))):
                continue
            x = cal.feature(profile, keys)  # an extra spec with unmeasured blocks: BadInputError
            if not is_extra and not lo <= x <= hi:
                continue
            out.append(Candidate(spec=spec, params=sum(int(g["params"]) for g in sigs),
                                 macs=sum(int(g["macs"]) for g in sigs), derived=True,
                                 predicted_ms=cal.predict(profile, keys)))
            have.add(spec)
            seen.add(keys)
    if not out:
        raise BadInputError(f"profile {profile.label} has no candidates",
                            hint="complete it with `edgekd profile --resume`")
    return sorted(out, key=lambda c: (*key(c), c.spec))


def _pick(pool: Sequence[Candidate], rank: str) -> Candidate | None:
    fitting = [c for c in pool if c.fits]
    return max(fitting, key=lambda c: (*RANKS[rank](c), -c.predicted_ms)) if fitting else None


def too_small_message(profile: Profile, budget_ms: float, metric: str, eps: float,
                      cands: Sequence[Candidate]) -> str:
    fastest = min(cands, key=lambda c: c.predicted_ms)
    need = fastest.predicted_ms * (1 + eps)
    return (f"budget {budget_ms:g} ms ({metric}) is below every candidate of {profile.family} in "
            f"{profile.label}: the smallest reachable is {fastest.predicted_ms:.3f} ms predicted "
            f"({fastest.spec}), which needs a budget of at least {need:.3f} ms with the profile's "
            f"error margin {eps:.1%}; options: a smaller family, pruning (edgekd prune), or INT8 "
            f"(an *-int8 target)")


def select_student(profile: Profile, budget_ms: float, *, metric: str = "p90",
                   extra_specs: Sequence[str] = (), derive: bool = True, verify: bool = False, target=None,
                   measure: Callable[[str], float] | None = None,
                   on_attempt: Callable[[Candidate], None] | None = None,
                   headroom: float = 0.05, max_up: int = 3, speed_factor: float = 1.0,
                   scale: Callable[[float], float] | None = None,
                   max_size_kb: float | None = None, max_peak_mb: float | None = None,
                   rank: str | None = None) -> Selection:
    """The max-capacity candidate (``rank``: RANKS, "macs" or "params"; None: the profile's
    family's, family_rank) predicted at or under ``budget_ms / (1 + eps)``.

    Candidates: the profile's whole-model entries, ``extra_specs``, and with ``derive`` the
    variants of them whose blocks are all in the profile (derived_specs).

    With ``verify``, each pick is measured (``measure(spec) -> ms`` of ``metric``; by default on
    the profile's target; it may return (judged, raw)) and, while it misses the budget, the next
    faster pick is tried; once one meets it, larger candidates are tried as the module docstring
    says (``max_up=0``: never). ``speed_factor`` (a re-calibration's) multiplies every
    prediction and stored reading first; ``scale`` (a re-calibration's speed map,
    Recalibration.scale), when given, maps them instead. ``max_size_kb`` / ``max_peak_mb``: candidates whose
    artifact size / peak memory on the target is over it are never picked: as measured by the
    profile, else predicted from its fit with the fit's worst error as margin, else (size; a
    profile that measured none) estimated from params (size_estimate).
    BadInputError when a budget is below every candidate; VerdictError when verification
    finds no candidate that meets it.
    """
    if not budget_ms > 0:
        raise BadInputError(f"--budget-ms {budget_ms} must be a positive number of milliseconds")
    eps = epsilon(profile, metric)
    rank = rank or family_rank(profile.family)
    limit = budget_ms / (1.0 + eps)
    f = float(speed_factor)
    sc = scale or (lambda ms: ms * f)
    cands = [replace(c, predicted_ms=sc(c.predicted_ms), fits=sc(c.predicted_ms) <= limit,
                     measured_ms=None if c.measured_ms is None else sc(c.measured_ms))
             for c in candidates(profile, metric, extra_specs, derive, rank)]
    note, fits = "", {}
    budgets = max_size_kb is not None or max_peak_mb is not None
    if budgets or any(m.memory for m in profile.models):
        cands, note, fits = _memory_budget(profile, cands, max_size_kb, max_peak_mb, target)
    chosen = _pick(cands, rank)
    if chosen is None:
        if budgets and any(c.predicted_ms <= limit for c in cands):
            given = " and ".join(f"{o} {v:g}" for o, v in (("--max-size-kb", max_size_kb),
                                                            ("--max-peak-mb", max_peak_mb)) if v is not None)
            both = "all of" if max_size_kb is not None and max_peak_mb is not None else "both"
            raise BadInputError(f"no candidate of {profile.label} meets {both} {budget_ms:g} ms ({metric}) and "
                                f"{given}: {note}",
                                hint="raise one of the budgets, or use INT8 (an *-int8 target)")
        raise BadInputError(too_small_message(profile, budget_ms, metric, eps, cands))
    attempts: list[Candidate] = []
    if verify:
        measure = measure or make_measure(profile, metric, target=target)
        pool = list(cands)
        while True:
            got = _measured(chosen, measure)
            attempts.append(got)
            if on_attempt:
                on_attempt(got)
            cands = [got if c.spec == got.spec else c for c in cands]
            if judge_value(got.verified_ms, budget_ms).passed:
                chosen = got
                break
            # step down: only candidates predicted faster than the one that missed
            pool = [c for c in pool if c.spec != got.spec and c.fits and c.predicted_ms < got.predicted_ms]
            nxt = _pick(pool, rank)
            if nxt is None:
                raise VerdictError(
                    f"no candidate of {profile.label} meets {budget_ms:g} ms ({metric}) when measured: "
                    + ", ".join(f"{a.spec} {a.verified_ms:.3f} ms" for a in attempts),
                    hint="raise the budget, re-profile on a quiet machine, prune, or use INT8")
            chosen = nxt
        chosen, cands = _step_up(chosen, cands, budget_ms, measure, attempts, on_attempt, headroom, max_up, rank)
    return Selection(budget_ms=float(budget_ms), metric=metric, epsilon=eps, limit_ms=limit, chosen=chosen,
                     candidates=tuple(cands), attempts=tuple(attempts), verified=bool(verify),
                     profile=profile.label, speed_factor=f,
                     judged="corrected" if any(a.verified_raw_ms is not None for a in attempts) else "raw",
                     max_size_kb=max_size_kb, memory_note=note, max_peak_mb=max_peak_mb, memory_fit=fits,
                     rank=rank)


def _memory_budget(profile: Profile, cands: list, max_size_kb: float | None, max_peak_mb: float | None,
                   target) -> tuple[list, str, dict]:
    """The candidates with their size and peak (size_estimate.candidate_memory), those over a
    budget marked (a predicted figure judged with its fit's worst error added); a note of how
    many and from what; the fits. BadInputError naming the smallest reachable figure when a
    budget excludes every candidate."""
    from .memory import check_budget_values
    from .size_estimate import block_keys, candidate_memory, fit_memory, memory_note, memory_target

    check_budget_values(max_size_kb, max_peak_mb)
    spec, prof, why = memory_target(profile, target)
    fits = fit_memory(prof, spec)
    out, errs, n_over = [], {}, {"size": 0, "peak": 0}
    for c in cands:
        f = errs[c.spec] = candidate_memory(prof, fits, c.spec, c.params, block_keys(profile, c.spec), spec)
        kb, mb = f.size_bytes / 1024.0, None if f.peak_bytes is None else f.peak_bytes / 2.0 ** 20
        over_size = max_size_kb is not None and kb * (1 + f.size_error) > max_size_kb
        over_peak = max_peak_mb is not None and mb is not None and mb * (1 + f.peak_error) > max_peak_mb
        n_over["size"] += over_size
        n_over["peak"] += over_peak
        out.append(replace(c, size_kb=kb, size_from=f.size_from, peak_mb=mb, peak_from=f.peak_from,
                           over_memory=over_size or over_peak, fits=c.fits and not (over_size or over_peak)))
    _refuse_if_none_fits(out, errs, "--max-size-kb", max_size_kb, "size", "KB", 1, profile, spec,
                         "raise --max-size-kb, use INT8 (an *-int8 target), or a smaller family")
    _refuse_if_none_fits(out, errs, "--max-peak-mb", max_peak_mb, "peak", "MB", 2, profile, spec,
                         "raise --max-peak-mb, or use a smaller family or a runtime with a smaller footprint")
    return out, memory_note(out, n_over, max_size_kb, max_peak_mb, fits, spec, why), fits


def _refuse_if_none_fits(cands: list, errs: dict, option: str, budget: float | None, figure: str,
                         unit: str, digits: int, profile: Profile, spec, hint: str) -> None:
    """BadInputError naming the smallest reachable ``figure`` ("size" in KB or "peak" in MB) when
    ``budget`` excludes every candidate that has one (a predicted figure with its fit's error)."""
    from .size_estimate import describe_figure

    attr = "size_kb" if figure == "size" else "peak_mb"

    def value(c: Candidate):
        return getattr(c, attr)

    def error(c: Candidate) -> float:
        return getattr(errs[c.spec], f"{figure}_error")

    known = [c for c in cands if value(c) is not None]
    if budget is None or not known or any(value(c) * (1 + error(c)) <= budget for c in known):
        return
    small = min(known, key=value)
    raise BadInputError(f"{option} {budget:g} is below every candidate of {profile.family} in "
                        f"{profile.label} on {spec.name}: the smallest reachable is "
                        f"{describe_figure(value(small), unit, getattr(small, f'{figure}_from'), error(small), digits)} "
                        f"({small.spec}, {small.params:,} params)", hint=hint)


def _measured(c: Candidate, measure) -> Candidate:
    got = measure(c.spec)
    if isinstance(got, tuple):  # (drift-corrected, raw)
        return replace(c, verified_ms=float(got[0]), verified_raw_ms=float(got[1]))
    return replace(c, verified_ms=float(got))


def select_from_file(path: "str | Path", budget_ms: float, *, strict: bool = False,
                     on_warning: Callable[[str], None] | None = None, recalibrate_here: bool = True,
                     measure_reference: Callable[[str], object] | None = None, **kwargs) -> Selection:
    """select_student on the profile at ``path`` (fit.load_profile), checked first against this
    machine (profile.check_here: a profile measured elsewhere is refused with ``strict``, else
    ``on_warning`` hears why and the Selection carries it in ``warnings``), then re-calibrated to
    it (latency.recalibrate: its reference model measured here, ``measure_reference(spec) ->
    Measurement`` to replace that; predictions scaled by the factor; ``strict`` refuses a factor
    outside drift.STRICT_RANGE). With ``verify`` and a re-calibration, each candidate is
    measured in alternation with the reference and judged drift-corrected. ``kwargs`` go to
    select_student."""
    from .fit import load_profile
    from .profile import check_here

    profile = load_profile(path)
    notes = [m for m in [check_here(profile, strict=strict)] if m]
    rc = None
    if recalibrate_here:
        rc = recalibrate(profile, target=kwargs.get("target"), measure=measure_reference)
        notes += [m for m in [check_factor(rc, profile, strict=strict)] if m]
    for msg in notes:
        if on_warning:
            on_warning(msg)
    own = None
    if rc is not None and kwargs.get("verify") and kwargs.get("measure") is None:
        own = kwargs["measure"] = make_corrected_measure(profile, kwargs.get("metric", "p90"), rc,
                                                         target=kwargs.get("target"))
    try:
        sel = select_student(profile, budget_ms, speed_factor=rc.factor if rc else 1.0,
                             scale=rc.scaler(kwargs.get("metric", "p90")) if rc else None, **kwargs)
    finally:
        if own is not None:
            own.close()
    return replace(sel, warnings=tuple(notes), recalibration=rc)


def _step_up(chosen: Candidate, cands: list[Candidate], budget_ms: float, measure, attempts: list,
             on_attempt, headroom: float, max_up: int, rank: str) -> tuple[Candidate, list[Candidate]]:
    """Larger candidates, judged by predictions scaled to the last measurement (see module doc)."""
    tried = {a.spec for a in attempts}
    ref = chosen
    for _ in range(max(0, max_up)):
        if not ref.predicted_ms > 0:
            break
        ratio = ref.verified_ms / ref.predicted_ms
        bigger = [c for c in cands if c.spec not in tried and not c.over_memory
                  and RANKS[rank](c) > RANKS[rank](chosen)
                  and c.predicted_ms * ratio <= (1.0 - headroom) * budget_ms]
        nxt = _pick([replace(c, fits=True) for c in bigger], rank)
        if nxt is None:
            break
        got = _measured(next(c for c in cands if c.spec == nxt.spec), measure)
        tried.add(got.spec)
        attempts.append(got)
        if on_attempt:
            on_attempt(got)
        cands = [got if c.spec == got.spec else c for c in cands]
        ref = got
        if judge_value(got.verified_ms, budget_ms).passed:
            chosen = got
    return chosen, cands


def make_measure(profile: Profile, metric: str, *, target=None,
                 work_dir: "str | Path | None" = None) -> Callable[[str], float]:
    """measure(spec) -> the metric (ms) of the candidate measured on the target (open_model +
    measure_session, the target's own protocol)."""
    import tempfile

    from ..backends import require_backend
    from ..models import build_model, input_shape
    from ..targets import load_target
    from .pieces import measure_module
    from .profile import profile_target

    if target is None:  # the very target the profile was measured on
        target = profile_target(profile)
    else:
        target = load_target(target)
    require_backend(target)

    settings = verify_settings(profile, target)

    def measure(spec: str) -> float:
        model = build_model(spec, num_classes=profile.num_classes, in_channels=profile.in_channels)
        shape = tuple(input_shape(spec, profile.in_channels))
        with tempfile.TemporaryDirectory(prefix="edgekd-select-", dir=work_dir) as tmp:
            m, _ = measure_module(model, shape, target, settings, Path(tmp), "verify")
        return m.stats.metric(metric)

    return measure
