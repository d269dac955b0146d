"""What every data source produces: a validated DataBundle of two datasets.

Samples are ``(x, y)``: ``x`` a float32 tensor C×H×W, ``y`` an int64 scalar tensor; a train
sample whose label is hidden (``labelled_fraction < 1``) has ``y == -1``.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..errors import BadInputError

log = logging.getLogger(__name__)

UNLABELLED = -1
FINGERPRINT_FORMAT = "edgekd.data/v1"


@dataclass(frozen=True, eq=False)
class DataBundle:
    """A dataset ready for distillation: train/val splits plus what a model needs to know."""

    name: str
    train: Any
    val: Any
    num_classes: int
    in_channels: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    fingerprint: str
    n_skipped: int = 0
    labelled_indices: tuple[int, ...] = field(default=())
    labelled_fraction: float = 1.0

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_val(self) -> int:
        return len(self.val)

    def to_dict(self) -> dict:
        """A JSON-able summary (no tensors)."""
        return {"name": self.name, "num_classes": self.num_classes,
                "in_channels": self.in_channels, "input_shape": list(self.input_shape),
                "class_names": list(self.class_names), "n_train": self.n_train,
                "n_val": self.n_val, "n_labelled": len(self.labelled_indices),
                "labelled_fraction": self.labelled_fraction, "n_skipped": self.n_skipped,
                "fingerprint": self.fingerprint}


class ArrayDataset:
    """In-memory images ``x`` (N×C×H×W, float32 or uint8 scaled by 1/255) and labels ``y``."""

    def __init__(self, x, y, classes: Sequence[str]):
        import torch

        if x.shape[0] != y.shape[0]:
            raise BadInputError(f"{x.shape[0]} images but {y.shape[0]} labels",
                                hint="each image needs exactly one label")
        self.x = x
        self.y = y.to(torch.int64)
        self.classes = list(classes)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int):
        import torch

        xi = self.x[i]
        xi = xi.to(torch.float32) / 255.0 if xi.dtype == torch.uint8 else xi.to(torch.float32)
        return xi, self.y[i]

    @property
    def targets(self) -> list[int]:
        return [int(v) for v in self.y.tolist()]

    def with_labels(self, y) -> "ArrayDataset":
        return ArrayDataset(self.x, y, self.classes)


class SampleDataset:
    """Wrap a user dataset so each sample is ``(float32 C×H×W tensor, int64 tensor)``.

    ``labels`` overrides the wrapped labels (used to hide labels); ``resize`` is an optional
    (H, W) every image is resized to (bilinear, no antialias)."""

    def __init__(self, base, *, labels=None, resize: tuple[int, int] | None = None,
                 classes: Sequence[str] | None = None):
        self.base = base
        self.labels = labels
        self.resize = resize
        self.classes = list(classes) if classes is not None else getattr(base, "classes", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        import torch

        item = self.base[i]
        x, y = to_sample(item, where=f"sample {i}")
        if self.resize is not None and tuple(x.shape[-2:]) != tuple(self.resize):
            x = resize_images(x.unsqueeze(0), self.resize)[0]
        if self.labels is not None:
            y = torch.as_tensor(int(self.labels[i]), dtype=torch.int64)
        return x, y

    @property
    def targets(self) -> list[int]:
        if self.labels is not None:
            return [int(v) for v in self.labels]
        return [int(self[i][1]) for i in range(len(self))]

    def with_labels(self, y) -> "SampleDataset":
        return SampleDataset(self.base, labels=[int(v) for v in y], resize=self.resize,
                             classes=self.classes)


def to_sample(item: Any, where: str):
    """Coerce one dataset item to ``(float32 C×H×W tensor, int64 scalar tensor)``."""
    import numpy as np
    import torch

    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise BadInputError(f"{where} is a {type(item).__name__}, not an (image, label) pair",
                            hint="the dataset's __getitem__ must return (x, y)")
    x, y = item[0], item[1]
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise BadInputError(f"{where}: the image is a {type(x).__name__}, not a tensor or array",
                            hint="return x as a float tensor C×H×W")
    if x.dtype == torch.uint8:
        x = x.to(torch.float32) / 255.0
    elif not x.is_floating_point():
        raise BadInputError(f"{where}: image dtype {x.dtype} is not float or uint8",
                            hint="return x as float32 (or uint8, scaled to [0,1])")
    x = x.to(torch.float32)
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise BadInputError(f"{where}: image shape {tuple(x.shape)} is not C×H×W or H×W",
                            hint="return one image per sample, without a batch dimension")
    try:
        y = torch.as_tensor(int(y.item() if hasattr(y, "item") else y), dtype=torch.int64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise BadInputError(f"{where}: label {y!r} is not an integer class index",
                            hint="return y as an int in [0, num_classes)") from exc
    return x, y


def resize_images(x, size: tuple[int, int]):
    """Bilinear resize of an N×C×H×W float tensor (antialias off, align_corners False)."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=False)


def check_split(ds, split: str, num_classes: int | None, *, hasher=None,
                shape: tuple[int, ...] | None = None) -> tuple[tuple[int, ...], list[int]]:
    """Validate every sample of one split; return (sample shape, labels).

    Raises BadInputError for an empty split, NaN/inf, a label outside [0, num_classes)
    (``num_classes=None`` checks only for negatives) and a shape that differs from the first
    sample's (or from ``shape`` when given). An ArrayDataset, or a dataset whose class sets
    ``validate_from_arrays`` (its samples a finite function of tensors ``x`` and ``y``), is
    checked on those tensors in one go."""
    import torch

    n = len(ds)
    if n == 0:
        raise BadInputError(f"the {split} split has no samples",
                            hint="check the data source holds images for this split")
    if isinstance(ds, ArrayDataset) or getattr(type(ds), "validate_from_arrays", False):
        return _check_arrays(ds, split, num_classes, hasher=hasher, shape=shape)
    labels: list[int] = []
    for i in range(n):
        x, y = ds[i]
        if shape is None:
            shape = tuple(x.shape)
        elif tuple(x.shape) != tuple(shape):
            raise BadInputError(f"{split} sample {i} has shape {tuple(x.shape)}, but earlier "
                                f"samples have {tuple(shape)}",
                                hint="all images must have the same C×H×W (pass --resolution)")
        if not bool(torch.isfinite(x).all()):
            raise BadInputError(f"{split} sample {i} contains NaN or inf",
                                hint="clean or drop that sample")
        label = int(y)
        _check_label(label, i, split, num_classes)
        labels.append(label)
        if hasher is not None:
            hasher.update(x.contiguous().numpy().tobytes())
            hasher.update(label.to_bytes(8, "little", signed=True))
    return tuple(shape), labels


def _check_arrays(ds: ArrayDataset, split, num_classes, *, hasher, shape):
    import torch

    sample_shape = tuple(ds.x.shape[1:])
    if shape is not None and tuple(shape) != sample_shape:
        raise BadInputError(f"{split} images have shape {sample_shape}, but train images have "
                            f"{tuple(shape)}", hint="both splits need the same C×H×W")
    if ds.x.is_floating_point():
        bad = ~torch.isfinite(ds.x.reshape(ds.x.shape[0], -1)).all(dim=1)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise BadInputError(f"{split} sample {i} contains NaN or inf",
                                hint="clean or drop that sample")
    labels = ds.targets
    for i, label in enumerate(labels):
        _check_label(label, i, split, num_classes)
    if hasher is not None:
        hasher.update(str(ds.x.dtype).encode())
        hasher.update(ds.x.contiguous().numpy().tobytes())
        hasher.update(ds.y.contiguous().numpy().tobytes())
    return sample_shape, labels


def _check_label(label: int, i: int, split: str, num_classes: int | None) -> None:
    if label < 0 or (num_classes is not None and label >= num_classes):
        if num_classes is None:  # only negatives are caught here: the class count is not known yet
            raise BadInputError(f"{split} sample {i} has label {label}; labels are class indices 0, 1, 2, ...",
                                hint="fix the label")
        raise BadInputError(f"{split} sample {i} has label {label}, outside [0, {num_classes})",
                            hint="fix the label or declare the full class list")


def labelled_subset(labels: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Stratified, seeded choice of the train indices that keep their label.

    Each class keeps ``round(fraction * n_class)`` samples (at least one when fraction > 0)."""
    import numpy as np

    if not (0.0 <= fraction <= 1.0):
        raise BadInputError(f"labelled_fraction {fraction} is outside [0, 1]",
                            hint="pass a fraction such as 0.1 for 10% labelled")
    labels_arr = np.asarray(labels, dtype=np.int64)
    if fraction >= 1.0:
        return list(range(len(labels_arr)))
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == c)
        k = int(round(fraction * len(idx)))
        if fraction > 0:
            k = max(1, k)
        keep.extend(int(i) for i in rng.permutation(idx)[:k])
    return sorted(keep)


def hide_labels(ds, labels: Sequence[int], keep: Iterable[int]):
    """A copy of ``ds`` whose labels outside ``keep`` are -1."""
    import torch

    y = torch.full((len(labels),), UNLABELLED, dtype=torch.int64)
    keep = list(keep)
    if keep:
        idx = torch.as_tensor(keep, dtype=torch.int64)
        y[idx] = torch.as_tensor([labels[i] for i in keep], dtype=torch.int64)
    return ds.with_labels(y)


def finish_bundle(*, name: str, spec: str, train, val, class_names: Sequence[str] | None,
                  num_classes: int | None, resolution: int | None, seed: int,
                  labelled_fraction: float, n_skipped: int = 0,
                  content_hash: str | None = None) -> DataBundle:
    """Validate both splits, apply the labelled fraction and compute the fingerprint.

    ``num_classes=None`` takes it from ``class_names`` or, failing that, max label + 1 over both
    splits. ``content_hash`` (optional) stands for the data content; without it the samples are
    hashed while they are validated."""
    hasher = hashlib.sha256()
    fixed = num_classes if num_classes is not None else (
        len(class_names) if class_names else None)
    sample_hasher = None if content_hash else hasher  # a given content hash saves hashing
    shape, train_labels = check_split(train, "train", fixed, hasher=sample_hasher)
    _, val_labels = check_split(val, "val", fixed, hasher=sample_hasher, shape=shape)
    if fixed is None:
        fixed = max(train_labels + val_labels) + 1
    if fixed < 2:
        raise BadInputError(f"data '{name}' has {fixed} class; a classifier needs at least 2",
                            hint="give data with two or more classes")
    if not class_names:
        class_names = [str(i) for i in range(fixed)]
    if len(class_names) != fixed:
        raise BadInputError(f"{len(class_names)} class names for {fixed} classes",
                            hint="the class list must have one name per class")
    if len(shape) != 3:
        raise BadInputError(f"samples have shape {shape}, not C×H×W",
                            hint="return images as C×H×W tensors")
    keep = labelled_subset(train_labels, float(labelled_fraction), seed)
    if len(keep) < len(train_labels):
        train = hide_labels(train, train_labels, keep)
    fp = hashlib.sha256()
    fp.update(FINGERPRINT_FORMAT.encode())
    fp.update(f"|{spec}|res={resolution}|frac={float(labelled_fraction)!r}|".encode())
    fp.update((content_hash or hasher.hexdigest()).encode())
    fp.update(",".join(map(str, keep)).encode() if len(keep) < len(train_labels) else b"all")
    bundle = DataBundle(name=name, train=train, val=val, num_classes=int(fixed),
                        in_channels=int(shape[0]), input_shape=tuple(int(s) for s in shape),
                        class_names=tuple(str(c) for c in class_names),
                        fingerprint=fp.hexdigest(), n_skipped=int(n_skipped),
                        labelled_indices=tuple(keep), labelled_fraction=float(labelled_fraction))
    log.info("data %s: %d train (%d labelled), %d val, %d classes, shape %s", name, len(train),
             len(keep), len(val), bundle.num_classes, bundle.input_shape)
    return bundle
