"""A profile re-calibrated to the machine at hand (docs/LATENCY.md "Drift and the reference model").

A profile stores, beside every whole model, the readings of its reference model (the grid's
middle candidate, ``protocol.reference``) measured in alternation with it. Before its
predictions are trusted here, the reference model is measured on this machine now; the
**speed factor** is its median here (undisturbed samples) over the median of its stored
readings, and every prediction is multiplied by it. A profile without reference readings (made
before references) cannot be re-calibrated: its predictions are used as stored, with a warning.

A verification then measures a candidate in alternation with the same reference model and
corrects it to the speed the reference showed at re-calibration (latency.drift.correct), so the
predictions and the verified figures describe the same machine at the same speed.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BadInputError
from .drift import STRICT_RANGE, correct, in_strict_range
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

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"profile {self.profile} re-calibrated here: its reference {self.reference} measured "
                f"{self.here_p50_ms:.4f} ms (p50) against {self.stored_p50_ms:.4f} ms stored, so predictions "
                f"are scaled by {self.factor:.3f}")


def stored_reference_p50(profile: Profile) -> float | None:
    """The median of the reference model's stored readings (p50), None when the profile has none
    (its quiet readings where the profile is read through them: cost.quiet_readings)."""
    from .cost import quiet_readings

    refs = [m.reference_quiet if quiet_readings(profile) else m.reference for m in profile.models]
    vals = [r.p50 for r in refs if r is not None and r.p50 > 0]
    return float(np.median(vals)) if vals else None


def undisturbed_p50(m) -> float:
    """The median of a Measurement's samples during which the process was not descheduled
    (all of them when fewer than half are)."""
    x = np.asarray(m.samples_ms, dtype=np.float64)
    if m.disturbed is not None and (~m.disturbed).sum() * 2 >= x.size:
        x = x[~m.disturbed]
    return float(np.median(x))


def _reference_module(profile: Profile, spec: str):
    from ..models import build_model, input_shape

    return (build_model(spec, num_classes=profile.num_classes, in_channels=profile.in_channels).eval(),
            tuple(input_shape(spec, profile.in_channels)))


def recalibrate(profile: Profile, *, target=None, settings=None,
                measure: Callable[[str], object] | None = None) -> Recalibration | None:
    """Measure the profile's reference model here (``measure(spec) -> Measurement``; by default
    alone on ``target``, the profile's own when None, with the profile's whole-model protocol)
    and return the factor; None when the profile stores no reference readings."""
    spec = (profile.protocol or {}).get("reference")
    stored = stored_reference_p50(profile)
    if not spec or stored is None:
        return None
    if measure is None:
        from .pieces import measure_module

        target, settings = _target_and_settings(profile, target, settings)

        def measure(s):
            module, shape = _reference_module(profile, s)
            with tempfile.TemporaryDirectory(prefix="edgekd-recal-") as tmp:
                return measure_module(module, shape, target, settings, Path(tmp), "reference")[0]

    m = measure(spec)
    here = undisturbed_p50(m)
    return Recalibration(factor=here / stored, here_p50_ms=here, stored_p50_ms=stored, reference=spec,
                         profile=profile.label, n=int(m.stats.n), disturbed=int(m.stats.disturbed))


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


def make_corrected_measure(profile: Profile, metric: str, rc: Recalibration, *, target=None,
                           work_dir: "str | Path | None" = None) -> Callable[[str], tuple[float, float]]:
    """measure(spec) -> (corrected, raw) ``metric`` in ms: the candidate measured on the target in
    alternation with the profile's reference model (held loaded), corrected to the speed the
    reference showed at re-calibration (latency.drift.correct). Close it with ``measure.close()``."""
    from ..backends import require_backend
    from ..models import build_model, input_shape
    from .measure import close_session
    from .pieces import measure_with_reference, open_reference

    target, settings = _target_and_settings(profile, target, None)
    require_backend(target)
    root = tempfile.TemporaryDirectory(prefix="edgekd-select-", dir=work_dir)
    held: list = []

    def measure(spec: str) -> tuple[float, float]:
        if not held:
            module, shape = _reference_module(profile, rc.reference)
            held.append(open_reference(module, shape, target, Path(root.name) / "reference"))
        model = build_model(spec, num_classes=profile.num_classes, in_channels=profile.in_channels)
        shape = tuple(input_shape(spec, profile.in_channels))
        with tempfile.TemporaryDirectory(dir=root.name) as tmp:
            m, ref, _ = measure_with_reference(model, shape, target, settings, Path(tmp), held[0])
        _, fixed, _ = correct(m, ref, rc.here_p50_ms, source=f"re-calibration of {rc.profile}",
                           reference_name=rc.reference, confidence=settings.confidence,
                           unstable_iqr=settings.unstable_iqr)
        value = fixed.metric(metric)
        return (value if math.isfinite(value) else m.stats.metric(metric)), m.stats.metric(metric)

    def close() -> None:
        for o in held:
            close_session(o.session)
        held.clear()
        root.cleanup()

    measure.close = close  # type: ignore[attr-defined]
    return measure
