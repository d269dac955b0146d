"""`edgekd prune`: structured pruning by a ratio, or down to a latency budget on a target."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..errors import BadInputError, VerdictError
from .common import emit_json, json_option


def _load_model(ref: str, data: str, resolution: Optional[int]):
    """(model, spec, bundle) for an edgekd checkpoint or a student spec."""
    from ..data import load_data
    from ..models import build_model, input_shape

    if ref.endswith(".pt") or Path(ref).is_file():
        from ..models.checkpoint import load_checkpoint

        model, meta = load_checkpoint(ref)
        shape = meta.get("input_shape")
        res = resolution or (shape[-1] if shape else None)
        bundle = load_data(data, resolution=res)
        if bundle.num_classes != meta["num_classes"] or bundle.in_channels != meta["in_channels"]:
            raise BadInputError(f"'{ref}' is for {meta['num_classes']} classes and "
                                f"{meta['in_channels']} channel(s), the data '{data}' has "
                                f"{bundle.num_classes} and {bundle.in_channels}",
                                hint="prune a model trained on this data")
        return model, str(meta["spec"]), bundle, dict(meta.get("extra") or {})
    res = resolution or input_shape(ref, 1)[-1]
    bundle = load_data(data, resolution=res)
    model = build_model(ref, num_classes=bundle.num_classes, in_channels=bundle.in_channels)
    return model.eval(), ref, bundle, {}


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


@click.command("prune")
@click.argument("model_ref", metavar="MODEL")
@click.option("--teacher", "teacher_spec", required=True,
              help="Teacher for fine-tuning by distillation (checkpoint, file or spec).")
@click.option("--data", required=True, help="Data spec: digits, folder:DIR, npz:FILE, ...")
@click.option("--ratio", type=float, default=None, help="Fraction of channels to remove.")
@click.option("--budget-ms", type=float, default=None,
              help="Prune until the latency metric is within this budget on --target.")
@click.option("--target", default=None, help="Target to measure on (needed with --budget-ms).")
@click.option("--metric", type=click.Choice(["p50", "p90", "p99", "mean"]), default="p90",
              show_default=True, help="Latency statistic held to the budget.")
@click.option("--importance", type=click.Choice(["l2", "l1", "taylor", "lamp", "bn"]),
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
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@json_option
def prune_cmd(model_ref, teacher_spec, data, ratio, budget_ms, target, metric, importance,
              global_pruning, keep, round_to, step, max_ratio, epochs, min_accuracy,
              resolution, out, as_json):
    """Prune MODEL (an edgekd checkpoint or student spec) by --ratio, or down to --budget-ms
    on --target, then fine-tune it by distillation from --teacher.

    Writes OUT/pruned.pt (edgekd checkpoint; the pruned shapes are stored as data) and
    OUT/pruned.onnx. Exit 1 when the budget or --min-accuracy is not met (the best model
    reached is still written).
    """
    if (ratio is None) == (budget_ms is None):
        raise BadInputError("give exactly one of --ratio and --budget-ms",
                            hint="e.g. --ratio 0.3, or --budget-ms 2 --target ort-cpu")
    if budget_ms is not None and not target:
        raise BadInputError("--budget-ms needs --target", hint="e.g. --target ort-cpu")
    if ratio is not None and not 0 < ratio < 1:
        raise BadInputError(f"--ratio {ratio} is outside (0, 1)", hint="e.g. --ratio 0.3")
    if epochs < 0:
        raise BadInputError(f"--epochs {epochs} must be 0 or more")
    if budget_ms is not None and budget_ms <= 0:
        raise BadInputError(f"--budget-ms {budget_ms} must be positive")
    from ..targets import load_target

    tspec = load_target(target) if target else None
    model, spec, bundle, extra = _load_model(model_ref, data, resolution)
    if extra.get("pruned"):
        raise BadInputError(f"'{model_ref}' is already pruned",
                            hint="prune the unpruned checkpoint again with a larger ratio")
    from ..models.teacher import check_teacher_matches, load_teacher

    teacher = load_teacher(teacher_spec, num_classes=bundle.num_classes,
                           in_channels=bundle.in_channels)
    check_teacher_matches(teacher, bundle)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = _prune(model, teacher, bundle, tspec, ratio=ratio, budget_ms=budget_ms,
                    metric=metric, importance=importance, global_pruning=global_pruning,
                    keep=keep, round_to=round_to, step=step, max_ratio=max_ratio,
                    epochs=epochs, min_accuracy=min_accuracy, work_dir=out_dir,
                    progress=not as_json)
    summary = {"model": model_ref, "spec": spec, "teacher": teacher_spec, "data": data,
               "target": tspec.name if tspec else None, "importance": importance,
               "global": global_pruning, **result.to_dict()}
    summary.update(_write(result.model, spec, bundle, out_dir, summary))
    if as_json:
        emit_json(summary)
    else:
        _table(summary)
    if not result.met:
        raise VerdictError(result.message)


def _prune(model, teacher, bundle, tspec, *, ratio, budget_ms, metric, importance,
           global_pruning, keep, round_to, step, max_ratio, epochs, min_accuracy, work_dir,
           progress):
    import torch

    from .. import prune as P

    shape = tuple(bundle.input_shape)
    if budget_ms is not None:
        def show(row):
            if progress:
                click.echo(f"ratio {row['ratio']:.2f}: {metric} {row[metric]:.3f} ms, "
                           f"acc {row['acc']:.4f}, MACs {row['macs']:,}", err=True)
        return P.prune_to_budget(model, teacher, bundle, tspec, budget_ms, metric=metric,
                                 step=step, max_ratio=max_ratio, min_accuracy=min_accuracy,
                                 finetune_epochs=epochs, importance=importance,
                                 global_pruning=global_pruning, round_to=round_to, keep=keep,
                                 work_dir=work_dir, strict=False, on_step=show)
    lat = (lambda m: P._lat_dict(P.measure_model(m, shape, tspec))) if tspec else (lambda m: {})
    acc_before = P.evaluate(model, bundle.val)
    before = {**P.cost(model, shape), **lat(model), "acc": acc_before}
    taylor = None
    if importance == "taylor":
        from ..distill.cache import take

        taylor = take(bundle.train, torch.arange(min(64, len(bundle.train))))
    r2 = round_to if round_to is not None else (tspec.round_to if tspec else 8)
    pruned = P.prune_model(model, torch.zeros(1, *shape), ratio=ratio, importance=importance,
                           global_pruning=global_pruning, round_to=r2, keep=keep,
                           taylor_batch=taylor)
    P.recalibrate_bn(pruned, bundle.train)
    acc_pruned = P.evaluate(pruned, bundle.val)
    acc_ft = None
    if epochs > 0:
        pruned = P.finetune(pruned, teacher, bundle, epochs=epochs,
                            out_dir=Path(work_dir) / "finetune")
        acc_ft = P.evaluate(pruned, bundle.val)
    final = acc_ft if acc_ft is not None else acc_pruned
    ok = min_accuracy is None or final >= min_accuracy
    msg = "" if ok else f"accuracy {final:.4f} is below --min-accuracy {min_accuracy}"
    return P.PruneResult(model=pruned, ratio=ratio, met=ok, budget_ms=None, metric=metric,
                         before=before, after={**P.cost(pruned, shape), **lat(pruned),
                                               "acc": final},
                         acc_before=acc_before, acc_pruned=acc_pruned, acc_finetuned=acc_ft,
                         message=msg)


def _write(model, spec, bundle, out_dir: Path, summary: dict) -> dict:
    import torch

    from ..export import export_onnx
    from ..prune import save_pruned

    model = model.eval()
    ckpt = save_pruned(out_dir / "pruned.pt", model, spec=spec, num_classes=bundle.num_classes,
                       in_channels=bundle.in_channels, input_shape=tuple(bundle.input_shape),
                       extra={"val_acc": summary["after"].get("acc"),
                              "prune_ratio": float(summary["ratio"]),
                              "data": bundle.fingerprint})
    onnx = export_onnx(model, torch.zeros(1, *bundle.input_shape), out_dir / "pruned.onnx",
                       opset=17, dynamic_batch=True, metadata={"edgekd.spec": spec,
                                                               "edgekd.pruned": "true"})
    return {"checkpoint": str(ckpt), "onnx": str(onnx)}
