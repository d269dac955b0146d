"""A profile re-calibrated to the machine at hand (docs/LATENCY.md "Drift and the reference model").

A profile stores, beside every whole model, the readings of its reference model (the grid's
middle candidate, ``protocol.reference``) measured in alternation with it. Before its
predictions are trusted here, the reference model is measured on this machine now; the
**speed factor** is its median here (undisturbed samples) over the median of its stored
readings. A profile without reference readings (made before references) cannot be
re-calibrated: its predictions are used as stored, with a warning.

Beside the reference, the profile's fastest and slowest whole models are measured in
alternation with it: a busy or another machine slows a short model more, in proportion, than a
long one, so the three (p50 predicted, p50 here) points make a **speed map** (latency.drift.SpeedMap,
linear between them) that every prediction goes through; where it cannot be built (one point,
readings that cross) predictions are multiplied by the factor. A point's first figure is the
profile's *prediction* for that model, not its stored reading: the map takes predictions, so it
is anchored on their scale, and a model predicted exactly where it was measured here reads as
measured. A stored reading is one measurement and can be an outlier where the fitted line
through six models is not: the fastest model of an ort-cpu hf-mobilenetv2 profile stored a p90
of 1.172 ms against a p50 of 0.747 (predicted p90 0.935); anchored on that reading, the map
scaled every short model's predicted p90 by 0.85 and the smallest budget's pick measured 8% over
it (BENCHMARKS.md, bench_select at 16-px steps).

A verification then measures a candidate in alternation with the same reference models and
corrects it to the speed they showed at re-calibration (with a map: latency.drift.correct_mapped;
else latency.drift.correct), so the predictions and the verified figures describe the same
machine at the same speed.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BadInputError
from .drift import MIN_KEPT, STRICT_RANGE, SpeedMap, correct, correct_mapped, in_strict_range
from .profile_file import Profile


@dataclass(frozen=True)
class Recalibration:
    """``factor`` = here_p50_ms / stored_p50_ms (> 1: this machine runs slower than the profile's)."""

    factor: float
    here_p50_ms: float
    stored_p50_ms: float
    reference: str
    profile: str
    n: int = 0
    disturbed: int = 0
    # every reference model read here, by stored time: ((spec, predicted p50 ms, p50 here ms), ...)
    # (the profile's prediction for it: on_predictor_scale);
    # the profile's fastest and slowest whole models beside its reference (empty: the factor alone)
    points: tuple = ()
    # the same models' p90s, (spec, predicted p90 ms, p90 here ms) (undisturbed samples): a busy
    # machine widens a short model's tail more than a long one's
    points_p90: tuple = ()

    @property
    def speed_map(self) -> SpeedMap | None:
        """The map predictions go through (None: they are multiplied by ``factor``)."""
        return SpeedMap.build([(st, here) for _, st, here in self.points]) if len(self.points) > 1 else None

    @property
    def tail_map(self) -> SpeedMap | None:
        """The map the p90 points make (None: they make none)."""
        return SpeedMap.build([(st, h) for _, st, h in self.points_p90]) if len(self.points_p90) > 1 else None

    def metric_map(self, metric: str = "p50") -> SpeedMap | None:
        """The map for predictions of ``metric``: tail_map for p90 (when there is one), else speed_map."""
        return (self.tail_map if metric == "p90" else None) or self.speed_map

    def scale(self, ms: float, metric: str = "p50") -> float:
        """A stored latency of ``metric`` (a prediction, a stored reading) as it reads on this machine."""
        m = self.metric_map(metric)
        return m.apply(ms) if m is not None else ms * self.factor

    def scaler(self, metric: str) -> Callable[[float], float]:
        """scale for one metric (select_student's ``scale``)."""
        return lambda ms: self.scale(ms, metric)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["points"] = [{"spec": sp, "stored_p50_ms": st, "here_p50_ms": h} for sp, st, h in self.points]
        d["points_p90"] = [{"spec": sp, "stored_p90_ms": st, "here_p90_ms": h} for sp, st, h in self.points_p90]
        d["mapped"] = self.speed_map is not None
        return d

    def describe(self) -> str:
        text = (f"profile {self.profile} re-calibrated here: its reference {self.reference} measured "
                f"{self.here_p50_ms:.4f} ms (p50) against {self.stored_p50_ms:.4f} ms stored")
        if self.speed_map is None:
            return text + f", so predictions are scaled by {self.factor:.3f}" + (
                " (its fastest and slowest models read out of order here)" if len(self.points) > 1 else "")
        pts = "; ".join(f"{st:.4f} -> {h:.4f} ms ({h / st:.3f}x)" for _, st, h in self.points)
        text += (f" (factor {self.factor:.3f}); with its fastest and slowest models, predictions go "
                 f"through the speed map {pts} (p50 predicted -> here, linear between)")
        if self.tail_map is not None:
            text += "; p90s through " + "; ".join(f"{st:.4f} -> {h:.4f} ms" for _, st, h in self.points_p90)
        return text


def stored_reference_p50(profile: Profile) -> float | None:
    """The median of the reference model's stored readings (p50), None when the profile has none
    (its quiet readings where the profile is read through them: cost.quiet_readings)."""
    from .cost import quiet_readings

    refs = [m.reference_quiet if quiet_readings(profile) else m.reference for m in profile.models]
    vals = [r.p50 for r in refs if r is not None and r.p50 > 0]
    return float(np.median(vals)) if vals else None


def undisturbed_p50(m, q: float = 50.0) -> float:
    """The median (``q``: that percentile) of a Measurement's samples during which the process
    was not descheduled (all of them when fewer than drift.MIN_KEPT are: the rule
    drift.correct and correct_mapped keep a model's samples by, so that a model and the
    references it is read against are taken alike, however busy the machine)."""
    x = np.asarray(m.samples_ms, dtype=np.float64)
    if m.disturbed is not None and (~m.disturbed).sum() >= min(MIN_KEPT, x.size):
        x = x[~m.disturbed]
    return float(np.percentile(x, q))


def stored_reference_p90(profile: Profile) -> float | None:
    """stored_reference_p50's p90 twin."""
    from .cost import quiet_readings

    refs = [m.reference_quiet if quiet_readings(profile) else m.reference for m in profile.models]
    vals = [r.p90 for r in refs if r is not None and r.p90 > 0]
    return float(np.median(vals)) if vals else None


def on_predictor_scale(profile: Profile, spec: str, stored_ms: float, metric: str) -> float:
    """The profile's prediction of ``metric`` for its whole model ``spec`` (what a speed map
    anchors on), or ``stored_ms`` where it predicts none."""
    from .predict import predict_blocks

    m = next((x for x in profile.models if x.spec == spec), None)
    try:
        v = predict_blocks(profile, m.blocks, metric) if m is not None else math.nan
    except (BadInputError, KeyError):  # no calibration, or a block the profile lacks
        v = math.nan
    return float(v) if v > 0 and math.isfinite(v) else float(stored_ms)


def reference_points(profile: Profile, stored_ref: float) -> list[tuple[str, float]]:
    """The models a re-calibration measures, (spec, stored p50 ms) by stored time: the profile's
    fastest and slowest whole models (drift taken out: cost.model_latency) where they are at
    least 25% away from the reference, and the reference itself (``stored_ref``)."""
    from .cost import model_latency

    ref = (profile.protocol or {}).get("reference")
    out = [(ref, float(stored_ref))]
    timed = [(m.spec, model_latency(profile, m, "p50")) for m in profile.models if m.spec != ref]
    timed = [(sp, float(v)) for sp, v in timed if v > 0 and math.isfinite(v)]
    if timed:
        fast, slow = min(timed, key=lambda t: t[1]), max(timed, key=lambda t: t[1])
        if fast[1] < stored_ref / 1.25:
            out.append(fast)
        if slow[1] > stored_ref * 1.25:
            out.append(slow)
    return sorted(out, key=lambda t: t[1])


def _reference_module(profile: Profile, spec: str):
    from ..models import build_model, input_shape

    return (build_model(spec, num_classes=profile.num_classes, in_channels=profile.in_channels).eval(),
            tuple(input_shape(spec, profile.in_channels)))


def recalibrate(profile: Profile, *, target=None, settings=None,
                measure: Callable[[str], object] | None = None) -> Recalibration | None:
    """Measure the profile's reference models here (reference_points; ``measure(spec) ->
    Measurement`` for each; by default all in alternation on ``target``, the profile's own when
    None, with the profile's whole-model protocol) and return the factor and the speed map;
    None when the profile stores no reference readings."""
    spec = (profile.protocol or {}).get("reference")
    stored = stored_reference_p50(profile)
    if not spec or stored is None:
        return None
    refs = reference_points(profile, stored)
    specs = [s for s, _ in refs]
    if measure is None:
        ms = _measure_together(profile, specs, *_target_and_settings(profile, target, settings))
    else:
        ms = [measure(s) for s in specs]
    m = ms[specs.index(spec)]
    here = undisturbed_p50(m)
    # a fastest or slowest model with too few undisturbed samples says how busy the machine was,
    # not how fast it runs that model: it is left out of the map
    kept = [(r, x) for r, x in zip(refs, ms) if r[0] == spec or _tail_readable(x)]
    refs, ms = [r for r, _ in kept], [x for _, x in kept]
    points = tuple((s, on_predictor_scale(profile, s, st, "p50"), undisturbed_p50(x))
                   for (s, st), x in zip(refs, ms)) if len(refs) > 1 else ()
    tails = ()
    if points and all(_tail_readable(x) for x in ms):  # else a tail is the other work's
        from .cost import model_latency

        by_spec = {m.spec: m for m in profile.models}
        stored90 = [stored_reference_p90(profile) if s == spec else model_latency(profile, by_spec[s], "p90")
                    for s, _ in refs]
        if all(v is not None and v > 0 for v in stored90):
            tails = tuple((s, on_predictor_scale(profile, s, st, "p90"), undisturbed_p50(x, 90.0))
                          for (s, _), st, x in zip(refs, stored90, ms))
    return Recalibration(factor=here / stored, here_p50_ms=here, stored_p50_ms=stored, reference=spec,
                         profile=profile.label, n=int(m.stats.n), disturbed=int(m.stats.disturbed), points=points,
                         points_p90=tails)


def _measure_together(profile: Profile, specs: list, target, settings) -> list:
    """The models ``specs`` opened on ``target`` and measured in alternation: one Measurement each."""
    from .measure import close_session, measure_opened_together
    from .pieces import open_reference

    with tempfile.TemporaryDirectory(prefix="edgekd-recal-") as tmp:
        openeds = []
        try:
            for i, s in enumerate(specs):
                module, shape = _reference_module(profile, s)
                openeds.append(open_reference(module, shape, target, Path(tmp) / f"r{i}"))
        except BaseException:
            for o in openeds:
                close_session(o.session)
            raise
        return measure_opened_together(openeds, target, settings)[0]


def check_factor(rc: Recalibration | None, profile: Profile, *, strict: bool = False) -> str | None:
    """The warning a re-calibration calls for (None: none); BadInputError with ``strict`` when
    the factor is outside STRICT_RANGE."""
    if rc is None:
        return (f"profile {profile.label} stores no reference readings (made before references), so it "
                f"cannot be re-calibrated to this machine: predictions are used as stored")
    if in_strict_range(rc.factor):
        return None
    lo, hi = STRICT_RANGE
    text = (f"this machine runs the profile's reference at {rc.factor:.2f}x its stored time "
            f"({rc.here_p50_ms:.4f} ms against {rc.stored_p50_ms:.4f} ms), outside [{lo:g}, {hi:g}]")
    if strict:
        raise BadInputError(text, hint="profile this machine (edgekd profile), measure on a quieter one, "
                                       "or drop --strict to scale the predictions anyway")
    return text + "; predictions are scaled by it, but the machine differs a lot from the profile's"


def _target_and_settings(profile: Profile, target, settings):
    from ..targets import load_target, target_from_dict

    if target is None:  # the very target the profile was measured on
        target = target_from_dict({k: v for k, v in profile.target.items() if k != "source"})
    else:
        target = load_target(target)
    return target, settings or verify_settings(profile, target)


def verify_settings(profile: Profile, target) -> "MeasureSettings":  # noqa: F821
    """How a candidate is verified: the target's protocol, over as many loads as the profile's
    whole models were measured with (a verified value is compared with those)."""
    from ..targets import measure_settings

    stored = ((profile.protocol or {}).get("model") or {}).get("sessions", 1)
    return measure_settings(target.measure, {"sessions": max(target.measure.sessions, int(stored))})


def _tail_readable(m) -> bool:
    """Whether a Measurement's undisturbed samples are enough to read its tail (MIN_KEPT)."""
    return m.disturbed is None or int((~m.disturbed).sum()) >= min(MIN_KEPT, m.disturbed.size)


def _tail_corrected(rc: Recalibration, m, refs) -> float | None:
    """A verification's p90 (undisturbed samples) through the references' p90s: read back to
    the stored scale through the map their p90s make now, then to this machine at
    re-calibration through rc's p90 map (a busy machine's tail moves from one moment to the
    next, and the references' tails move with the model's; undisturbed samples, as for the
    medians). None without p90 maps, or when the model or a reference has fewer than MIN_KEPT
    undisturbed samples (its p90 would be the other work's, not its own)."""
    then = rc.tail_map
    if then is None or len(rc.points_p90) != len(refs) or not all(_tail_readable(x) for x in [m, *refs]):
        return None
    now = SpeedMap.build([(st, undisturbed_p50(r, 90.0)) for (_, st, _), r in zip(rc.points_p90, refs)])
    return None if now is None else float(then.apply(now.invert(undisturbed_p50(m, 90.0))))


def make_corrected_measure(profile: Profile, metric: str, rc: Recalibration, *, target=None,
                           work_dir: "str | Path | None" = None) -> Callable[[str], tuple[float, float]]:
    """measure(spec) -> (corrected, raw) ``metric`` in ms: the candidate measured on the target in
    alternation with the profile's reference models (held loaded: rc's points, else its reference
    alone), corrected to the speed they showed at re-calibration: a p90 through their p90s now
    and then (_tail_corrected), else through the speed map they give now and the one at
    re-calibration (latency.drift.correct_mapped), else by the reference's factor round by round
    (latency.drift.correct). Close it with ``measure.close()``."""
    from ..backends import require_backend
    from ..models import build_model, input_shape
    from .measure import close_session, measure_opened_together
    from .pieces import open_reference

    target, settings = _target_and_settings(profile, target, None)
    require_backend(target)
    root = tempfile.TemporaryDirectory(prefix="edgekd-select-", dir=work_dir)
    held: list = []
    then = rc.speed_map
    specs = [p[0] for p in rc.points] if then is not None else [rc.reference]

    def measure(spec: str) -> tuple[float, float]:
        for i, s in enumerate(specs[len(held):], start=len(held)):
            module, shape = _reference_module(profile, s)
            held.append(open_reference(module, shape, target, Path(root.name) / f"reference{i}"))
        model = build_model(spec, num_classes=profile.num_classes, in_channels=profile.in_channels)
        shape = tuple(input_shape(spec, profile.in_channels))
        with tempfile.TemporaryDirectory(dir=root.name) as tmp:
            opened = open_reference(model, shape, target, Path(tmp))
            (m, *refs), _ = measure_opened_together([opened], target, settings, held=held)
        now = None if then is None else SpeedMap.build(
            [(st, undisturbed_p50(r)) for (_, st, _), r in zip(rc.points, refs)])
        tail = _tail_corrected(rc, m, refs) if metric == "p90" and now is not None else None
        if tail is not None:
            return tail, m.stats.metric(metric)
        if now is not None:
            fixed, _ = correct_mapped(m, now, then, confidence=settings.confidence,
                                      unstable_iqr=settings.unstable_iqr)
        else:
            _, fixed, _ = correct(m, refs[specs.index(rc.reference)], rc.here_p50_ms,
                                  source=f"re-calibration of {rc.profile}", reference_name=rc.reference,
                                  confidence=settings.confidence, unstable_iqr=settings.unstable_iqr)
        value = fixed.metric(metric)
        return (value if math.isfinite(value) else m.stats.metric(metric)), m.stats.metric(metric)

    def close() -> None:
        for o in held:
            close_session(o.session)
        held.clear()
        root.cleanup()

    measure.close = close  # type: ignore[attr-defined]
    return measure
