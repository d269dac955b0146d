"""`edgekd gate`: hold models to latency budgets in CI (docs/LATENCY.md, "The CI gate")."""
from __future__ import annotations

import sys

import click

from ..verdict import METRICS
from .common import emit_json, json_option, trust_code_option


def _print_table(results) -> None:
    from ..gate.outputs import measured_on

    for r in results:
        d = r.decision
        nums = d.numbers() if d else (r.error or "")
        click.echo(f"{r.status:<12} {r.model} on {r.target}: {nums}")
        if d and r.status != "ERROR":
            judged = f"; judged {r.judged}" + (f", machine speed factor {r.drift_factor:.3f}"
                                               if r.drift_factor else "")
            click.echo(f"{'':<12} {d.reason}; rounds {r.rounds}{judged}")
            if (r.environment or {}).get("remote"):
                click.echo(f"{'':<12} measured on {measured_on(r)}")
        if d and r.error:  # over a memory budget (--max-size-kb / --max-peak-mb)
            click.echo(f"{'':<12} {r.error}")
        for w in r.warnings:
            click.echo(f"{'':<12} warning: {w}")


def _history(paths, history_db, target_name, as_json) -> int:
    from ..gate.history import GateHistory, trend_table

    store = GateHistory(history_db)
    rows = store.rows(paths, target=target_name)
    if as_json:
        emit_json({"schema": "edgekd.gate-history/v1", "path": str(store.path), "rows": rows})
    else:
        click.echo(trend_table(rows))
    return 0


@click.command("gate", short_help="Hold models to latency budgets in CI.")
@click.argument("paths", nargs=-1, metavar="[DIR|MODEL ...]")
@click.option("--budgets", "budgets_path", type=click.Path(dir_okay=False), default=None,
              help="budgets.yaml mapping model globs x targets to budgets (see docs/CI.md).")
@click.option("--target", "-t", "target_name", default=None,
              help="Target for --budget-ms (default ort-cpu); with --budgets, gate only this target.")
@click.option("--budget-ms", type=float, default=None, help="Budget in milliseconds for every model given.")
@click.option("--metric", type=click.Choice(list(METRICS)), default="p90", show_default=True,
              help="Metric held to --budget-ms.")
@click.option("--confidence", type=float, default=0.95, show_default=True,
              help="Confidence of each one-sided bound (with --budget-ms).")
@click.option("--max-regression", type=float, default=1.05, show_default=True,
              help="Allowed median ratio vs the baseline (with --budget-ms).")
@click.option("--baseline", "baseline_path", type=click.Path(dir_okay=False), default=None,
              help="Baseline JSON (from --save-baseline): fail a significant regression against it.")
@click.option("--save-baseline", "save_baseline", type=click.Path(dir_okay=False), default=None,
              help="Write (merge) this run's samples and fingerprints into a baseline JSON.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), default=None,
              help="Write a JUnit XML report (one testcase per model x target).")
@click.option("--github", is_flag=True,
              help="Print ::error/::warning lines and append a table to $GITHUB_STEP_SUMMARY.")
@click.option("--predict-only", is_flag=True, help="No timing: check the --profile prediction x (1+eps).")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False), default=None,
              help="Latency profile JSON for --predict-only.")
@click.option("--on-inconclusive", type=click.Choice(["fail", "warn", "exit3"]), default="exit3",
              show_default=True, help="What an INCONCLUSIVE result does: exit 1, exit 0 with a warning, or exit 3.")
@click.option("--max-rounds", type=click.IntRange(min=1), default=20, show_default=True,
              help="At most this many measurement rounds per model x target (re-measure while undecided, "
                   "confirm a FAIL); 1 = one look decides.")
@click.option("--max-time-s", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Start no round that would end past this many seconds per model x target.")
@click.option("--baseline-model", "baseline_model", type=click.Path(dir_okay=False), default=None,
              help="The other build's model (e.g. main's artifact), measured in alternation with each model "
                   "in this job: fail a significant regression against it.")
@click.option("--history", "show_history", is_flag=True,
              help="Print the recorded trend of the models given (all if none) instead of gating.")
@click.option("--history-db", type=click.Path(dir_okay=False), default=None,
              help="Gate history SQLite file (default: gate-history.sqlite under the edgekd cache).")
@click.option("--no-history", is_flag=True, help="Don't record this run in the gate history.")
@click.option("--min-iters", type=click.IntRange(min=10), default=None,
              help="Timed inferences per round (default: at least 1000, or the target's min_iters if larger).")
@click.option("--max-size-kb", type=float, default=None,
              help="Memory budget: each model's artifact size in KB on its target (docs/MEMORY.md).")
@click.option("--max-peak-mb", type=float, default=None,
              help="Memory budget: peak memory of one inference in MB, measured once per model and target.")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Where to keep built artifacts (default: a temporary directory).")
@json_option
@trust_code_option
def gate_cmd(paths, budgets_path, target_name, budget_ms, metric, confidence, max_regression, baseline_path,
             save_baseline, junit_path, github, predict_only, profile_path, on_inconclusive, max_rounds,
             max_time_s, baseline_model, show_history, history_db, no_history, min_iters, max_size_kb, max_peak_mb,
             work_dir, as_json):
    """Check measured latency against budgets, for CI.

    PASS when the upper confidence bound of the metric (p90 by default) is within the budget,
    FAIL when its lower bound is over it (confirmed on an independent later block) or when it
    regressed significantly against --baseline or --baseline-model, whatever the spread; while
    undecided, re-measure (pooling rounds) within --max-rounds and --max-time-s, then
    INCONCLUSIVE. Each result is recorded in the gate history; --history prints the trend.

    Exit codes: 0 all pass, 1 any fail, 4 a target can't run here, 3 inconclusive (see
    --on-inconclusive), 2 bad input.

    Example:

    \b
        edgekd gate --budgets budgets.yaml --junit gate.xml --github
        edgekd gate models/ -t ort-cpu --budget-ms 2.5
    """
    from ..gate import outputs
    from ..gate.check import check_models
    from ..util_io import atomic_write_text

    if show_history:
        return _history(paths, history_db, target_name, as_json)

    def on_start(model, target, budget):
        if not as_json:
            click.echo(f"gating {model} on {target} ({budget.metric} <= {budget.budget_ms:g} ms) ...", err=True)

    results = check_models(paths, budgets_path=budgets_path, target_name=target_name, budget_ms=budget_ms,
                           metric=metric, confidence=confidence, max_regression=max_regression,
                           baseline_path=baseline_path, save_baseline=save_baseline, predict_only=predict_only,
                           profile_path=profile_path, max_rounds=max_rounds, max_time_s=max_time_s,
                           min_iters=min_iters, work_dir=work_dir, baseline_model=baseline_model,
                           history_db=history_db, record_history=not no_history,
                           on_note=lambda n: click.echo(f"edgekd: warning: {n}", err=True), on_start=on_start,
                           max_size_kb=max_size_kb, max_peak_mb=max_peak_mb)
    if junit_path:
        atomic_write_text(junit_path, outputs.junit_xml(results, on_inconclusive))
    if github:
        stream = sys.stderr if as_json else sys.stdout  # stdout stays one JSON object with --json
        for line in outputs.github_lines(results, on_inconclusive):
            click.echo(line, file=stream)
        outputs.append_step_summary(results)
    if as_json:
        emit_json(outputs.to_json(results, on_inconclusive))
    else:
        _print_table(results)
    code = outputs.exit_code(results, on_inconclusive)
    if code == 0 and any(r.status == "INCONCLUSIVE" for r in results):
        click.echo("edgekd: warning: some results were inconclusive (--on-inconclusive warn)", err=True)
    return code
