"""Datasets of (x, y) samples as numpy arrays: validation sets and calibration batches."""
from __future__ import annotations

from typing import Any

import numpy as np

from .transforms import calibration_batches


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        return x.detach().cpu().numpy()
    return np.asarray(x)


def dataset_arrays(dataset: Any, limit: "int | None" = None, *, seed: int = 0,
                   labelled_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) numpy arrays from a dataset of (x, y) samples, at most ``limit`` of them.

    Picks a seeded random subset when the dataset is larger than ``limit``; skips samples whose
    label is hidden (-1) when ``labelled_only``.
    """
    n = len(dataset)
    idx = np.arange(n)
    if limit is not None and limit < n:
        idx = np.sort(np.random.default_rng(seed).permutation(n)[:max(0, limit)])
    xs, ys = [], []
    for i in idx:
        x, y = dataset[int(i)][:2]
        y = int(np.asarray(_to_numpy(y)).reshape(-1)[0])
        if labelled_only and y < 0:
            continue
        xs.append(np.asarray(_to_numpy(x), dtype=np.float32))
        ys.append(y)
    if not xs:
        return np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def calibration_from_dataset(dataset: Any, n: int, *, batch_size: int = 32, seed: int = 0) -> list[np.ndarray]:
    """``n`` calibration samples as numpy batches (labels are not needed), drawn as
    transforms.calibration_batches draws them."""
    if n <= 0:
        return []
    return [np.asarray(_to_numpy(b[0] if isinstance(b, (tuple, list)) else b), dtype=np.float32)
            for b in calibration_batches(dataset, n, batch_size, seed)]
