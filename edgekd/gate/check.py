"""One `edgekd gate` run: every (model, target, budget) of the plan measured (gate_one) or
checked against a profile's prediction (--predict-only), with baselines read and written."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

from ..config import Budget
from ..errors import BadInputError, RuntimeMissingError
from .plan import plan_gate
from .run import DEFAULT_MAX_ROUNDS, DEFAULT_MAX_TIME_S, ERROR, BaselineStore, GateResult, bench_measure, gate_one

log = logging.getLogger(__name__)


def check_models(paths: Sequence[str], *, budgets_path: "str | None" = None, target_name: "str | None" = None,
                 budget_ms: "float | None" = None, metric: str = "p90", confidence: float = 0.95,
                 max_regression: float = 1.05, baseline_path: "str | None" = None,
                 save_baseline: "str | None" = None, predict_only: bool = False,
                 profile_path: "str | None" = None, max_rounds: int = DEFAULT_MAX_ROUNDS,
                 max_time_s: "float | None" = DEFAULT_MAX_TIME_S, min_iters: "int | None" = None,
                 work_dir: "str | None" = None, baseline_model: "str | None" = None,
                 history_db: "str | None" = None, record_history: bool = True,
                 on_note: "Callable[[str], None] | None" = None,
                 on_start: "Callable[[str, str, Budget], None] | None" = None,
                 max_size_kb: "float | None" = None, max_peak_mb: "float | None" = None) -> list[GateResult]:
    """Gate every model of the plan (gate.plan.plan_gate) and return one GateResult each.

    Everything that can be bad input (options, budgets, targets, the baseline and the profile)
    is checked before anything is measured. A target whose runtime is missing here gives an
    ERROR result (exit 4), never a pass. ``on_note(text)`` hears the plan's notes (models
    skipped), ``on_start(model, target, budget)`` each pair as its check begins; with
    ``save_baseline`` this run's samples are merged into that file. ``baseline_model`` is the
    other build's model, measured in alternation with each model (gate.ab). Every decided result
    is appended to the gate history (``history_db``, default under the cache root) unless
    ``record_history`` is False; a history that can't be written is a warning, never a verdict.
    ``max_size_kb`` / ``max_peak_mb``: memory budgets (latency.memory), measured once per pair;
    over one is FAIL with the numbers, whatever the latency.
    """
    from ..targets import load_target

    if predict_only and not profile_path:
        raise BadInputError("--predict-only needs --profile FILE", hint="give the target's latency profile JSON")
    if predict_only and (baseline_path or save_baseline or baseline_model):
        raise BadInputError("--predict-only takes no --baseline/--save-baseline/--baseline-model: nothing is measured")
    if max_time_s is not None and not max_time_s > 0:
        raise BadInputError(f"--max-time-s {max_time_s} must be a positive number of seconds")
    plan, notes = plan_gate(paths, budgets_path=budgets_path, target_name=target_name, budget_ms=budget_ms,
                            metric=metric, confidence=confidence, max_regression=max_regression)
    if not plan:
        raise BadInputError("nothing to gate: no model matches a budget on these targets")
    memory = max_size_kb is not None or max_peak_mb is not None
    if memory:
        from ..latency.memory import check_budget_values

        check_budget_values(max_size_kb, max_peak_mb)
        if predict_only:
            raise BadInputError("memory budgets are measured; --predict-only measures nothing",
                                hint="drop --max-size-kb/--max-peak-mb or --predict-only")
    for t in dict.fromkeys(t for _, t, _ in plan):
        load_target(t)  # unknown target names are bad input (exit 2) before anything is measured
    from ..deploy import check_ref_manifest

    for m in dict.fromkeys(m for m, _, _ in plan):
        check_ref_manifest(m)  # a changed file from a compress output, too (bench checks it again)
    baselines = BaselineStore.load(baseline_path) if baseline_path else None
    profile = None
    if predict_only:
        from ..latency.fit import load_profile

        profile = load_profile(profile_path)
    if baseline_model:
        from .ab import pair_measure

        measure = pair_measure(baseline_model, min_iters=min_iters, work_dir=work_dir)
    else:
        measure = bench_measure(min_iters=min_iters, work_dir=work_dir)
    for n in notes:
        if on_note:
            on_note(n)

    results = []
    for model, target, budget in plan:
        if on_start:
            on_start(model, target, budget)
        if predict_only:
            from .predict_only import gate_predicted

            results.append(gate_predicted(model, target, budget, profile))
            continue
        try:
            results.append(gate_one(model, target, budget, measure_fn=measure, baselines=baselines,
                                    max_rounds=max_rounds, max_time_s=max_time_s))
            if memory:
                _check_memory(results[-1], model, target, max_size_kb, max_peak_mb)
        except RuntimeMissingError as exc:
            results.append(GateResult(model=model, target=target, budget=budget, status=ERROR,
                                      error=exc.one_line()))

    if save_baseline:
        store = BaselineStore.load(save_baseline) if Path(save_baseline).is_file() else BaselineStore()
        for r in results:
            store.update(r)
        store.save(save_baseline)
    if record_history:
        _record(results, history_db, on_note)
    return results


def _check_memory(res: GateResult, model: str, target: str, max_size_kb, max_peak_mb) -> None:
    """Size and peak memory of ``model`` on ``target`` against the budgets: FAIL with the numbers
    when over one; a PASS whose memory cannot be measured here becomes INCONCLUSIVE."""
    import tempfile

    from ..deploy import open_model
    from ..latency.measure import close_session
    from ..latency.memory import budget_results, measure_memory
    from ..targets import load_target
    from ..verdict import Verdict

    spec = load_target(target)
    if spec.remote is not None:  # measured on the device by a short bench there (remote.ops)
        from ..remote.ops import remote_bench
        from ..targets import measure_settings

        brief = measure_settings(spec.measure, {"warmup_s": 0.0, "warmup_iters": 1, "min_iters": 10,
                                                "min_time_s": 0.0, "sessions": 1})
        mem = remote_bench(model, spec, settings=brief).memory
        if mem is None:
            raise RuntimeMissingError(f"edgekd on the device of '{target}' reported no memory figures",
                                      hint="install the same edgekd version there")
    else:
        with tempfile.TemporaryDirectory(prefix="edgekd-gate-memory-") as tmp:
            opened = open_model(model, spec, work_dir=Path(tmp))
            close_session(opened.session)
            mem = measure_memory(opened.artifact, spec, tuple(opened.input_shape))
    res.memory = mem.to_dict()
    found = budget_results(mem, max_size_kb, max_peak_mb)
    over = [detail for _, ok, _, _, detail in found if ok is False]
    if over:
        res.status = Verdict.FAIL.value
        res.error = f"over the memory budget: {'; '.join(over)}"
    elif any(ok is None for _, ok, _, _, _ in found) and res.status == Verdict.PASS.value:
        res.status = Verdict.INCONCLUSIVE.value
        res.warnings.append(f"memory not measured here ({mem.peak_source})")


def _record(results, history_db, on_note) -> None:
    import sqlite3

    from ..errors import EdgeKDError
    from .history import GateHistory

    try:
        GateHistory(history_db).record(results)
    except (OSError, sqlite3.Error, EdgeKDError) as exc:
        msg = f"gate history not written ({exc})"
        log.warning(msg)
        if on_note:
            on_note(msg)
