"""Structured (channel) pruning through torch-pruning, guided by measured latency on a target.

    prune_model(model, example_input, ratio=0.3)          -> the same module, fewer channels
    save_pruned(path, model, spec=..., ...) / load_pruned(path)
    prune_to_budget(model, teacher, bundle, target, budget_ms) -> PruneResult
    prune_by_ratio(model, teacher, bundle, target, ratio)      -> PruneResult
    prune_checkpoint(src, dest, teacher, bundle, target, budget_ms) -> dict
    prune_if_needed(src, dest, ...) -> dict        compress's prune stage: measure, then prune
    prune_to_dir(model_ref, teacher_spec, data, out, ...) -> dict   `edgekd prune`

Modules: adapter.py (torch-pruning), measure.py (accuracy, BatchNorm recalibration, latency,
cost of a candidate), budget.py (the latency-guided search, ratio mode, KD fine-tuning),
files.py (pruned checkpoints and the files `edgekd prune` writes), stage.py (compress's stage
and the command). A pruned model's structure is data (edgekd.models.pruned): a checkpoint
stores ``pruned_shapes`` in ``extra["pruned"]`` and loading re-applies them, no module pickled.
"""
from __future__ import annotations

from ..models.pruned import apply_shapes, pruned_shapes
from ..verdict import METRICS
from .adapter import IMPORTANCES, check_ratio, prune_model
from .budget import PruneResult, finetune, prune_by_ratio, prune_to_budget
from .files import load_prunable, load_pruned, save_pruned, write_pruned
from .measure import cost, evaluate, lat_dict, measure_model, quick_settings, recalibrate_bn
from .stage import prune_checkpoint, prune_if_needed, prune_to_dir

__all__ = ["IMPORTANCES", "METRICS", "PruneResult", "apply_shapes", "check_ratio", "cost",
           "evaluate", "finetune", "lat_dict", "load_prunable", "load_pruned", "measure_model",
           "prune_by_ratio", "prune_checkpoint", "prune_if_needed", "prune_model",
           "prune_to_budget", "prune_to_dir", "pruned_shapes", "quick_settings",
           "recalibrate_bn", "save_pruned", "write_pruned"]
