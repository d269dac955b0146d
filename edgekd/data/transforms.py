"""Tensor augmentations (no torchvision), deterministic loaders and calibration batches.

Every transform takes and returns one C×H×W tensor and draws its randomness from the
``generator`` passed to ``__call__``, or, without one, from its own generator seeded with
``seed``; the same seed gives the same augmentations.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ..errors import BadInputError


class _Random:
    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self._gen = None

    def _g(self, generator):
        if generator is not None:
            return generator
        if self._gen is None:
            import torch

            self._gen = torch.Generator().manual_seed(self.seed)
        return self._gen


class RandomPadCrop(_Random):
    """Pad by ``pad`` pixels on every side (zeros, or ``mode="reflect"``), then crop back to
    the original H×W at a random offset."""

    def __init__(self, pad: int = 2, *, mode: str = "constant", seed: int = 0):
        super().__init__(seed)
        if int(pad) < 0:
            raise BadInputError(f"pad {pad} is negative", hint="pass pad >= 0")
        if mode not in ("constant", "reflect", "replicate"):
            raise BadInputError(f"pad mode '{mode}' is not constant, reflect or replicate",
                                hint="pick one of those")
        self.pad, self.mode = int(pad), mode

    def __call__(self, x, generator=None):
        import torch
        import torch.nn.functional as F

        if self.pad == 0:
            return x
        h, w = x.shape[-2:]
        p = self.pad
        padded = F.pad(x.unsqueeze(0), (p, p, p, p), mode=self.mode)[0]
        i, j = torch.randint(0, 2 * p + 1, (2,), generator=self._g(generator)).tolist()
        return padded[..., i:i + h, j:j + w]

    def __repr__(self) -> str:
        return f"RandomPadCrop(pad={self.pad}, mode={self.mode})"


class RandomHFlip(_Random):
    """Flip left-right with probability ``p``."""

    def __init__(self, p: float = 0.5, *, seed: int = 0):
        super().__init__(seed)
        if not (0.0 <= float(p) <= 1.0):
            raise BadInputError(f"flip probability {p} is outside [0, 1]", hint="pass 0..1")
        self.p = float(p)

    def __call__(self, x, generator=None):
        import torch

        if float(torch.rand((), generator=self._g(generator))) < self.p:
            return torch.flip(x, dims=(-1,))
        return x

    def __repr__(self) -> str:
        return f"RandomHFlip(p={self.p})"


class Normalize:
    """``(x - mean) / std`` per channel (scalars apply to every channel)."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]):
        self.mean = [float(m) for m in (mean if isinstance(mean, (list, tuple)) else [mean])]
        self.std = [float(s) for s in (std if isinstance(std, (list, tuple)) else [std])]
        if any(s <= 0 for s in self.std):
            raise BadInputError(f"std {self.std} has a value <= 0", hint="std must be positive")

    def __call__(self, x, generator=None):
        import torch

        c = x.shape[0]
        if len(self.mean) not in (1, c) or len(self.std) not in (1, c):
            raise BadInputError(f"Normalize has {len(self.mean)} means/{len(self.std)} stds "
                                f"for a {c}-channel image", hint="give one value or one per channel")
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class Compose(_Random):
    """Apply transforms in order, all drawing from one generator."""

    def __init__(self, transforms: Sequence[Callable], *, seed: int = 0):
        super().__init__(seed)
        self.transforms = list(transforms)

    def __call__(self, x, generator=None):
        g = self._g(generator)
        for t in self.transforms:
            x = t(x, generator=g) if isinstance(t, (_Random, Normalize)) else t(x)
        return x

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(map(repr, self.transforms)) + ")"


def default_augment(pad: int = 2, flip: bool = False) -> Compose:
    """The usual small-image augmentation: pad-and-crop, optionally a horizontal flip."""
    steps: list[Callable] = [RandomPadCrop(pad)]
    if flip:
        steps.append(RandomHFlip(0.5))
    return Compose(steps)


class AugmentedDataset:
    """Apply ``augment`` to the image of each ``(x, y, ...)`` item, drawing from a generator
    seeded with ``seed`` (re-seeded per DataLoader worker so workers don't repeat each other)."""

    def __init__(self, base: Any, augment: Callable, seed: int = 0):
        import torch

        self.base, self.augment, self.seed = base, augment, int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        item = self.base[i]
        x = self.augment(item[0], generator=self.generator)
        return (x, *item[1:])

    def __getattr__(self, name: str):
        if name == "base":  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)


def _worker_init(worker_id: int) -> None:
    import torch

    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(info.dataset, AugmentedDataset):
        # torch.initial_seed() in a worker = the loader's base seed + worker id: deterministic
        info.dataset.generator = torch.Generator().manual_seed(torch.initial_seed() % (2 ** 63))


def make_loader(dataset: Any, *, batch_size: int, shuffle: bool, seed: int = 0,
                augment: Callable | None = None, drop_last: bool = False, num_workers: int = 0,
                sampler: Any = None):
    """A DataLoader whose order and augmentations depend only on ``seed``.

    With a ``sampler`` (e.g. a DistributedSampler) the sampler decides the order and
    ``shuffle`` is ignored; the augmentation seed is offset by the sampler's rank."""
    import torch
    from torch.utils.data import DataLoader

    if int(batch_size) < 1:
        raise BadInputError(f"batch size {batch_size} is not positive", hint="pass >= 1")
    if len(dataset) == 0:
        raise BadInputError("cannot make a loader over an empty dataset",
                            hint="check the data spec")
    if augment is not None:
        rank = int(getattr(sampler, "rank", 0) or 0)
        dataset = AugmentedDataset(dataset, augment, seed=int(seed) + 1_000_003 * rank)
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=int(batch_size),
                      shuffle=bool(shuffle) if sampler is None else False, sampler=sampler,
                      drop_last=bool(drop_last), num_workers=int(num_workers),
                      generator=generator, worker_init_fn=_worker_init if num_workers else None,
                      persistent_workers=False)


def calibration_batches(dataset: Any, n: int, batch_size: int, seed: int = 0) -> list:
    """``n`` samples (all when the dataset is smaller) chosen by ``seed``, as a list of float32
    numpy arrays of at most ``batch_size`` images each (N×C×H×W), for INT8 calibration."""
    import numpy as np
    import torch

    if int(n) < 1 or int(batch_size) < 1:
        raise BadInputError(f"calibration needs n >= 1 and batch_size >= 1 (got {n}, "
                            f"{batch_size})", hint="pass positive numbers")
    total = len(dataset)
    if total == 0:
        raise BadInputError("the calibration dataset is empty", hint="check the data spec")
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(total, generator=g)[: min(int(n), total)].tolist()
    batches = []
    for start in range(0, len(idx), int(batch_size)):
        xs = [dataset[i][0] for i in idx[start:start + int(batch_size)]]
        batches.append(np.ascontiguousarray(torch.stack(xs).numpy().astype(np.float32)))
    return batches
