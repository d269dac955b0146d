"""Structured (channel) pruning through torch-pruning, guided by measured latency on a target.

    prune_model(model, example_input, ratio=0.3)          -> the same module, fewer channels
    save_pruned(path, model, spec=..., ...) / load_pruned(path)
    prune_to_budget(model, teacher, bundle, target, budget_ms) -> PruneResult
    prune_checkpoint(src, dest, teacher, bundle, target, budget_ms) -> dict
    prune_if_needed(src, dest, ...) -> dict        compress's prune stage: measure, then prune

A pruned model no longer matches its spec, so its structure is stored as data: the per-module
sizes (``pruned_shapes``) go into the checkpoint's ``extra["pruned"]``, and loading builds the
spec, resizes those modules (``apply_shapes``) and then loads the weights. No module is pickled.
"""
from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from .errors import BadInputError, VerdictError
from .models.pruned import apply_shapes, pruned_shapes  # noqa: F401  (public here too)

IMPORTANCES = ("l2", "l1", "taylor", "lamp", "bn")
METRICS = ("p50", "p90", "p99", "mean")


def _importance(name: str):
    import torch_pruning as tp

    imp = tp.importance
    if name == "l2":
        return imp.GroupMagnitudeImportance(p=2)
    if name == "l1":
        return imp.GroupMagnitudeImportance(p=1)
    if name == "taylor":
        return imp.GroupTaylorImportance()
    if name == "lamp":
        return imp.LAMPImportance(p=2)
    if name == "bn":
        return imp.BNScaleImportance()
    raise BadInputError(f"unknown importance '{name}'", hint=f"use one of {', '.join(IMPORTANCES)}")


def _check_ratio(ratio: float) -> float:
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        r = float("nan")
    if not 0.0 < r < 1.0:
        raise BadInputError(f"pruning ratio {ratio!r} is outside (0, 1)",
                            hint="give the fraction of channels to remove, e.g. 0.3")
    return r


def _resolve_keep(model, keep: Iterable[str]) -> list:
    named = dict(model.named_modules())
    out = []
    for path in keep:
        if path not in named:
            some = ", ".join(n for n in list(named)[1:6])
            raise BadInputError(f"--keep '{path}' is not a module of the model",
                                hint=f"use a module path such as {some}")
        out.append(named[path])
    return out


def _conv_widths(model) -> dict[str, int]:
    from torch import nn

    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def prune_model(model, example_input, *, ratio: float, importance: str = "l2",
                global_pruning: bool = False, round_to: Optional[int] = 8,
                keep: Iterable[str] = (), taylor_batch=None):
    """Remove ``ratio`` of the prunable channels of ``model`` (in place) and return it.

    ``model.classifier`` and the modules named in ``keep`` are left alone. ``importance`` is
    l2/l1 (group magnitude), taylor (needs ``taylor_batch=(x, y)`` for one backward pass),
    lamp or bn (BatchNorm scale). Every conv keeps at least ``min(round_to, its width)``
    channels, else BadInputError naming the layer (the model is then partly pruned: prune a copy
    when that matters)."""
    import torch
    import torch_pruning as tp

    ratio = _check_ratio(ratio)
    if importance not in IMPORTANCES:
        raise BadInputError(f"unknown importance '{importance}'",
                            hint=f"use one of {', '.join(IMPORTANCES)}")
    if round_to is not None and int(round_to) < 1:
        raise BadInputError(f"round_to {round_to} must be at least 1", hint="use 1 for no rounding")
    if importance == "taylor" and taylor_batch is None:
        raise BadInputError("taylor importance needs a batch of labelled data (taylor_batch)",
                            hint="pass taylor_batch=(x, y), or use --importance l2")
    ignored = _resolve_keep(model, keep)
    if isinstance(getattr(model, "classifier", None), torch.nn.Module):
        ignored.append(model.classifier)
    before = _conv_widths(model)
    was_training = model.training
    model.eval()
    pruner = tp.pruner.MetaPruner(model, example_input, importance=_importance(importance),
                                  global_pruning=bool(global_pruning), pruning_ratio=ratio,
                                  ignored_layers=ignored, round_to=round_to, iterative_steps=1)
    if importance == "taylor":
        x, y = taylor_batch
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    floor = int(round_to or 1)
    for name, width in _conv_widths(model).items():
        need = min(floor, before.get(name, width))
        if width < need:
            raise BadInputError(f"pruning ratio {ratio} leaves layer '{name}' with {width} "
                                f"channel(s), fewer than {need}",
                                hint="use a smaller ratio, --keep that layer, or no --global")
    return model


# ----------------------------------------------------------------- checkpoints

def save_pruned(path: "str | os.PathLike", model, *, spec: str, num_classes: int,
                in_channels: int, input_shape, extra: Optional[dict] = None) -> Path:
    """An edgekd checkpoint of a pruned model: spec + state_dict + ``extra["pruned"]``."""
    from .models.checkpoint import save_checkpoint

    extra = dict(extra or {})
    extra["pruned"] = pruned_shapes(model)
    return save_checkpoint(path, model, spec=spec, num_classes=num_classes,
                           in_channels=in_channels, input_shape=input_shape, extra=extra)


def load_pruned(path: "str | os.PathLike", *, device: Any = "cpu"):
    """``(model in eval mode, meta)``: load_checkpoint restores the pruned shapes itself."""
    from .models.checkpoint import load_checkpoint

    return load_checkpoint(path, device=device)


# ----------------------------------------------------------------- measurement helpers

def evaluate(model, dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (samples labelled -1 are skipped)."""
    import torch

    from .distill.cache import take

    model.eval()
    correct = total = 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(dataset)))
            x, y = take(dataset, idx)
            keep = y >= 0
            correct += int((model(x).argmax(1)[keep] == y[keep]).sum())
            total += int(keep.sum())
    return correct / total if total else float("nan")


def recalibrate_bn(model, dataset, samples: int = 512, batch_size: int = 128):
    """Re-estimate every BatchNorm's running statistics on ``samples`` samples of ``dataset``
    (a fixed random subset; labels unused, no gradient) and return ``model`` in eval mode. Pruning changes what each BN
    sees, so the statistics learnt before are stale; without this, a pruned deep net can fall to
    chance before any fine-tuning (adaptive BN, as in EagleEye, Li et al. 2020)."""
    import torch
    from torch import nn

    from .distill.cache import take

    n = min(int(samples), len(dataset))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    if n < 2 or not bns:
        return model.eval()
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                x, _ = take(dataset, order[start:start + batch_size])
                if len(x) > 1:
                    model(x)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.eval()
    return model


def quick_settings():
    """A short measurement protocol for the pruning loop (the final check uses the target's)."""
    from .targets import MeasureSettings

    return MeasureSettings(warmup_s=0.2, warmup_iters=10, min_iters=100, min_time_s=0.3)


def measure_model(model, sample_shape, target, settings=None):
    """LatencyStats of ``model`` on ``target``: export to ONNX in a temp dir, then time it as
    ``edgekd bench`` does (on the device itself for a target with ``remote:``)."""
    from .export import export_onnx
    from .latency.measure import bench
    from .targets import load_target

    import torch

    target = load_target(target)
    with tempfile.TemporaryDirectory(prefix="edgekd-prune-") as tmp:
        sample = torch.zeros(1, *tuple(sample_shape))
        path = export_onnx(copy.deepcopy(model).eval(), sample, Path(tmp) / "model.onnx",
                           opset=17)
        return bench(path, target, work_dir=Path(tmp), settings=settings or quick_settings(),
                     sample_shape=tuple(sample_shape)).stats


def cost(model, sample_shape) -> dict:
    from .models import count_macs_params

    macs, params = count_macs_params(model, tuple(sample_shape))
    return {"macs": int(macs), "params": int(params)}


# ----------------------------------------------------------------- budget mode

@dataclass
class PruneResult:
    model: Any
    ratio: float
    met: bool
    budget_ms: Optional[float]
    metric: str
    before: dict
    after: dict
    acc_before: float
    acc_pruned: float
    acc_finetuned: Optional[float]
    steps: list = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "met": self.met, "budget_ms": self.budget_ms,
                "metric": self.metric, "before": self.before, "after": self.after,
                "acc_before": self.acc_before, "acc_pruned": self.acc_pruned,
                "acc_finetuned": self.acc_finetuned, "steps": self.steps,
                "message": self.message}


def _lat_dict(stats) -> dict:
    return {"p50": float(stats.p50), "p90": float(stats.p90), "p99": float(stats.p99),
            "mean": float(stats.mean)}


def finetune(model, teacher, bundle, *, epochs: int, out_dir: "str | os.PathLike",
             loss: str = "kd", train_kw: Optional[dict] = None, progress: bool = False):
    """Distil ``teacher`` into the pruned ``model`` for a few epochs (best epoch kept)."""
    from .distill.criterion import build_criterion
    from .distill.runstate import restore_weights
    from .distill.trainer import TrainConfig, fit

    kw = {"epochs": epochs, "lr": 0.01, **(train_kw or {})}
    config = TrainConfig.make(**kw)
    criterion = build_criterion(loss, {}, num_classes=bundle.num_classes, student=model,
                                teacher=teacher, epochs=config.epochs)
    try:
        result = fit(model, criterion, bundle, config, out_dir, teacher=teacher,
                     progress=progress, log_json=False)
        best = result.paths["best"]
        restore_weights(best if best.exists() else result.paths["last"], model, criterion)
        return criterion.deployable(model).eval()
    finally:
        if hasattr(criterion, "close"):
            criterion.close()


def prune_to_budget(model, teacher, bundle, target, budget_ms: float, *, metric: str = "p90",
                    step: float = 0.1, max_ratio: float = 0.9,
                    min_accuracy: Optional[float] = None, finetune_epochs: int = 3,
                    importance: str = "l2", global_pruning: bool = False,
                    round_to: Optional[int] = None, keep: Iterable[str] = (),
                    latency_fn: Optional[Callable] = None, work_dir=None,
                    train_kw: Optional[dict] = None, strict: bool = True,
                    recalibrate: int = 512, margin: float = 0.0,
                    on_step: Optional[Callable[[dict], None]] = None) -> PruneResult:
    """Prune ``model`` at ratios step, 2·step, ... (each from the original weights) until its
    ``metric`` latency on ``target`` is within ``budget_ms``, then fine-tune it by distillation
    from ``teacher``. ``latency_fn(model) -> LatencyStats`` replaces the ONNX measurement
    (tests, or a predictor). If the budget is not reached by ``max_ratio``, or the fine-tuned
    accuracy is below ``min_accuracy``, the result has ``met=False`` and — with ``strict`` —
    VerdictError is raised carrying it as ``.result``; the model kept is the fastest reached.
    Each pruned candidate's BatchNorm statistics are re-estimated on ``recalibrate`` training
    samples (:func:`recalibrate_bn`; 0 to skip) before its accuracy is taken. Without
    ``latency_fn``, each ratio is timed with a short protocol and one that meets the budget is
    re-timed with the target's protocol (``protocol: target`` in its step) before it counts.
    ``margin`` (a fraction) makes the loop aim at ``budget_ms * (1 - margin)``, so that the
    next measurement's noise does not undo a pass; met still means within ``budget_ms``."""
    import torch

    from .targets import load_target

    if metric not in METRICS:
        raise BadInputError(f"unknown latency metric '{metric}'", hint=f"use one of {METRICS}")
    if not budget_ms or budget_ms <= 0:
        raise BadInputError(f"budget {budget_ms} ms must be positive", hint="e.g. --budget-ms 2")
    _check_ratio(step)
    _check_ratio(max_ratio)
    if not 0.0 <= margin < 1.0:
        raise BadInputError(f"latency margin {margin!r} is outside [0, 1)", hint="e.g. 0.05")
    aim = budget_ms * (1.0 - margin)
    target = load_target(target)
    round_to = target.round_to if round_to is None else round_to
    shape = tuple(bundle.input_shape)
    confirm = None
    if latency_fn is None:
        def latency_fn(m):
            return measure_model(m, shape, target)

        def confirm(m):
            return measure_model(m, shape, target, target.measure)

    def accept(m, lat):
        """(stats, meets the budget, re-measured): a pass on the short protocol is checked
        with the target's own protocol before it counts (noise on a busy machine)."""
        if float(getattr(lat, metric)) <= aim and confirm is not None:
            lat = confirm(m)
            return lat, float(getattr(lat, metric)) <= aim, True
        return lat, float(getattr(lat, metric)) <= aim, False
    model = model.eval()
    example = torch.zeros(1, *shape)
    taylor = None
    if importance == "taylor":
        from .distill.cache import take

        taylor = take(bundle.train, torch.arange(min(64, len(bundle.train))))
    acc_before = evaluate(model, bundle.val)
    lat0, met0, again = accept(model, latency_fn(model))
    before = {**cost(model, shape), **_lat_dict(lat0), "acc": acc_before}
    steps: list[dict] = [{"ratio": 0.0, metric: float(getattr(lat0, metric)),
                          "acc": acc_before, **cost(model, shape),
                          **({"protocol": "target"} if again else {})}]
    if on_step:
        on_step(steps[-1])
    best, best_ratio, best_lat, met_latency = model, 0.0, lat0, met0
    n, acc_stop = 1, False
    while not met_latency:
        ratio = round(step * n, 6)
        if ratio > max_ratio + 1e-9:
            break
        n += 1
        cand = prune_model(copy.deepcopy(model), example, ratio=ratio, importance=importance,
                           global_pruning=global_pruning, round_to=round_to, keep=keep,
                           taylor_batch=taylor)
        if recalibrate:
            recalibrate_bn(cand, bundle.train, recalibrate)
        lat, ok, again = accept(cand, latency_fn(cand))
        value = float(getattr(lat, metric))
        row = {"ratio": ratio, metric: value, "acc": evaluate(cand, bundle.val),
               **cost(cand, shape), **({"protocol": "target"} if again else {})}
        steps.append(row)
        if on_step:
            on_step(row)
        if finetune_epochs <= 0 and min_accuracy is not None and row["acc"] < min_accuracy:
            acc_stop = True  # no fine-tuning to recover: more pruning only loses more
            break
        if value < float(getattr(best_lat, metric)) or best is model:
            best, best_ratio, best_lat = cand, ratio, lat
        if ok:
            best, best_ratio, best_lat, met_latency = cand, ratio, lat, True
    # short of the margin's aim, the fastest model reached may still be within the budget
    met_latency = met_latency or float(getattr(best_lat, metric)) <= budget_ms
    acc_pruned = evaluate(best, bundle.val)
    acc_ft = None
    if finetune_epochs > 0 and best is not model:
        own_tmp = None
        if work_dir is None:
            own_tmp = tempfile.TemporaryDirectory(prefix="edgekd-finetune-")
            work_dir = own_tmp.name
        try:
            best = finetune(best, teacher, bundle, epochs=finetune_epochs,
                            out_dir=Path(work_dir) / "finetune", train_kw=train_kw)
        finally:
            if own_tmp is not None:
                own_tmp.cleanup()
        acc_ft = evaluate(best, bundle.val)
    final_acc = acc_ft if acc_ft is not None else acc_pruned
    after = {**cost(best, shape), **_lat_dict(best_lat), "acc": final_acc}
    value = float(getattr(best_lat, metric))
    if acc_stop:
        message = (f"ratio {steps[-1]['ratio']} drops accuracy to {steps[-1]['acc']:.4f}, below "
                   f"--min-accuracy {min_accuracy}, before reaching the {budget_ms} ms budget; "
                   f"kept ratio {best_ratio} ({metric} {value:.3f} ms)")
    elif not met_latency:
        message = (f"{metric} {value:.3f} ms at ratio {best_ratio} (max {max_ratio}) still "
                   f"misses the {budget_ms} ms budget; kept the fastest model reached")
    elif min_accuracy is not None and final_acc < min_accuracy:
        message = (f"meeting the {budget_ms} ms budget took ratio {best_ratio}, and accuracy "
                   f"{final_acc:.4f} is below --min-accuracy {min_accuracy}; kept that model")
    else:
        message = (f"{metric} {value:.3f} ms <= {budget_ms} ms at ratio {best_ratio}, "
                   f"accuracy {final_acc:.4f}")
    ok = met_latency and (min_accuracy is None or final_acc >= min_accuracy)
    result = PruneResult(model=best, ratio=best_ratio, met=ok, budget_ms=float(budget_ms),
                         metric=metric, before=before, after=after, acc_before=acc_before,
                         acc_pruned=acc_pruned, acc_finetuned=acc_ft, steps=steps,
                         message=message)
    if strict and not ok:
        err = VerdictError(message)
        err.result = result
        raise err
    return result


def prune_checkpoint(src: "str | os.PathLike", dest: "str | os.PathLike", teacher, bundle, target,
                     budget_ms: float, **kw) -> dict:
    """Load the edgekd checkpoint ``src``, :func:`prune_to_budget` it (``kw`` as there; never
    strict) and, when anything was pruned, write the result to ``dest`` with :func:`save_pruned`.
    Returns the result as plain data plus ``checkpoint`` (``dest``, or None when nothing was
    pruned because the model already met the budget)."""
    from .models.checkpoint import load_checkpoint

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

    from .targets import load_target

    target = load_target(target)
    shape = tuple(bundle.input_shape)
    if known_miss is None:
        from .models.checkpoint import load_checkpoint

        model = load_checkpoint(src)[0]
        stats = latency_fn(model) if latency_fn else measure_model(model, shape, target, target.measure)
        value = float(getattr(stats, metric))
        if value <= budget_ms:
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
