"""The ``shapes`` data spec: a built-in RGB task drawn from a seed at any resolution.

``shapes`` or ``shapes:classes=10,n=3000,seed=0,clutter=0.5`` (any subset of the knobs, in any
order). Image ``i`` shows one object of kind ``i % classes`` (see shapes_draw.py) and is a
function of (seed, i, resolution) alone. Every fifth image of each class is in val (a fixed
80/20 split by index): like digits, neither the images nor the split depend on ``--seed``,
which only picks the labelled subset and the training order; the ``seed=`` knob picks the data.

The images are drawn once, in threads, into uint8 arrays (a quarter of float32's memory: 3000
images at 224 px take 450 MB, not 1.8 GB) and normalized per sample with the train split's
per-channel mean and std, as digits is with its train mean and std.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from typing import Sequence

from ..errors import BadInputError
from .base import DataBundle, finish_bundle
from .shapes_draw import KINDS, draw_many

SHAPES_DEFAULT_RES = 64
SHAPES_MIN_RES = 16
VAL_EVERY = 5  # image i is in val when (i // classes) % VAL_EVERY == VAL_EVERY - 1
MAX_BYTES = 4 << 30  # refuse to hold more than 4 GiB of uint8 images
_CHUNK = 64


@dataclass(frozen=True)
class ShapesSpec:
    """The knobs of a ``shapes`` spec."""

    classes: int = 10
    n: int = 3000
    seed: int = 0
    clutter: float = 0.5

    @property
    def canonical(self) -> str:
        """The spec with every knob spelled out (equal data, equal string)."""
        return (f"shapes:classes={self.classes},n={self.n},seed={self.seed},"
                f"clutter={self.clutter:g}")


_KNOBS = {"classes": (int, 2, len(KINDS)), "n": (int, None, None),
          "seed": (int, 0, 2 ** 32 - 1), "clutter": (float, 0.0, 1.0)}
_EXAMPLE = "e.g. shapes:classes=10,n=3000,seed=0,clutter=0.5"


def parse_shapes(spec: str) -> ShapesSpec:
    """``shapes`` or ``shapes:KEY=VALUE,...`` -> ShapesSpec; a bad knob is a one-line
    BadInputError naming it and the fix."""
    kind, _, rest = spec.strip().partition(":")
    if kind != "shapes":
        raise BadInputError(f"'{spec}' is not a shapes spec", hint=f"write {_EXAMPLE}")
    values: dict = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = (s.strip() for s in part.partition("="))
        if key not in _KNOBS:
            raise BadInputError(f"unknown shapes knob '{key}' in '{spec}'",
                                hint=f"use {', '.join(_KNOBS)} ({_EXAMPLE})")
        if not eq or not raw:
            raise BadInputError(f"shapes knob '{key}' has no value in '{spec}'",
                                hint=f"write {key}=VALUE ({_EXAMPLE})")
        if key in values:
            raise BadInputError(f"shapes knob '{key}' is given twice in '{spec}'",
                                hint="give each knob once")
        kind_, lo, hi = _KNOBS[key]
        try:
            value = kind_(raw)
        except ValueError:
            what = "integer" if kind_ is int else "number"
            raise BadInputError(f"shapes knob {key}={raw} is not a{'n' * (kind_ is int)} {what}",
                                hint=f"write {key}=<{what}> ({_EXAMPLE})") from None
        if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise BadInputError(f"shapes knob {key}={raw} is outside {lo}..{hi}",
                                hint=f"pass {key} between {lo} and {hi}")
        values[key] = value
    parsed = ShapesSpec(**values)
    if parsed.n < VAL_EVERY * parsed.classes:
        raise BadInputError(f"shapes knob n={parsed.n} is too few for {parsed.classes} classes",
                            hint=f"pass n >= {VAL_EVERY * parsed.classes} (every class needs "
                                 f"train and val images)")
    return parsed


def split_indices(n: int, classes: int):
    """(train indices, val indices, labels of all n images) as int64 numpy arrays."""
    import numpy as np

    i = np.arange(n, dtype=np.int64)
    is_val = (i // classes) % VAL_EVERY == VAL_EVERY - 1
    return i[~is_val], i[is_val], i % classes


def _draw_split(spec: ShapesSpec, indices, labels, res: int):
    """(uint8 N×3×res×res images of ``indices``, per-channel [sum, sum of squares] of their
    pixel values, sha256 of the images), drawn in chunks over a few threads. The sums are of
    integers below 2**53 in float64: exact, whatever order they are added in."""
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor

    out = np.empty((len(indices), 3, res, res), dtype=np.uint8)

    def work(start: int):
        stop = min(start + _CHUNK, len(indices))
        chunk = draw_many(indices[start:stop], labels[indices[start:stop]], seed=spec.seed,
                          res=res, clutter=spec.clutter, kinds=KINDS[:spec.classes],
                          out=out[start:stop])
        sums = np.zeros((3, 2), dtype=np.float64)
        for image in chunk:
            f = image.reshape(3, -1).astype(np.float64)
            sums[:, 0] += f.sum(axis=1)
            sums[:, 1] += np.einsum("ij,ij->i", f, f)
        return sums, hashlib.sha256(memoryview(chunk).cast("B")).digest()

    starts = range(0, len(indices), _CHUNK)
    workers = max(1, min(4, os.cpu_count() or 1, len(starts)))
    if workers == 1:
        parts = [work(s) for s in starts]
    else:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(work, starts))
    digest = hashlib.sha256(b"".join(d for _, d in parts)).hexdigest()
    return out, sum(p for p, _ in parts), digest


def _channel_stats(sums, count: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std), in [0, 1] units, from [sum, sum of squares] of ``count``
    uint8 values per channel."""
    import numpy as np

    mean = sums[:, 0] / count / 255.0
    std = np.sqrt(np.maximum(sums[:, 1] / count / 255.0 ** 2 - mean ** 2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(v) for v in std)


@functools.lru_cache(maxsize=2)
def _shapes_arrays(spec: ShapesSpec, res: int):
    """(x_train, y_train, x_val, y_val, (mean, std), content hash); x uint8 tensors."""
    import torch

    train_idx, val_idx, labels = split_indices(spec.n, spec.classes)
    x_tr, sums, h_tr = _draw_split(spec, train_idx, labels, res)
    x_va, _, h_va = _draw_split(spec, val_idx, labels, res)
    y_tr, y_va = labels[train_idx], labels[val_idx]
    h = hashlib.sha256(f"edgekd.shapes/v1|{x_tr.shape}|{h_tr}|{x_va.shape}|{h_va}|".encode())
    h.update(y_tr.tobytes())
    h.update(y_va.tobytes())
    stats = _channel_stats(sums, len(train_idx) * res * res)
    return (torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_va),
            torch.from_numpy(y_va), stats, h.hexdigest())


class ShapesDataset:
    """uint8 images (N×3×H×W) and labels; a sample is ``((x / 255 - mean) / std, y)`` in
    float32, per channel. Not an ArrayDataset: its ``x`` is not the sample scaled by 1/255."""

    validate_from_arrays = True  # base.check_split: uint8 x and int y say all there is to check

    def __init__(self, x, y, classes: Sequence[str], mean: Sequence[float],
                 std: Sequence[float]):
        import torch

        self.x, self.y = x, y.to(torch.int64)
        self.classes = list(classes)
        self.mean, self.std = tuple(mean), tuple(std)
        std_t = torch.tensor(self.std, dtype=torch.float32).view(-1, 1)
        self._scale = 1.0 / (255.0 * std_t)  # C×1: broadcast over a C×(H·W) view is fast
        self._shift = -torch.tensor(self.mean, dtype=torch.float32).view(-1, 1) / std_t

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int):
        import torch

        x = self.x[i].to(torch.float32)
        x.view(x.shape[0], -1).mul_(self._scale).add_(self._shift)
        return x, self.y[i]

    @property
    def targets(self) -> list[int]:
        return [int(v) for v in self.y.tolist()]

    def with_labels(self, y) -> "ShapesDataset":
        return ShapesDataset(self.x, y, self.classes, self.mean, self.std)


def _resolution(resolution: int | None, spec: ShapesSpec) -> int:
    res = SHAPES_DEFAULT_RES if resolution is None else int(resolution)
    if res < SHAPES_MIN_RES:
        raise BadInputError(f"shapes needs a resolution of at least {SHAPES_MIN_RES} (got {res})",
                            hint=f"pass --resolution {SHAPES_MIN_RES} or more "
                                 f"(default {SHAPES_DEFAULT_RES})")
    size = spec.n * 3 * res * res
    if size > MAX_BYTES:
        raise BadInputError(f"shapes with n={spec.n} at {res} px would hold "
                            f"{size / 2 ** 30:.1f} GiB of images (the limit is "
                            f"{MAX_BYTES / 2 ** 30:.0f} GiB)",
                            hint="lower n= in the spec or --resolution")
    return res


def load_shapes(spec: str, *, resolution: int | None, seed: int,
                labelled_fraction: float) -> DataBundle:
    """The DataBundle of a ``shapes`` spec (see the module docstring)."""
    parsed = parse_shapes(spec)
    res = _resolution(resolution, parsed)
    x_tr, y_tr, x_va, y_va, (mean, std), digest = _shapes_arrays(parsed, res)
    names = list(KINDS[:parsed.classes])
    return finish_bundle(name="shapes", spec=parsed.canonical,
                         train=ShapesDataset(x_tr, y_tr, names, mean, std),
                         val=ShapesDataset(x_va, y_va, names, mean, std), class_names=names,
                         num_classes=parsed.classes, resolution=res, seed=seed,
                         labelled_fraction=labelled_fraction, content_hash=digest)


def shapes_normalization(spec: str = "shapes", resolution: int | None = None
                         ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel (mean, std) a shapes spec's images are normalized with."""
    parsed = parse_shapes(spec)
    return _shapes_arrays(parsed, _resolution(resolution, parsed))[4]
