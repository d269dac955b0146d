"""Knowledge distillation.

    losses.py        the losses (pure functions) and their registry
    options.py       a loss's options: defaults, user overrides, --loss-opt pairs
    taps.py          feature taps (forward hooks by module path); stages.py: matching stages
    criterion.py     CE + one distillation loss, with its extra trainable modules
    train_config.py  TrainConfig; loop.py: pieces of the loop; runstate.py: RNG, DDP, states
    cache.py         the teacher-logit cache
    trainer.py       fit(): the training loop, checkpoints, exact resume
    run.py           distill(): the one fit-restore-deploy entry point; train_to_dir()

Names load lazily so importing this package does not import torch.
"""
from __future__ import annotations

from .._lazy import lazy_api

_API: dict[str, str] = {
    "build_criterion": "criterion:build_criterion",
    "Criterion": "criterion:Criterion",
    "FeatureTaps": "taps:FeatureTaps",
    "penultimate_path": "taps:penultimate_path",
    "LOSSES": "losses:LOSSES",
    "LossInfo": "losses:LossInfo",
    "TrainConfig": "train_config:TrainConfig",
    "fit": "trainer:fit",
    "distill": "run:distill",
    "Distilled": "run:Distilled",
    "train_to_dir": "run:train_to_dir",
}


__getattr__, __dir__ = lazy_api(__name__, _API, globals())
