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


@click.command("compress", short_help="Teacher to a verified student within a latency budget.")
@click.option("--teacher", default=None, help="Teacher: an edgekd checkpoint, TorchScript/.pt2/ONNX file or model spec.")
@click.option("--teacher-weights", default=None, type=click.Path(dir_okay=False),
              help="State dict for a teacher given as a model spec.")
@trust_code_option(pass_as="trust_pickle")
@click.option("--data", "-d", "data", default=None, help="Data spec: digits, shapes[:knobs] (RGB at any --resolution), folder:DIR, npz:FILE, py:module:function.")
@click.option("--resolution", type=int, default=None,
              help="Resize images to N×N [default: the teacher's input size, else the data's].")
@click.option("--target", "-t", "target", default=None, help="Target name (see `edgekd targets`) or YAML path.")
@click.option("--budget-ms", type=float, default=None, help="Latency budget in milliseconds.")
@click.option("--metric", type=click.Choice(PREDICTED_METRICS), cls=_ConfigDefault,
              help="Latency statistic the budget applies to.")
@click.option("--student", cls=_ConfigDefault,
              help="'auto' (select from the target's profile) or a student spec.")
@click.option("--family", "-f", "family", cls=_ConfigDefault,
              help="Student family for --student auto ('auto': one with a profile here, else convnet).")
@click.option("--grid", cls=_ConfigDefault,
              help="Grid to profile when no profile applies: small, default or a file of specs.")
@click.option("--rank", type=click.Choice(["macs", "params"]), default=None,
              help="Capacity order for --student auto: the largest candidate predicted under the budget by "
                   "MACs (then params) or params (then MACs) [default: the family's own: macs for hf- "
                   "families, params for edgekd's].")
@click.option("--loss", cls=_ConfigDefault,
              help="Distillation loss: kd, dkd, nkd, dist, ... (the losses `edgekd distill --loss` takes).")
@click.option("--loss-opt", "loss_opt", multiple=True, metavar="KEY=VALUE",
              help="Override a loss option (repeatable), e.g. --loss-opt T=2; docs/METHODS.md lists them.")
@click.option("--prune", type=click.Choice(["auto", "off"]), cls=_ConfigDefault,
              help="auto: when the distilled student misses the budget on the target, prune it with "
                   "torch-pruning until it fits, then fine-tune it by KD; off: never prune.")
@click.option("--prune-epochs", type=int, default=None,
              help="KD fine-tuning epochs after pruning [default: max(2, epochs // 2)].")
@click.option("--quantize", type=click.Choice(["int8", "fp16", "off"]), cls=_ConfigDefault,
              help="int8: through the target's -int8 twin, kept only when faster.")
@click.option("--qat", type=click.Choice(["auto", "off", "always"]), cls=_ConfigDefault,
              help="With --quantize int8: quantization-aware distillation when INT8 drops more than "
                   "--max-drop (auto), always, or off (docs/QAD.md).")
@click.option("--qat-epochs", type=int, cls=_ConfigDefault, help="Quantization-aware distillation epochs.")
@click.option("--epochs", type=int, cls=_ConfigDefault, help="Distillation epochs.")
@click.option("--min-accuracy", type=float, default=None, help="Require this top-1 accuracy on the target.")
@click.option("--max-drop", type=float, default=None,
              help="Require at most this top-1 drop from the torch student (e.g. 0.01).")
@click.option("--max-size-kb", type=float, default=None,
              help="Size budget (KB) of the shipped artifact: select excludes candidates estimated over it; "
                   "verify measures it (docs/MEMORY.md).")
@click.option("--max-peak-mb", type=float, default=None,
              help="Peak memory budget (MB) of one inference, measured by verify.")
@click.option("--seed", type=int, cls=_ConfigDefault, help="Random seed.")
@click.option("--out", "-o", "out", type=click.Path(file_okay=False), default=None,
              help="Output directory [--demo default: ./edgekd-out/demo].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last finished stage.")
@click.option("--force", is_flag=True, help="Replace a run already in --out.")
@click.option("--dry-run", is_flag=True, help="Print the plan only; write nothing.")
@click.option("--demo", is_flag=True,
              help="Train (or reuse) a digits teacher and compress it for openvino-cpu (ort-cpu without "
                   "OpenVINO) at a quarter of its measured latency.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="A YAML file of settings (the keys --print-config writes); flags given beside it win.")
@click.option("--print-config", is_flag=True,
              help="Print the resolved settings as a complete --config file and exit.")
@json_option
@click.pass_context
def compress_cmd(ctx, teacher, teacher_weights, trust_pickle, data, resolution, target, budget_ms, metric, student,
                 family, grid, rank, loss, loss_opt, prune, prune_epochs, quantize, qat, qat_epochs, epochs, min_accuracy,
                 max_drop, max_size_kb, max_peak_mb, seed, out, resume, force, dry_run, demo, config_file, print_config, as_json):
    """Select a student from the target's latency profile, distill it from the teacher, prune it
    if it still misses the budget, quantize if asked, export it for the target and verify accuracy and latency there.

    Prints the plan first (--dry-run: only the plan). Each stage's result is saved in
    OUT/state.json; after an interruption, --resume continues from the last finished stage.
    OUT gets the model files per target, manifest.json (sha256 of every artifact), report.json,
    report.md and report.html. Exit 1 when the verified model misses a requirement.

    --config FILE reads the settings from YAML (every key optional but teacher, data, target,
    budget_ms; lr, batch_size and loss_options have no flags); flags given beside it win.
    --print-config writes the complete file for what was given.

    Example:

    \b
        edgekd compress --teacher teacher.pt --data digits -t ort-cpu --budget-ms 0.2 --out out/run
        edgekd compress --config run.yaml --epochs 30
    """
    from ..errors import BadInputError

    echo = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    show = not as_json
    if demo:
        from ..demo import run_demo

        given = [n for n, v in (("--teacher", teacher), ("--data", data), ("--target", target),
                                ("--budget-ms", budget_ms), ("--config", config_file)) if v is not None]
        given += ["--print-config"] if print_config else []
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
    flags = dict(teacher=teacher, teacher_weights=teacher_weights, trust_pickle=trust_pickle, data=data,
                 resolution=resolution, target=target, budget_ms=budget_ms, metric=metric, student=student,
                 family=family, grid=grid, rank=rank, loss=loss, loss_options=loss_opt, prune=prune,
                 prune_epochs=prune_epochs, quantize=quantize, qat=qat, qat_epochs=qat_epochs, epochs=epochs,
                 min_accuracy=min_accuracy,
                 max_drop=max_drop, max_size_kb=max_size_kb, max_peak_mb=max_peak_mb, seed=seed, out=out)
    settings = resolve_settings(ctx, flags, config_file)
    out = settings.pop("out", None)
    missing = [f"--{k.replace('_', '-')}" for k in ("teacher", "data", "target", "budget_ms") if settings.get(k) is None]
    missing += ["--out"] if out is None and not (dry_run or print_config) else []
    if missing:
        where = " (or in the --config file)" if config_file else ""
        raise BadInputError(f"compress needs {', '.join(missing)}{where}",
                            hint="see `edgekd compress --help`, or try --demo")
    if print_config:
        from ..pipeline.config import CompressConfig, config_yaml

        click.echo(config_yaml(CompressConfig.make(**settings), out), nl=False)
        return
    from ..pipeline import plan_and_compress

    run = plan_and_compress(settings, out, resume=resume, force=force, dry_run=dry_run, show=show, echo=echo,
                            announce=not (as_json and dry_run))
    if dry_run:
        if as_json:
            emit_json({"plan": run.plan.to_dict(), "config": run.plan.config.model_dump(mode="json")})
        return
    _finish(run.result, as_json)


# the flag of each setting whose command-line parameter has another name
_PARAM_OF = {"trust_pickle": "trust_code", "loss_options": "loss_opt"}


def resolve_settings(ctx: click.Context, flags: dict, config_file) -> dict:
    """The settings of a run: the --config file's, then the flags the user actually gave on top
    (click's parameter source tells a given flag from its default); loss options merge by key."""
    from click.core import ParameterSource

    from ..distill.options import parse_pairs

    flags = dict(flags)
    flags["loss_options"] = parse_pairs(flags["loss_options"]) if flags["loss_options"] else None
    if config_file is None:
        return flags
    from ..pipeline.config import read_config_file

    settings = read_config_file(config_file)
    for name, value in flags.items():
        source = ctx.get_parameter_source(_PARAM_OF.get(name, name))
        if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT) and value is not None:
            if name == "loss_options":
                value = {**dict(settings.get("loss_options") or {}), **value}
            settings[name] = value
    return settings
