"""`edgekd prune`: structured pruning by a ratio, or down to a latency budget on a target."""
from __future__ import annotations

import click

from ..errors import VerdictError
from ..prune.adapter import IMPORTANCES
from ..verdict import METRICS
from .common import emit_json, json_option, trust_code_option


def _row(label, d: dict) -> list[str]:
    def f(k, fmt):
        v = d.get(k)
        return fmt.format(v) if isinstance(v, (int, float)) else "-"
    return [label, f("params", "{:,}"), f("macs", "{:,}"), f("acc", "{:.4f}"),
            f("p50", "{:.3f}"), f("p90", "{:.3f}")]


def _table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"edgekd prune: {summary['model']} (ratio {summary['ratio']})")
    for col in ("", "params", "MACs", "accuracy", "p50 ms", "p90 ms"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row(*_row("before", summary["before"]))
    t.add_row(*_row("pruned", {**summary["after"], "acc": summary["acc_pruned"]}))
    if summary.get("acc_finetuned") is not None:
        t.add_row(*_row("fine-tuned", summary["after"]))
    Console().print(t)
    if summary.get("message"):
        click.echo(summary["message"])
    click.echo(f"wrote {summary['checkpoint']}, {summary['onnx']}")


@click.command("prune", short_help="Remove channels (to a ratio or a budget), then fine-tune.")
@click.argument("model_ref", metavar="MODEL")
@click.option("--teacher", "teacher_spec", required=True,
              help="Teacher for fine-tuning by distillation (checkpoint, file or spec).")
@click.option("--data", "-d", "data", required=True, help="Data spec: digits, shapes[:knobs], folder:DIR, npz:FILE, ...")
@click.option("--ratio", type=float, default=None, help="Fraction of channels to remove.")
@click.option("--budget-ms", type=float, default=None,
              help="Prune until the latency metric is within this budget on --target.")
@click.option("--target", "-t", default=None, help="Target to measure on (needed with --budget-ms).")
@click.option("--metric", type=click.Choice(list(METRICS)), default="p90",
              show_default=True, help="Latency statistic held to the budget.")
@click.option("--importance", type=click.Choice(list(IMPORTANCES)),
              default="l2", show_default=True, help="Channel importance criterion.")
@click.option("--global", "global_pruning", is_flag=True,
              help="Rank channels across layers instead of per layer.")
@click.option("--keep", multiple=True, metavar="PATH", help="Module path to leave unpruned.")
@click.option("--round-to", type=int, default=None,
              help="Channel multiple [default: the target's, else 8].")
@click.option("--step", type=float, default=0.1, show_default=True,
              help="Ratio increment in budget mode.")
@click.option("--max-ratio", type=float, default=0.9, show_default=True,
              help="Largest ratio tried in budget mode.")
@click.option("--epochs", type=int, default=3, show_default=True,
              help="Fine-tuning epochs (distillation from --teacher); 0 to skip.")
@click.option("--min-accuracy", type=float, default=None,
              help="Fail (exit 1) when the budget costs more accuracy than this.")
@click.option("--resolution", type=int, default=None, help="Resize images to N×N.")
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@json_option
@trust_code_option
def prune_cmd(model_ref, teacher_spec, data, ratio, budget_ms, target, metric, importance,
              global_pruning, keep, round_to, step, max_ratio, epochs, min_accuracy,
              resolution, out, as_json):
    """Prune MODEL (an edgekd checkpoint or student spec) by --ratio, or down to --budget-ms
    on --target, then fine-tune it by distillation from --teacher.

    Writes OUT/pruned.pt (edgekd checkpoint; the pruned shapes are stored as data) and
    OUT/pruned.onnx. Exit 1 when the budget or --min-accuracy is not met (the best model
    reached is still written).

    Example:

    \b
        edgekd prune out/dkd/student.pt --teacher out/teacher/model.pt --data digits \\
            --ratio 0.3 --out out/pruned
    """
    from ..prune import prune_to_dir

    def show(row):
        click.echo(f"ratio {row['ratio']:.2f}: {metric} {row[metric]:.3f} ms, "
                   f"acc {row['acc']:.4f}, MACs {row['macs']:,}", err=True)

    summary = prune_to_dir(model_ref, teacher_spec, data, out, ratio=ratio, budget_ms=budget_ms,
                           target=target, metric=metric, importance=importance,
                           global_pruning=global_pruning, keep=keep, round_to=round_to,
                           step=step, max_ratio=max_ratio, epochs=epochs,
                           min_accuracy=min_accuracy, resolution=resolution,
                           on_step=None if as_json else show)
    if as_json:
        emit_json(summary)
    else:
        _table(summary)
    if not summary["met"]:
        raise VerdictError(summary["message"])
