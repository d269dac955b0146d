"""The torch-pruning adapter: remove a fraction of a model's channels, ranked by one importance.

    prune_model(model, example_input, ratio=0.3)   -> the same module, fewer channels

Importances: l2 / l1 (group magnitude), taylor (one backward pass on a labelled batch), lamp, bn
(BatchNorm scale). The classifier and the modules named in ``keep`` are left alone.
"""
from __future__ import annotations

from typing import Iterable, Optional

from ..errors import BadInputError

IMPORTANCES = ("l2", "l1", "taylor", "lamp", "bn")


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


def check_ratio(ratio: float) -> float:
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

    ratio = check_ratio(ratio)
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
    hint = ("its layers depend on channel counts pruning would change (attention, fixed reshapes): "
            "--keep them, or use --prune off")
    try:
        pruner = tp.pruner.MetaPruner(model, example_input, importance=_importance(importance),
                                      global_pruning=bool(global_pruning), pruning_ratio=ratio,
                                      ignored_layers=ignored, round_to=round_to, iterative_steps=1)
        if importance == "taylor":
            x, y = taylor_batch
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
        pruner.step()
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise BadInputError(f"torch-pruning cannot prune this model at ratio {ratio} ({_first(exc)})",
                            hint=hint) from exc
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    floor = int(round_to or 1)
    for name, width in _conv_widths(model).items():
        need = min(floor, before.get(name, width))
        if width < need:
            raise BadInputError(f"pruning ratio {ratio} leaves layer '{name}' with {width} "
                                f"channel(s), fewer than {need}",
                                hint="use a smaller ratio, --keep that layer, or no --global")
    try:
        with torch.no_grad():
            model.eval()(example_input)  # a layer that reshapes by a fixed width breaks here, not later
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise BadInputError(f"torch-pruning cannot prune this model at ratio {ratio}: the pruned model "
                            f"no longer runs ({_first(exc)})", hint=hint) from exc
    finally:
        model.train(was_training)
    return model


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
