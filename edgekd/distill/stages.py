"""Find comparable feature stages in a student and a teacher by probing them with a dummy batch
(for the feature losses fitnet and at when the user names no layers)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import BadInputError
from .taps import FeatureTaps


def first_input_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise BadInputError(f"{type(model).__name__} has no Conv2d to guess its input channels from",
                        hint="feature losses fitnet/at need convolutional models")


def device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def probe(model: nn.Module, paths: list[str], res: int, channels: int) -> dict[str, torch.Size]:
    """Shapes of the tensors at ``paths`` for one dummy 2×C×res×res batch (eval mode)."""
    was_training = model.training
    model.eval()
    try:
        with FeatureTaps(model, paths) as taps:
            model(torch.zeros(2, channels, res, res, device=device_of(model)))
            return {p: taps.features[p].shape for p in paths if taps.features.get(p) is not None}
    finally:
        model.train(was_training)


def stage_paths(model: nn.Module, res: int, channels: int) -> list[str]:
    """Guess the stages: top-level submodules that output 4-D maps larger than 1×1 (so not the
    global pool), descending one level while fewer than three are found (e.g. a model whose
    body is one ``features`` Sequential)."""
    names = [n for n, _ in model.named_children()]
    for _ in range(3):
        shapes = probe(model, names, res, channels)
        stages = [n for n in names if n in shapes and len(shapes[n]) == 4
                  and shapes[n][2] * shapes[n][3] > 1]
        if len(stages) >= 3 or not stages:
            return stages
        deeper = [f"{stages[-1]}.{c}" for c, _ in model.get_submodule(stages[-1]).named_children()]
        if not deeper:
            return stages
        names = stages[:-1] + deeper
    return stages


def pair_stages(s_stages: list[str], t_stages: list[str], count: int) -> list[tuple[str, str]]:
    def pick(stages, i):
        return stages[round(i * (len(stages) - 1) / max(count - 1, 1))]
    return [(pick(s_stages, i), pick(t_stages, i)) for i in range(count)]
