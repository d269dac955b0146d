"""--predict-only: check a profile's predicted latency x (1 + eps) against the budget, no timing.

The profile is read by latency's one loader (latency.fit.load_profile). A model's spec (ONNX
metadata_props key "edgekd.spec", written by edgekd's exporter) is looked up among the profile's
whole-model entries; if it is not there, the block-sum predictor is asked. eps is the profile's
p95 relative prediction error for the budget's own metric (latency.predict.margin). The
prediction is first re-calibrated to this machine when it matches the profile's fingerprint
(recalibrated).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import Budget
from ..errors import BadInputError, EdgeKDError
from ..latency.predict import margin, predict
from ..latency.profile_file import Profile
from ..verdict import Verdict, judge
from .decide import Decision
from .run import GateResult


def model_spec(model: "str | Path") -> str:
    """The student spec an edgekd-exported ONNX file carries in metadata_props["edgekd.spec"]."""
    p = Path(model)
    if p.suffix.lower() != ".onnx":
        raise BadInputError(f"--predict-only needs .onnx files exported by edgekd; got {p}",
                            hint="export the model with `edgekd export`")
    import onnx
    from google.protobuf.message import DecodeError

    try:
        m = onnx.load(str(p), load_external_data=False)
    except (OSError, DecodeError, ValueError) as exc:
        raise BadInputError(f"cannot read ONNX model {p}: {exc}") from exc
    for prop in m.metadata_props:
        if prop.key == "edgekd.spec" and prop.value.strip():
            return prop.value.strip()
    raise BadInputError(f"{p} carries no 'edgekd.spec' metadata, so no profile prediction applies",
                        hint="export it with `edgekd export`, or measure it (drop --predict-only)")


def _epsilon(profile: Profile, metric: str) -> float:
    eps = margin(profile, metric)
    if eps is None or eps < 0:
        raise BadInputError(f"profile {profile.label} has no validation.p95_rel_error",
                            hint="re-run `edgekd profile` so the predictor is validated")
    return eps


def predicted_ms(profile: Profile, spec: str, metric: str) -> float:
    """The profile's whole-model reading of ``spec`` where it has one, else the predictor's."""
    entry = profile.model(spec)
    if entry is not None:
        return entry.latency.metric(metric)
    try:  # not measured itself: ask the block-sum predictor
        return float(predict(profile, spec, metric))
    except (KeyError, ValueError, TypeError, LookupError, EdgeKDError) as exc:
        raise BadInputError(f"profile {profile.label} has no entry or prediction for '{spec}' ({metric})",
                            hint="profile this family on the target with `edgekd profile`") from exc


_RECALIBRATED: "dict[int, tuple[Profile, Callable[[float, str], float], str | None]]" = {}


def _unscaled(ms: float, metric: str = "p50") -> float:
    return ms


def recalibrated(profile: Profile) -> "tuple[Callable[[float, str], float], str | None]":
    """(scale, note): ``scale(ms, metric)`` turns the profile's prediction into this machine's,
    as select does (latency.recalibrate: the speed map through its fastest, reference and
    slowest models, else the reference's factor), once per profile, when the machine matches
    the profile's fingerprint; unscaled with a note when it does not (another kind of machine
    says nothing about the device's speed) or the profile stores no reference readings."""
    held = _RECALIBRATED.get(id(profile))
    if held is None or held[0] is not profile:
        from ..latency.profile import check_here
        from ..latency.recalibrate import check_factor, recalibrate

        if check_here(profile):
            out = (_unscaled, f"profile {profile.label} not re-calibrated: it describes another environment")
        else:
            rc = recalibrate(profile)
            out = (rc.scale if rc else _unscaled,
                   "; ".join(m for m in (rc.describe() if rc else None, check_factor(rc, profile)) if m))
        held = _RECALIBRATED[id(profile)] = (profile, *out)
    return held[1], held[2]


def gate_predicted(model: str, target: str, budget: Budget, profile: Profile) -> GateResult:
    """The prediction's error band [pred / (1+eps), pred x (1+eps)] judged against the budget
    (verdict.judge): PASS when even the pessimistic end is within it, FAIL when even the
    optimistic end is over, otherwise INCONCLUSIVE."""
    spec = model_spec(model)
    metric = str(budget.metric)
    eps = _epsilon(profile, metric)
    scale, note = recalibrated(profile)
    pred = scale(predicted_ms(profile, spec, metric), metric)
    lo, hi = pred / (1 + eps), pred * (1 + eps)
    b = budget.budget_ms
    verdict = judge(lo, hi, b)
    if verdict is Verdict.PASS:
        why = f"predicted {metric} x (1+{eps:.3f}) = {hi:.4g} ms is within {b:.4g} ms"
    elif verdict is Verdict.FAIL:
        why = f"predicted {metric} / (1+{eps:.3f}) = {lo:.4g} ms is over {b:.4g} ms"
    else:
        why = f"budget {b:.4g} ms lies within the prediction's error band"
    d = Decision(verdict=verdict, reason=why, metric=metric, value=pred, ci=(lo, hi), confidence=0.95,
                 budget_ms=b, n=0, iqr_over_median=0.0, unstable=False)
    res = GateResult(model=str(model), target=target, budget=budget, status=verdict.value, decision=d,
                     source="predicted")
    if note:
        res.warnings.append(note)
    name = profile.target.get("name")
    if name and name != target:
        res.warnings.append(f"profile {profile.label} was measured on '{name}', not '{target}'")
    return res
