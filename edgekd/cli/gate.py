"""`edgekd gate`: hold models to latency budgets in CI (LATENCY.md, "The CI gate")."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import emit_json, json_option

MODEL_GLOBS = ("*.onnx", "*.xml")


def _expand(paths: tuple[str, ...]) -> list[tuple[str, bool]]:
    """(model path, named explicitly?) for each argument; a folder gives its .onnx/.xml files."""
    from ..errors import BadInputError

    out: list[tuple[str, bool]] = []
    for a in paths:
        p = Path(a)
        if p.is_dir():
            files = sorted({f for g in MODEL_GLOBS for f in p.rglob(g) if f.is_file()})
            if not files:
                raise BadInputError(f"folder {p} holds no model files (*.onnx, *.xml)", hint="check the path")
            out += [(str(f), False) for f in files]
        elif p.is_file():
            out.append((str(p), True))
        else:
            raise BadInputError(f"model {a} does not exist", hint="give model files or folders holding them")
    return out


def _runs_on(model: str, target_name: str) -> bool:
    """Whether a file found in a folder belongs on this target (an OpenVINO .xml only on openvino)."""
    from ..targets import Runtime, load_target

    if Path(model).suffix.lower() != ".xml":
        return True
    return load_target(target_name).runtime == Runtime.openvino


def _plan(paths, budgets_path, target_name, budget_ms, metric, confidence, max_regression):
    """[(model, target, Budget)] from budgets.yaml or from --target/--budget-ms."""
    from ..config import Budget, load_budgets
    from ..errors import BadInputError

    models = _expand(paths) if paths else None
    if budgets_path:
        if budget_ms is not None:
            raise BadInputError("give either --budgets or --budget-ms, not both")
        cfg = load_budgets(budgets_path)
        if models is None:
            plan = cfg.pairs(None, target=target_name)
            if not plan:
                raise BadInputError(f"{budgets_path}: no model file matches its globs"
                                    + (f" for target {target_name}" if target_name else ""),
                                    hint="globs are relative to the budgets file's folder")
            return plan, []
        plan, notes = [], []
        for m, explicit in models:
            pairs = [x for x in cfg.pairs([m], target=target_name) if explicit or _runs_on(m, x[1])]
            if not pairs:
                if explicit:
                    raise BadInputError(f"no budget for {m} in {budgets_path}",
                                        hint="add an entry whose models glob matches it")
                notes.append(f"no budget for {m} in {budgets_path}: skipped")
            plan += pairs
        return plan, notes
    if budget_ms is None:
        raise BadInputError("no budget given", hint="use --budgets budgets.yaml, or --target T --budget-ms B")
    if models is None:
        raise BadInputError("no models given", hint="name model files or folders, e.g. `edgekd gate models/ --target ort-cpu --budget-ms 2`")
    try:
        budget = Budget(budget_ms=budget_ms, metric=metric, confidence=confidence, max_regression=max_regression)
    except ValueError as exc:
        raise BadInputError(f"bad budget options: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from exc
    target = target_name or "ort-cpu"
    return [(m, target, budget) for m, explicit in models if explicit or _runs_on(m, target)], []


def _print_table(results) -> None:
    from ..gate.outputs import measured_on

    for r in results:
        d = r.decision
        nums = d.numbers() if d else (r.error or "")
        click.echo(f"{r.status:<12} {r.model} on {r.target}: {nums}")
        if d and r.status != "ERROR":
            click.echo(f"{'':<12} {d.reason}; rounds {r.rounds}")
            if (r.environment or {}).get("remote"):
                click.echo(f"{'':<12} measured on {measured_on(r)}")
        for w in r.warnings:
            click.echo(f"{'':<12} warning: {w}")


@click.command("gate")
@click.argument("paths", nargs=-1, metavar="[DIR|MODEL ...]")
@click.option("--budgets", "budgets_path", type=click.Path(dir_okay=False), default=None,
              help="budgets.yaml mapping model globs x targets to budgets (see README).")
@click.option("--target", "-t", "target_name", default=None,
              help="Target for --budget-ms (default ort-cpu); with --budgets, gate only this target.")
@click.option("--budget-ms", type=float, default=None, help="Budget in milliseconds for every model given.")
@click.option("--metric", type=click.Choice(["p50", "p90", "p99", "mean"]), default="p90", show_default=True,
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
@click.option("--max-rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Measurement rounds per model x target (re-measure while inconclusive, confirm a FAIL).")
@click.option("--min-iters", type=click.IntRange(min=10), default=None,
              help="Timed inferences per round (default: the target's protocol, 200).")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Where to keep built artifacts (default: a temporary directory).")
@json_option
def gate_cmd(paths, budgets_path, target_name, budget_ms, metric, confidence, max_regression, baseline_path,
             save_baseline, junit_path, github, predict_only, profile_path, on_inconclusive, max_rounds,
             min_iters, work_dir, as_json):
    """Check measured latency against budgets, for CI.

    PASS when the upper confidence bound of the metric (p90 by default) is within the budget,
    FAIL when its lower bound is over it (confirmed on a second independent round) or when it
    regressed significantly against --baseline; otherwise re-measure up to --max-rounds times,
    pooling samples, then INCONCLUSIVE.

    Exit codes: 0 all pass, 1 any fail, 4 a target can't run here, 3 inconclusive (see
    --on-inconclusive), 2 bad input.
    """
    from ..errors import BadInputError, RuntimeMissingError
    from ..gate import ERROR, BaselineStore, GateResult, bench_measure, exit_code, gate_one
    from ..gate import outputs
    from ..util_io import atomic_write_text

    if predict_only and not profile_path:
        raise BadInputError("--predict-only needs --profile FILE", hint="give the target's latency profile JSON")
    if predict_only and (baseline_path or save_baseline):
        raise BadInputError("--predict-only takes no --baseline/--save-baseline: nothing is measured")
    plan, notes = _plan(paths, budgets_path, target_name, budget_ms, metric, confidence, max_regression)
    if not plan:
        raise BadInputError("nothing to gate: no model matches a budget on these targets")
    from ..targets import load_target

    for t in dict.fromkeys(t for _, t, _ in plan):
        load_target(t)  # unknown target names are bad input (exit 2) before anything is measured
    baselines = BaselineStore.load(baseline_path) if baseline_path else None
    profile = None
    if predict_only:
        from ..gate.predict_only import read_profile

        profile = read_profile(profile_path)
    measure = bench_measure(min_iters=min_iters, work_dir=work_dir)
    for n in notes:
        click.echo(f"edgekd: warning: {n}", err=True)

    results = []
    for model, target, budget in plan:
        if not as_json:
            click.echo(f"gating {model} on {target} ({budget.metric} <= {budget.budget_ms:g} ms) ...", err=True)
        if predict_only:
            from ..gate.predict_only import gate_predicted

            results.append(gate_predicted(model, target, budget, profile))
            continue
        try:
            results.append(gate_one(model, target, budget, measure_fn=measure, baselines=baselines,
                                    max_rounds=max_rounds))
        except RuntimeMissingError as exc:
            results.append(GateResult(model=model, target=target, budget=budget, status=ERROR,
                                      error=exc.one_line()))

    if save_baseline:
        store = BaselineStore.load(save_baseline) if Path(save_baseline).is_file() else BaselineStore()
        for r in results:
            store.update(r)
        store.save(save_baseline)
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
    code = exit_code(results, on_inconclusive)
    if code == 0 and any(r.status == "INCONCLUSIVE" for r in results):
        click.echo("edgekd: warning: some results were inconclusive (--on-inconclusive warn)", err=True)
    return code
