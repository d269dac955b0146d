"""compress(): the one-shot chain, resumable stage by stage.

    select -> distill -> prune -> export -> quantize -> verify -> report

``select`` takes the student from the target's latency profile (profiles/<target>-<family>.json
when it applies here; otherwise it profiles a short grid into the output directory first).
``prune`` (--prune auto) measures the distilled student on the target unless the selection
already found that no candidate fits; if it misses the budget, torch-pruning shrinks it until it
fits and distillation fine-tunes it (pruned.pt, which export uses). ``export`` writes the ONNX
hub file and the target's artifact (parity-checked); ``quantize`` starts from that ONNX file
(int8 via the target's -int8 twin, kept only when it is faster). Every stage returns a typed
result (results.py) that goes into OUT/state.json (state.py), written atomically when the stage
starts and when it finishes; ``resume=True`` skips finished stages and hands their results, read
back typed, to the stages left, and distillation resumes inside the trainer from its last
checkpoint.

    config.py   CompressConfig and the pipeline's defaults
    plan.py     make_plan(config) -> Plan; where profiles are found
    state.py    state.json: read, prepare, write
    results.py  one dataclass per stage result
    select.py   the select stage;  stages.py  the stages after it
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .config import DEFAULT_FAMILY, PRUNE_MARGIN, CompressConfig
from .context import Context
from .plan import Plan, find_profile, locate_profile, make_plan, profile_dirs
from .results import (RESULT_TYPES, STAGES, Cost, DistillResult, ExportResult, PruneStageResult, QuantizeResult,
                      ReportResult, SelectResult, StageResult, VerifyStageResult, result_from_dict)
from .select import _at_resolution, select_stage  # noqa: F401 (_at_resolution: tests use it here)
from .stages import (deployed_checkpoint, distill_stage, export_stage, final_artifact, prune_stage,
                     quantize_stage, report_stage, summary, verify_stage)
from .validate import validate_run
from .state import (STATE, STATE_SCHEMA, finished_results, prepare_out, read_state, record_done, record_start,
                    save_state)

__all__ = ["CompressConfig", "CompressResult", "CompressRun", "Plan", "compress", "make_plan", "plan_and_compress",
           "find_profile", "locate_profile", "profile_dirs", "read_state", "STATE", "STATE_SCHEMA", "STAGES",
           "DEFAULT_FAMILY", "PRUNE_MARGIN", "RESULT_TYPES", "StageResult", "Cost", "SelectResult",
           "DistillResult", "PruneStageResult", "ExportResult", "QuantizeResult", "VerifyStageResult",
           "ReportResult", "result_from_dict", "finished_results", "deployed_checkpoint", "final_artifact"]


@dataclass
class CompressResult:
    out: Path
    state: dict  # the run's state.json document
    verdict: str
    artifact: Optional[str]
    report_paths: dict
    results: dict[str, StageResult] = field(default_factory=dict)  # typed, by stage

    @property
    def verify(self) -> Optional[VerifyStageResult]:
        return self.results.get("verify")

    def to_dict(self) -> dict:
        st = self.state["stages"]
        return {"out": str(self.out), "verdict": self.verdict, "artifact": self.artifact,
                "reports": self.report_paths,
                "stages": {k: {"status": v.get("status"), "wall_s": v.get("wall_s")} for k, v in st.items()},
                "verify": {k: v for k, v in (st.get("verify", {}).get("result") or {}).items()
                           if k != "samples_ms"}}


# stage -> (function, what it is handed after the Context: the results of these stages, by name,
# and "state", the run's state document, which the reports render)
_RUN: dict[str, tuple[Callable[..., StageResult], tuple[str, ...]]] = {
    "select": (select_stage, ()),
    "distill": (distill_stage, ("select",)),
    "prune": (prune_stage, ("select",)),
    "export": (export_stage, ("prune",)),
    "quantize": (quantize_stage, ("export",)),
    "verify": (verify_stage, ("prune", "export", "quantize")),
    "report": (report_stage, ("state", "distill", "prune", "export", "quantize", "verify")),
}


def compress(config: "CompressConfig | dict", out: "str | Path", *, resume: bool = False, force: bool = False,
             show: bool = True, echo: Callable[[str], None] = print, context: Optional[dict] = None,
             plan: Optional[Plan] = None, latency_fn: Optional[Callable] = None) -> CompressResult:
    """Run (or continue) the chain into ``out``; see the module docstring.

    Returns a CompressResult whose ``verdict`` is verify's (pass / fail / inconclusive); the
    caller decides the exit code. ``context`` (JSON-able) is stored in the state and the report.
    ``latency_fn(module) -> stats`` replaces the prune stage's ONNX measurements (tests).
    """
    cfg = config if isinstance(config, CompressConfig) else CompressConfig.make(**dict(config))
    plan = plan or make_plan(cfg)
    out = Path(out)
    ctx = Context(out, cfg, plan, show=show, echo=echo, latency_fn=latency_fn)
    validate_run(ctx)  # bad inputs end here, before state.json or any measuring
    state = prepare_out(out, cfg, resume=resume, force=force)
    state["plan"] = plan.to_dict()
    if context:
        state.setdefault("context", {}).update(context)
    results = finished_results(state)
    for name in STAGES:
        if name in results:
            if show:
                echo(f"[{name}] done earlier ({state['stages'][name].get('wall_s', 0):.1f} s); skipped")
            continue
        again = record_start(state, name)
        save_state(out, state)
        if show:
            echo(f"[{name}] {'resuming' if again else 'starting'}")
        fn, inputs = _RUN[name]
        t0 = time.perf_counter()
        result = fn(ctx, *(state if i == "state" else results[i] for i in inputs))
        wall = time.perf_counter() - t0
        results[name] = result
        record_done(state, name, result, wall)
        save_state(out, state)
        if show:
            echo(f"[{name}] done in {wall:.1f} s" + summary(name, result))
    ver, rep = results["verify"], results["report"]
    return CompressResult(out=out, state=state, verdict=ver.verdict, artifact=ver.artifact,
                          report_paths=rep.paths, results=results)


@dataclass
class CompressRun:
    """What `edgekd compress` did: the plan, and the result unless it was a dry run."""

    plan: Plan
    result: Optional[CompressResult]


def plan_and_compress(settings: Mapping[str, Any], out: "str | Path | None", *, resume: bool = False,
                      force: bool = False, dry_run: bool = False, show: bool = True,
                      echo: Callable[[str], None] = print, announce: bool = True) -> CompressRun:
    """`edgekd compress` as one call: the config from ``settings`` (CompressConfig fields; None
    means the default), the plan, printed through ``echo`` when ``announce``, then -- unless
    ``dry_run`` -- compress() into ``out``."""
    cfg = CompressConfig.make(**dict(settings))
    plan = make_plan(cfg)
    if announce:
        echo(plan.text())
    if dry_run:
        return CompressRun(plan=plan, result=None)
    return CompressRun(plan=plan, result=compress(cfg, out, resume=resume, force=force, show=show, echo=echo,
                                                  plan=plan))
