"""Latency-guided pruning: prune a model step by step until it meets a budget on a target (or
by one given ratio), recalibrate, then fine-tune it by distillation from the teacher.

    prune_to_budget(model, teacher, bundle, target, budget_ms) -> PruneResult
    prune_by_ratio(model, teacher, bundle, target, ratio)      -> PruneResult
"""
from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ..errors import BadInputError, VerdictError
from ..verdict import Metric, judge_value
from .adapter import check_ratio, prune_model
from .measure import cost, evaluate, lat_dict, measure_model, recalibrate_bn


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


def finetune(model, teacher, bundle, *, epochs: int, out_dir: "str | os.PathLike",
             loss: str = "kd", train_kw: Optional[dict] = None, progress: bool = False):
    """Distil ``teacher`` into the pruned ``model`` for a few epochs (best epoch kept); the
    deployable module in eval mode."""
    from ..distill.run import distill

    kw = {"epochs": epochs, "lr": 0.01, **(train_kw or {})}
    return distill(model, teacher, bundle, out_dir, config=kw, loss=loss, progress=progress,
                   log_json=False).model


def _taylor_batch(bundle):
    """The labelled batch taylor importance backpropagates: the first 64 training samples."""
    import torch

    from ..distill.cache import take

    return take(bundle.train, torch.arange(min(64, len(bundle.train))))


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

    from ..targets import load_target

    metric = Metric.parse(metric).value
    if not budget_ms or budget_ms <= 0:
        raise BadInputError(f"budget {budget_ms} ms must be positive", hint="e.g. --budget-ms 2")
    check_ratio(step)
    check_ratio(max_ratio)
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

    def within(lat, bound: float) -> bool:
        return judge_value(float(getattr(lat, metric)), bound).passed

    def accept(m, lat):
        """(stats, meets the budget, re-measured): a pass on the short protocol is checked
        with the target's own protocol before it counts (noise on a busy machine)."""
        if within(lat, aim) and confirm is not None:
            lat = confirm(m)
            return lat, within(lat, aim), True
        return lat, within(lat, aim), False

    model = model.eval()
    example = torch.zeros(1, *shape)
    taylor = _taylor_batch(bundle) if importance == "taylor" else None
    acc_before = evaluate(model, bundle.val)
    lat0, met0, again = accept(model, latency_fn(model))
    before = {**cost(model, shape), **lat_dict(lat0), "acc": acc_before}
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
    met_latency = met_latency or within(best_lat, budget_ms)
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
    after = {**cost(best, shape), **lat_dict(best_lat), "acc": final_acc}
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


def prune_by_ratio(model, teacher, bundle, target, ratio: float, *, metric: str = "p90",
                   importance: str = "l2", global_pruning: bool = False,
                   round_to: Optional[int] = None, keep: Iterable[str] = (),
                   finetune_epochs: int = 3, min_accuracy: Optional[float] = None,
                   work_dir: "str | os.PathLike") -> PruneResult:
    """Prune ``ratio`` of ``model``'s channels (in place), recalibrate its BatchNorm statistics
    and fine-tune it for ``finetune_epochs`` by distillation from ``teacher`` in
    ``work_dir/finetune``. With a ``target`` the latency before and after is measured with a
    short protocol; ``round_to`` defaults to the target's (8 without one). ``met`` is whether
    the final accuracy reaches ``min_accuracy``."""
    import torch

    from ..targets import load_target

    target = load_target(target) if target else None
    shape = tuple(bundle.input_shape)

    def lat(m) -> dict:
        return lat_dict(measure_model(m, shape, target)) if target else {}

    acc_before = evaluate(model, bundle.val)
    before = {**cost(model, shape), **lat(model), "acc": acc_before}
    taylor = _taylor_batch(bundle) if importance == "taylor" else None
    r2 = round_to if round_to is not None else (target.round_to if target else 8)
    pruned = prune_model(model, torch.zeros(1, *shape), ratio=ratio, importance=importance,
                         global_pruning=global_pruning, round_to=r2, keep=keep,
                         taylor_batch=taylor)
    recalibrate_bn(pruned, bundle.train)
    acc_pruned = evaluate(pruned, bundle.val)
    acc_ft = None
    if finetune_epochs > 0:
        pruned = finetune(pruned, teacher, bundle, epochs=finetune_epochs,
                          out_dir=Path(work_dir) / "finetune")
        acc_ft = evaluate(pruned, bundle.val)
    final = acc_ft if acc_ft is not None else acc_pruned
    ok = min_accuracy is None or final >= min_accuracy
    msg = "" if ok else f"accuracy {final:.4f} is below --min-accuracy {min_accuracy}"
    return PruneResult(model=pruned, ratio=ratio, met=ok, budget_ms=None, metric=metric,
                       before=before, after={**cost(pruned, shape), **lat(pruned), "acc": final},
                       acc_before=acc_before, acc_pruned=acc_pruned, acc_finetuned=acc_ft,
                       message=msg)
