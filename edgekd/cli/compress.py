"""`edgekd compress`: teacher -> student that meets a latency budget on a target, verified."""
from __future__ import annotations

import click

from ..verdict import PREDICTED_METRICS
from .common import emit_json, json_option, trust_code_option


class _ConfigDefault(click.Option):
    """An option left None unless given, so that CompressConfig's default applies (the defaults
    live in edgekd/pipeline/config.py only); --help shows that default, looked up when printed."""

    def __init__(self, *args, **kw):
        super().__init__(*args, default=None, **kw)

    def get_help_record(self, ctx):
        rec = super().get_help_record(ctx)
        if rec is None:
            return rec
        from ..pipeline.config import CompressConfig

        return rec[0], f"{rec[1]}  [default: {CompressConfig.model_fields[self.name].default}]"


def _finish(result, as_json: bool) -> None:
    """Print where the run went (or its JSON) and turn a missed requirement into its exit code."""
    from ..errors import InconclusiveError, VerdictError

    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(f"output: {result.out} (artifact {result.artifact}; reports: "
                   + ", ".join(str(result.out / p) for p in result.report_paths.values()) + ")")
    failed = "; ".join(result.verify.failures())
    if result.verdict == "fail":
        raise VerdictError(f"the compressed model does not meet its requirements: {failed}",
                           hint=f"see {result.out / 'report.md'}")
    if result.verdict == "inconclusive":
        raise InconclusiveError(f"the latency measurement could not decide: {failed}",
                                hint="re-run verify on a quieter machine")


@click.command("compress")
@click.option("--teacher", default=None, help="Teacher: an edgekd checkpoint, TorchScript/.pt2/ONNX file or model spec.")
@click.option("--teacher-weights", default=None, type=click.Path(dir_okay=False),
              help="State dict for a teacher given as a model spec.")
@trust_code_option(pass_as="trust_pickle")
@click.option("--data", default=None, help="Data spec: digits, shapes[:knobs] (RGB at any --resolution), folder:DIR, npz:FILE, py:module:function.")
@click.option("--resolution", type=int, default=None,
              help="Resize images to N×N [default: the teacher's input size, else the data's].")
@click.option("--target", "-t", "target", default=None, help="Target name (see `edgekd targets`) or YAML path.")
@click.option("--budget-ms", type=float, default=None, help="Latency budget in milliseconds.")
@click.option("--metric", type=click.Choice(PREDICTED_METRICS), cls=_ConfigDefault,
              help="Latency statistic the budget applies to.")
@click.option("--student", cls=_ConfigDefault,
              help="'auto' (select from the target's profile) or a student spec.")
@click.option("--family", cls=_ConfigDefault,
              help="Student family for --student auto ('auto': one with a profile here, else convnet).")
@click.option("--grid", cls=_ConfigDefault,
              help="Grid to profile when no profile applies: small, default or a file of specs.")
@click.option("--loss", cls=_ConfigDefault,
              help="Distillation loss: kd, dkd, nkd, dist, ... (the losses `edgekd distill --loss` takes).")
@click.option("--prune", type=click.Choice(["auto", "off"]), cls=_ConfigDefault,
              help="auto: when the distilled student misses the budget on the target, prune it with "
                   "torch-pruning until it fits, then fine-tune it by KD; off: never prune.")
@click.option("--prune-epochs", type=int, default=None,
              help="KD fine-tuning epochs after pruning [default: max(2, epochs // 2)].")
@click.option("--quantize", type=click.Choice(["int8", "fp16", "off"]), cls=_ConfigDefault,
              help="int8: through the target's -int8 twin, kept only when faster.")
@click.option("--epochs", type=int, cls=_ConfigDefault, help="Distillation epochs.")
@click.option("--min-accuracy", type=float, default=None, help="Require this top-1 accuracy on the target.")
@click.option("--max-drop", type=float, default=None,
              help="Require at most this top-1 drop from the torch student (e.g. 0.01).")
@click.option("--seed", type=int, cls=_ConfigDefault, help="Random seed.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output directory [--demo default: ./edgekd-out/demo].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last finished stage.")
@click.option("--force", is_flag=True, help="Replace a run already in --out.")
@click.option("--dry-run", is_flag=True, help="Print the plan only; write nothing.")
@click.option("--demo", is_flag=True,
              help="Train (or reuse) a digits teacher and compress it for openvino-cpu (ort-cpu without "
                   "OpenVINO) at a quarter of its measured latency.")
@json_option
def compress_cmd(teacher, teacher_weights, trust_pickle, data, resolution, target, budget_ms, metric, student,
                 family, grid, loss, prune, prune_epochs, quantize, epochs, min_accuracy, max_drop, seed, out, resume, force,
                 dry_run, demo, as_json):
    """Select a student from the target's latency profile, distill it from the teacher, prune it
    if it still misses the budget, quantize if asked, export it for the target and verify accuracy and latency there.

    Prints the plan first (--dry-run: only the plan). Each stage's result is saved in
    OUT/state.json; after an interruption, --resume continues from the last finished stage.
    OUT gets the model files per target, manifest.json (sha256 of every artifact), report.json,
    report.md and report.html. Exit 1 when the verified model misses a requirement.
    """
    from ..errors import BadInputError

    echo = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    show = not as_json
    if demo:
        from ..demo import run_demo

        given = [n for n, v in (("--teacher", teacher), ("--data", data), ("--target", target),
                                ("--budget-ms", budget_ms)) if v is not None]
        if given:
            raise BadInputError(f"--demo chooses its own teacher, data, target and budget ({', '.join(given)} given)",
                                hint="drop them, or run without --demo")
        out_dir = out or "edgekd-out/demo"
        # The demo's own default directory is replaced on every run unless --resume is given.
        result, info = run_demo(out_dir, resume=resume, force=force or (out is None and not resume),
                                dry_run=dry_run, show=show, echo=echo)
        if dry_run:
            if as_json:
                emit_json({"plan": result.to_dict() if result is not None else None, "demo": info})
            return
        _finish(result, as_json)
        return
    missing = [n for n, v in (("--teacher", teacher), ("--data", data), ("--target", target),
                              ("--budget-ms", budget_ms), ("--out", out)) if v is None]
    if missing and not (dry_run and missing == ["--out"]):
        raise BadInputError(f"compress needs {', '.join(missing)}", hint="see `edgekd compress --help`, or try --demo")
    from ..pipeline import plan_and_compress

    run = plan_and_compress(dict(teacher=teacher, teacher_weights=teacher_weights, trust_pickle=trust_pickle,
                                 data=data, resolution=resolution, target=target, budget_ms=budget_ms,
                                 metric=metric, student=student, family=family, grid=grid, loss=loss,
                                 prune=prune, prune_epochs=prune_epochs, quantize=quantize, epochs=epochs,
                                 min_accuracy=min_accuracy, max_drop=max_drop, seed=seed),
                            out, resume=resume, force=force, dry_run=dry_run, show=show, echo=echo,
                            announce=not (as_json and dry_run))
    if dry_run:
        if as_json:
            emit_json({"plan": run.plan.to_dict()})
        return
    _finish(run.result, as_json)
