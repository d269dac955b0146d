"""Pieces of the training loop: the learning-rate schedule, the optimizer, gradient clipping,
each epoch's batches and augmentation (all derived from seed, epoch, batch and rank), the signal
flag, the progress bar and the validation pass."""
from __future__ import annotations

import logging
import math
import signal
import sys
import threading
from typing import Any

from ..accuracy import count_correct, ratio
from ..errors import BadInputError
from .runstate import allreduce_sum
from .train_config import Optimizer, Schedule, TrainConfig

log = logging.getLogger("edgekd.distill.trainer")


def lr_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    total = config.epochs * steps_per_epoch
    warm = config.warmup_epochs * steps_per_epoch
    if warm and step < warm:
        return config.lr * (step + 1) / warm
    if config.schedule is Schedule.cosine:
        progress = (step - warm) / max(1, total - warm)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    epoch = step // steps_per_epoch
    drops = sum(epoch >= int(config.epochs * f) for f in (0.5, 0.75))
    return config.lr * (0.1 ** drops)


def make_optimizer(config: TrainConfig, params: list):
    import torch

    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer is Optimizer.sgd:
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=False)
    return torch.optim.AdamW(groups, lr=config.lr)


def clip_grads(params: list, max_norm: float, epoch: int, batch: int) -> float:
    """Clip the global gradient norm of ``params`` to ``max_norm``; the norm before clipping."""
    import torch

    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if not math.isfinite(norm):
        raise BadInputError(f"the gradient norm became {norm} at epoch {epoch + 1} batch "
                            f"{batch + 1}; clipping cannot repair it", hint="lower --lr")
    return norm



def batch_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + batch * 101 + rank) % (2**63 - 1)


def pad_crop(x, pad: int, generator):
    """Random translation by up to ``pad`` pixels (zero padding), one offset per sample."""
    import torch

    n, _, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).tolist()
    return torch.stack([xp[i, :, oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(offs)])


def per_process_batch(batch_size: int, world: int) -> int:
    """--batch-size is the global batch: each of ``world`` processes takes its share, so a
    torchrun run makes as many optimizer steps per epoch as a one-process run with the same flags."""
    if world > 1 and (batch_size % world or batch_size // world < 2):
        raise BadInputError(f"--batch-size {batch_size} is the global batch and does not split into {world} "
                            f"processes of at least 2 samples each",
                            hint=f"use a multiple of {world} of at least {2 * world}")
    return batch_size // world


def epoch_batches(n: int, config: TrainConfig, epoch: int, rank: int, world: int) -> list[list]:
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                 seed=config.seed, drop_last=False)
    sampler.set_epoch(epoch)
    idx = list(sampler)
    bs = per_process_batch(config.batch_size, world)
    batches = [idx[i:i + bs] for i in range(0, len(idx), bs)]
    if len(batches) > 1 and len(batches[-1]) < 2:  # BatchNorm cannot train on one sample
        batches.pop()
    return batches


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop stops after the current batch. A second signal
    restores the default behaviour."""

    def __init__(self):
        self.flag = False
        self._old: dict = {}

    def _handler(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        log.warning("signal %s: finishing the current batch, then saving", signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def progress_bar(enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=Console(stderr=True), transient=False)


def evaluate(model, dataset, dev: str, batch_size: int, rank: int, world: int) -> float:
    """Top-1 accuracy on this rank's share of ``dataset`` (all-reduced across ranks)."""
    import torch

    from .cache import take

    idx = list(range(rank, len(dataset), world))
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            x, y = take(dataset, torch.as_tensor(idx[start:start + batch_size]))
            c, k = count_correct(model(x.to(dev)), y.to(dev))
            correct += c
            total += k
    if world > 1:
        correct, total = allreduce_sum([correct, total], dev)
    return ratio(correct, total)


def as_float(v: Any) -> float:
    return float(v.detach()) if hasattr(v, "detach") else float(v)


def clean_num(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v

