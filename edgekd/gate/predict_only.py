"""--predict-only: check a profile's predicted latency x (1 + eps) against the budget, no timing.

A small adapter over the profile JSON ("schema": "edgekd.profile/v1"): a model's spec (ONNX
metadata_props key "edgekd.spec", written by edgekd's exporter) is looked up among the profile's
entries; if it is not there and the file is a full profile, the block-sum predictor is asked.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from ..config import Budget
from ..errors import BadInputError, EdgeKDError
from .decide import Decision, Verdict
from .run import GateResult

PROFILE_SCHEMA = "edgekd.profile/v1"


def read_profile(path: "str | Path") -> dict:
    from ..util_io import read_versioned_json

    p = Path(path)
    data = read_versioned_json(p, PROFILE_SCHEMA, what="profile", hint="write one with `edgekd profile`")
    data["_path"] = str(p)
    return data


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


def _epsilon(profile: Mapping[str, Any], metric: str) -> float:
    v = profile.get("validation") or {}
    sub = v.get(metric) if isinstance(v.get(metric), dict) else {}
    eps = sub.get("p95_rel_error", v.get("p95_rel_error"))
    if eps is None or not math.isfinite(float(eps)) or float(eps) < 0:
        raise BadInputError(f"profile {profile.get('_path')} has no validation.p95_rel_error",
                            hint="re-run `edgekd profile` so the predictor is validated")
    return float(eps)


def predicted_ms(profile: Mapping[str, Any], spec: str, metric: str) -> float:
    for e in profile.get("entries") or []:
        if isinstance(e, dict) and e.get("spec") == spec and isinstance(e.get("latency"), dict):
            val = e["latency"].get(metric)
            if val is not None:
                return float(val)
    try:  # not measured itself: ask the block-sum predictor of a full profile
        from ..latency.predict import predict
        from ..latency.profile import Profile

        return float(predict(Profile.from_dict(profile), spec, metric))
    except (KeyError, ValueError, TypeError, LookupError, EdgeKDError) as exc:
        raise BadInputError(f"profile {profile.get('_path')} has no entry or prediction for '{spec}' ({metric})",
                            hint="profile this family on the target with `edgekd profile`") from exc


def gate_predicted(model: str, target: str, budget: Budget, profile: Mapping[str, Any]) -> GateResult:
    """PASS when prediction x (1+eps) <= budget; FAIL when prediction / (1+eps) > budget (even an
    optimistic reading is over); otherwise INCONCLUSIVE."""
    spec = model_spec(model)
    eps = _epsilon(profile, budget.metric)
    pred = predicted_ms(profile, spec, budget.metric)
    lo, hi = pred / (1 + eps), pred * (1 + eps)
    b = budget.budget_ms
    if hi <= b:
        verdict, why = Verdict.PASS, f"predicted {budget.metric} x (1+{eps:.3f}) = {hi:.4g} ms is within {b:.4g} ms"
    elif lo > b:
        verdict, why = Verdict.FAIL, f"predicted {budget.metric} / (1+{eps:.3f}) = {lo:.4g} ms is over {b:.4g} ms"
    else:
        verdict, why = Verdict.INCONCLUSIVE, f"budget {b:.4g} ms lies within the prediction's error band"
    d = Decision(verdict=verdict, reason=why, metric=budget.metric, value=pred, ci=(lo, hi), confidence=0.95,
                 budget_ms=b, n=0, iqr_over_median=0.0, unstable=False)
    res = GateResult(model=str(model), target=target, budget=budget, status=verdict.value, decision=d,
                     source="predicted")
    prof_target = profile.get("target")
    name = prof_target.get("name") if isinstance(prof_target, dict) else prof_target
    if name and name != target:
        res.warnings.append(f"profile {profile.get('_path')} was measured on '{name}', not '{target}'")
    return res
