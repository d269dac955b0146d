"""--baseline-model: the other build's model measured in alternation with the current one, in
the same job (docs/LATENCY.md, "The CI gate"). Both see the same machine at the same moments,
so a regression is judged on a like-for-like comparison instead of against numbers stored
on another day."""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import BadInputError


@dataclass(frozen=True)
class PairMeasurement:
    """One round: the current model's samples and the baseline model's, taken in alternating slices."""

    samples_ms: np.ndarray
    baseline_samples_ms: np.ndarray
    environment: Mapping[str, Any] = field(default_factory=dict)
    model_sha256: str = ""
    baseline_sha256: str = ""


def pair_measure(baseline_model: "str | Path", *, min_iters: int | None = None,
                 work_dir: "str | Path | None" = None, **settings_update: Any) -> Callable:
    """A gate measure_fn that measures MODEL and ``baseline_model`` in alternation on this machine
    (latency.measure.measure_opened_together, the target's protocol, at least GATE_MIN_SAMPLES
    samples each unless ``min_iters`` says otherwise). Returns (model, TargetSpec) -> PairMeasurement."""
    from ..deploy import check_ref_manifest
    from .run import gate_settings

    if not Path(baseline_model).is_file():
        raise BadInputError(f"--baseline-model {baseline_model} does not exist",
                            hint="give the other build's model file (e.g. the main branch's artifact)")
    check_ref_manifest(baseline_model)
    update = dict(settings_update)

    def measure(model: str, target) -> PairMeasurement:
        from ..deploy import open_model
        from ..latency.measure import measure_opened_together

        if target.remote is not None:
            raise BadInputError(f"--baseline-model measures both models on this machine; target {target.name} "
                                "runs on a remote device", hint="gate remote targets against --baseline FILE")
        settings = gate_settings(target, min_iters, update)
        with contextlib.ExitStack() as stack:
            wd = work_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="edgekd-gate-ab-"))
            dirs = [Path(wd) / "current", Path(wd) / "baseline"]
            for d in dirs:
                d.mkdir(parents=True, exist_ok=True)
            cur = open_model(model, target, work_dir=dirs[0])
            base = open_model(baseline_model, target, work_dir=dirs[1])
            (mc, mb), env = measure_opened_together([cur, base], target, settings)
        return PairMeasurement(samples_ms=mc.samples_ms, baseline_samples_ms=mb.samples_ms, environment=env,
                               model_sha256=cur.artifact.sha256, baseline_sha256=base.artifact.sha256)
    return measure
