"""Pruning as a step of a larger run: compress's prune stage and the `edgekd prune` command.

    prune_checkpoint(src, dest, teacher, bundle, target, budget_ms) -> dict
    prune_if_needed(src, dest, ...) -> dict        compress's prune stage: measure, then prune
    prune_to_dir(model_ref, teacher_spec, data, out, ratio=... | budget_ms=...) -> dict
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Optional

from ..errors import BadInputError
from ..verdict import judge_value
from .budget import prune_by_ratio, prune_to_budget
from .files import load_prunable, save_pruned, write_pruned
from .measure import measure_model


def prune_checkpoint(src: "str | os.PathLike", dest: "str | os.PathLike", teacher, bundle, target,
                     budget_ms: float, **kw) -> dict:
    """Load the edgekd checkpoint ``src``, :func:`prune_to_budget` it (``kw`` as there; never
    strict) and, when anything was pruned, write the result to ``dest`` with :func:`save_pruned`.
    Returns the result as plain data plus ``checkpoint`` (``dest``, or None when nothing was
    pruned because the model already met the budget)."""
    from ..models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(src)
    if (meta.get("extra") or {}).get("pruned"):
        raise BadInputError(f"'{src}' is already pruned", hint="prune its unpruned checkpoint")
    result = prune_to_budget(model, teacher, bundle, target, budget_ms, **{**kw, "strict": False})
    out = result.to_dict()
    out["checkpoint"] = None
    if result.ratio > 0:
        final = result.acc_finetuned if result.acc_finetuned is not None else result.acc_pruned
        extra = {k: v for k, v in (meta.get("extra") or {}).items() if k != "pruned"}
        extra.update(val_acc=final, prune_ratio=float(result.ratio), unpruned_val_acc=result.acc_before)
        save_pruned(dest, result.model.eval(), spec=meta["spec"], num_classes=meta["num_classes"],
                    in_channels=meta["in_channels"], input_shape=meta.get("input_shape"), extra=extra)
        out["checkpoint"] = str(dest)
    return out


def prune_if_needed(src: "str | os.PathLike", dest: "str | os.PathLike", teacher, bundle, target,
                    budget_ms: float, *, metric: str = "p90", work_dir: "str | os.PathLike",
                    known_miss: Optional[str] = None, latency_fn: Optional[Callable] = None,
                    echo: Optional[Callable[[str], None]] = None, **kw) -> dict:
    """compress's prune stage. Unless ``known_miss`` says why the budget is already known to be
    missed, measure ``src`` on ``target`` with the target's protocol (or ``latency_fn``); when it
    meets ``budget_ms`` return ``status: skipped`` with the reason. Otherwise prune it
    (:func:`prune_checkpoint`, ``kw`` as :func:`prune_to_budget`) into ``dest`` and return the
    numbers with a one-line ``reason``. ``work_dir`` and ``dest`` are cleared first, so a killed
    run re-runs cleanly."""
    import shutil

    from ..targets import load_target

    target = load_target(target)
    shape = tuple(bundle.input_shape)
    if known_miss is None:
        from ..models.checkpoint import load_checkpoint

        model = load_checkpoint(src)[0]
        stats = latency_fn(model) if latency_fn else measure_model(model, shape, target, target.measure)
        value = float(getattr(stats, metric))
        if judge_value(value, budget_ms).passed:
            return {"status": "skipped", "budget_needs_pruning": False, "measured_ms": value,
                    "reason": f"the student meets the budget ({value:.4f} ms <= {budget_ms:g} ms)"}
        known_miss = f"the distilled student measures {metric} {value:.4f} ms > {budget_ms:g} ms"
    shutil.rmtree(work_dir, ignore_errors=True)
    Path(dest).unlink(missing_ok=True)
    if echo:
        echo(f"  {known_miss}: pruning")

    def on_step(row):
        if echo:
            how = " (target's protocol)" if row.get("protocol") else ""
            echo(f"  prune ratio {row['ratio']:.2f}: {metric} {row[metric]:.4f} ms{how}, "
                 f"accuracy {row['acc']:.4f}, params {row['params']:,}")

    r = prune_checkpoint(src, dest, teacher, bundle, target, budget_ms, metric=metric,
                         latency_fn=latency_fn, work_dir=work_dir, on_step=on_step, **kw)
    shutil.rmtree(work_dir, ignore_errors=True)
    bef, aft = r["before"], r["after"]
    ft = "-" if r["acc_finetuned"] is None else f"{r['acc_finetuned']:.4f}"
    r.update(status="pruned" if r["checkpoint"] else "skipped", budget_needs_pruning=True,
             why=known_miss, finetune_epochs=kw.get("finetune_epochs", 3),
             reason=(f"ratio {r['ratio']:g}: params {bef['params']:,} -> {aft['params']:,}, MACs "
                     f"{bef['macs']:,} -> {aft['macs']:,}, {metric} {bef[metric]:.4f} -> "
                     f"{aft[metric]:.4f} ms (budget {budget_ms:g} ms); accuracy "
                     f"{r['acc_before']:.4f} before pruning, {r['acc_pruned']:.4f} after, {ft} "
                     f"after fine-tuning; {r['message']}"))
    return r


def prune_to_dir(model_ref: str, teacher_spec: str, data: str, out: "str | os.PathLike", *,
                 ratio: Optional[float] = None, budget_ms: Optional[float] = None,
                 target: Optional[str] = None, metric: str = "p90", importance: str = "l2",
                 global_pruning: bool = False, keep: Iterable[str] = (),
                 round_to: Optional[int] = None, step: float = 0.1, max_ratio: float = 0.9,
                 epochs: int = 3, min_accuracy: Optional[float] = None,
                 resolution: Optional[int] = None,
                 on_step: Optional[Callable[[dict], None]] = None) -> dict:
    """`edgekd prune`: prune ``model_ref`` (an edgekd checkpoint or student spec) by ``ratio``,
    or down to ``budget_ms`` on ``target`` (:func:`prune_to_budget`, ``on_step`` called with
    each ratio's row), fine-tuning it for ``epochs`` by distillation from ``teacher_spec``.
    Writes OUT/pruned.pt and OUT/pruned.onnx and returns the summary; ``summary["met"]`` says
    whether the budget and ``min_accuracy`` were met (the best model reached is written
    either way)."""
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
    from ..models.teacher import check_teacher_matches, load_teacher
    from ..targets import load_target

    tspec = load_target(target) if target else None
    model, spec, bundle, extra = load_prunable(model_ref, data, resolution)
    if extra.get("pruned"):
        raise BadInputError(f"'{model_ref}' is already pruned",
                            hint="prune the unpruned checkpoint again with a larger ratio")
    teacher = load_teacher(teacher_spec, num_classes=bundle.num_classes,
                           in_channels=bundle.in_channels)
    check_teacher_matches(teacher, bundle)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = dict(metric=metric, importance=importance, global_pruning=global_pruning,
                  keep=keep, round_to=round_to, finetune_epochs=epochs,
                  min_accuracy=min_accuracy, work_dir=out_dir)
    if budget_ms is not None:
        result = prune_to_budget(model, teacher, bundle, tspec, budget_ms, step=step,
                                 max_ratio=max_ratio, strict=False, on_step=on_step, **common)
    else:
        result = prune_by_ratio(model, teacher, bundle, tspec, ratio, **common)
    summary = {"model": model_ref, "spec": spec, "teacher": teacher_spec, "data": data,
               "target": tspec.name if tspec else None, "importance": importance,
               "global": global_pruning, **result.to_dict()}
    summary.update(write_pruned(result.model, spec, bundle, out_dir,
                                val_acc=summary["after"].get("acc"), ratio=summary["ratio"]))
    return summary
