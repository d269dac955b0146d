"""Data sources: ``digits``, ``shapes[:KNOBS]``, ``folder:PATH``, ``npz:PATH`` and
``py:module:function``.

``load_data(spec)`` is the one front door; every source ends in ``finish_bundle``, which
validates the samples, hides labels for semi-supervised runs and fingerprints the result.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import zipfile
from pathlib import Path
from typing import Sequence

from ..errors import BadInputError, missing_package
from .base import ArrayDataset, DataBundle, SampleDataset, finish_bundle, resize_images

log = logging.getLogger(__name__)

SPEC_FORMS = ("digits, shapes[:classes=10,n=3000,seed=0,clutter=0.5], folder:PATH, npz:PATH "
              "or py:module:function")
DIGITS_DEFAULT_RES = 16
DIGITS_SPLIT_SEED = 20240607  # the train/val split of digits never depends on --seed
DIGITS_VAL_FRACTION = 0.2
NPZ_KEYS = ("x_train", "y_train", "x_val", "y_val")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def load_data(spec: str, *, resolution: int | None = None, seed: int = 0,
              labelled_fraction: float = 1.0, strict: bool = False,
              color_mode: str | None = None) -> DataBundle:
    """Load a data spec into a validated :class:`DataBundle`.

    ``resolution`` resizes images to resolution×resolution (digits default 16; shapes draws
    them at that size, default 64; folder default the first image's size).
    ``labelled_fraction < 1`` keeps the labels of a stratified subset of train chosen by
    ``seed`` and sets the others to -1. ``strict`` turns a skipped unreadable
    image into an error. ``color_mode`` ("L" or "RGB") overrides the folder majority vote.
    """
    spec = str(spec).strip()
    if resolution is not None:
        if isinstance(resolution, bool) or int(resolution) != resolution or int(resolution) < 1:
            raise BadInputError(f"resolution {resolution!r} is not a positive integer",
                                hint="pass e.g. --resolution 32")
        resolution = int(resolution)
    if not (0.0 <= float(labelled_fraction) <= 1.0):
        raise BadInputError(f"labelled_fraction {labelled_fraction} is outside [0, 1]",
                            hint="pass e.g. 0.1 to keep 10% of the train labels")
    if color_mode is not None and color_mode not in ("L", "RGB"):
        raise BadInputError(f"color mode '{color_mode}' is not L or RGB",
                            hint="use L for grayscale or RGB for colour")
    common = dict(spec=spec, resolution=resolution, seed=int(seed),
                  labelled_fraction=float(labelled_fraction))
    kind, _, rest = spec.partition(":")
    if spec == "digits":
        return _digits(**common)
    if kind == "shapes":
        from .shapes import load_shapes

        return load_shapes(spec, resolution=resolution, seed=int(seed),
                           labelled_fraction=float(labelled_fraction))
    if kind == "folder" and rest:
        return _folder(rest, strict=strict, color_mode=color_mode, **common)
    if kind == "npz" and rest:
        return _npz(rest, **common)
    if kind == "py" and rest:
        return _py(rest, **common)
    if spec and os.path.isdir(spec):
        return _folder(spec, strict=strict, color_mode=color_mode, **common)
    if spec.endswith(".npz") and os.path.isfile(spec):
        return _npz(spec, **common)
    raise BadInputError(f"unknown data spec '{spec}'", hint=f"use one of: {SPEC_FORMS}")


# --------------------------------------------------------------------------- digits

def _read_digits():
    """(images [1797, 8, 8], labels) of the digits scikit-learn ships, read from its file
    (sklearn/datasets/data/digits.csv.gz: 64 pixels then the label per row, what load_digits
    reads) without importing scikit-learn, which costs more than the rest of a small run's start;
    load_digits where the file is not where it is expected."""
    import gzip
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise missing_package("scikit-learn", what="the built-in digits dataset")
    path = os.path.join(os.path.dirname(spec.origin or ""), "datasets", "data", "digits.csv.gz")
    if os.path.isfile(path):
        with gzip.open(path, "rt") as f:
            data = np.loadtxt(f, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    raw = load_digits()
    return raw.images, raw.target


@functools.lru_cache(maxsize=8)
def _digits_arrays(resolution: int):
    """(x_train, y_train, x_val, y_val) as tensors; normalized with the train mean/std."""
    import numpy as np
    import torch

    images, labels = _read_digits()
    images = images.astype(np.float32) / 16.0  # 16 gray levels -> [0, 1]
    labels = labels.astype(np.int64)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    val_idx: list[int] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        val_idx.extend(idx[: int(round(DIGITS_VAL_FRACTION * len(idx)))].tolist())
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[val_idx] = True
    x = torch.from_numpy(images).unsqueeze(1)
    x = resize_images(x, (resolution, resolution))
    x_tr, x_va = x[torch.from_numpy(~is_val)], x[torch.from_numpy(is_val)]
    mean, std = float(x_tr.mean()), float(x_tr.std())
    x_tr = ((x_tr - mean) / std).contiguous()
    x_va = ((x_va - mean) / std).contiguous()
    y = torch.from_numpy(labels)
    return x_tr, y[torch.from_numpy(~is_val)], x_va, y[torch.from_numpy(is_val)], (mean, std)


def _digits(*, spec, resolution, seed, labelled_fraction) -> DataBundle:
    res = resolution or DIGITS_DEFAULT_RES
    x_tr, y_tr, x_va, y_va, _ = _digits_arrays(res)
    names = [str(i) for i in range(10)]
    return finish_bundle(name="digits", spec=spec, train=ArrayDataset(x_tr, y_tr, names),
                         val=ArrayDataset(x_va, y_va, names), class_names=names, num_classes=10,
                         resolution=res, seed=seed, labelled_fraction=labelled_fraction)


def digits_normalization(resolution: int = DIGITS_DEFAULT_RES) -> tuple[float, float]:
    """The (mean, std) digits images were normalized with at this resolution."""
    return _digits_arrays(int(resolution))[4]


# --------------------------------------------------------------------------- folder

def _list_dirs(path: Path) -> list[str]:
    return sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))


def _list_files(path: Path) -> list[Path]:
    return sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith("."))


def _image_errors():
    from PIL import Image

    # Pillow raises OSError (incl. UnidentifiedImageError) for unreadable or truncated files,
    # SyntaxError from some decoders for broken headers, ValueError for odd modes.
    return (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _folder(path: str, *, spec, resolution, seed, labelled_fraction, strict,
            color_mode) -> DataBundle:
    import numpy as np
    import torch
    from PIL import Image

    root = Path(path).expanduser()
    if not root.is_dir():
        raise BadInputError(f"data folder '{root}' does not exist",
                            hint="pass folder:PATH with PATH/train/<class>/ and PATH/val/<class>/")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise BadInputError(f"data folder '{root}' has no {split}/ sub-folder",
                                hint="lay it out as PATH/train/<class>/*.png and "
                                     "PATH/val/<class>/*.png")
    classes = _list_dirs(root / "train")
    if not classes:
        raise BadInputError(f"'{root / 'train'}' has no class sub-folders",
                            hint="put each class's images in its own folder under train/")
    unknown = [c for c in _list_dirs(root / "val") if c not in classes]
    if unknown:
        raise BadInputError(f"val class(es) {', '.join(unknown)} in '{root / 'val'}' are not "
                            f"in train ({', '.join(classes)})",
                            hint="every val class needs a train folder of the same name")
    errors = _image_errors()
    files: dict[str, list[tuple[Path, int]]] = {}
    for split in ("train", "val"):
        files[split] = []
        for label, cls in enumerate(classes):
            cdir = root / split / cls
            if cdir.is_dir():
                files[split].extend((f, label) for f in _list_files(cdir))
    bad: set[Path] = set()

    def skip(f: Path, exc: BaseException) -> None:
        if strict:
            raise BadInputError(f"cannot read image '{f}' ({type(exc).__name__}: {exc})",
                                hint="remove or replace the file, or drop --strict to skip it")
        log.warning("skipping unreadable image %s (%s: %s)", f, type(exc).__name__, exc)
        bad.add(f)

    # Pass 1: headers only (mode for the majority vote, size of the first image).
    n_gray = n_color = 0
    size: tuple[int, int] | None = (resolution, resolution) if resolution else None
    for split in ("train", "val"):
        for f, _ in files[split]:
            try:
                with Image.open(f) as im:
                    mode, (w, h) = im.mode, im.size
            except errors as exc:
                skip(f, exc)
                continue
            if split == "train":
                n_gray += mode in _GRAY_MODES
                n_color += mode not in _GRAY_MODES
            if size is None:
                size = (h, w)
    mode = color_mode or ("L" if n_gray > n_color else "RGB")
    if size is None:
        raise BadInputError(f"no readable images under '{root}'",
                            hint="check the files are images Pillow can open")

    # Pass 2: decode, convert, resize.
    def read(split: str):
        xs, ys = [], []
        for f, label in files[split]:
            if f in bad:
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert(mode)
                    if im.size != (size[1], size[0]):
                        im = im.resize((size[1], size[0]), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except errors as exc:
                skip(f, exc)
                continue
            xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            ys.append(label)
        if not xs:
            raise BadInputError(f"the {split} split under '{root}' has no readable images",
                                hint="add images to the class folders")
        return (ArrayDataset(torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.int64),
                             classes))

    train, val = read("train"), read("val")
    return finish_bundle(name=root.name or str(root), spec=spec, train=train, val=val,
                         class_names=classes, num_classes=len(classes), resolution=resolution,
                         seed=seed, labelled_fraction=labelled_fraction, n_skipped=len(bad))


# --------------------------------------------------------------------------- npz

def _as_images(arr, key: str):
    import numpy as np
    import torch

    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise BadInputError(f"'{key}' has shape {arr.shape}, not N×C×H×W or N×H×W",
                            hint="store images channel-first, one per row")
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(arr))
    if np.issubdtype(arr.dtype, np.floating):
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    raise BadInputError(f"'{key}' has dtype {arr.dtype}, not uint8 or float",
                        hint="store images as uint8 (0-255) or float32")


def _as_labels(arr, key: str):
    import numpy as np
    import torch

    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise BadInputError(f"'{key}' has shape {arr.shape}, not a 1-D array of class indices",
                            hint="store one integer label per image")
    if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) \
            and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise BadInputError(f"'{key}' has dtype {arr.dtype}, not integer class indices",
                            hint="store labels as int64")
    return torch.from_numpy(arr.astype(np.int64))


def _npz(path: str, *, spec, resolution, seed, labelled_fraction) -> DataBundle:
    import numpy as np

    p = Path(path).expanduser()
    if not p.is_file():
        raise BadInputError(f"npz file '{p}' does not exist", hint="check the path after npz:")
    try:
        with np.load(p, allow_pickle=False) as z:
            present = list(z.files)
            missing = [k for k in NPZ_KEYS if k not in present]
            if missing:
                raise BadInputError(f"npz file '{p}' lacks key(s) {', '.join(missing)} "
                                    f"(has: {', '.join(present) or 'nothing'})",
                                    hint=f"save it with np.savez(path, {'=..., '.join(NPZ_KEYS)}=...)")
            arrays = {k: z[k] for k in NPZ_KEYS}
            names = [str(c) for c in z["classes"].tolist()] if "classes" in present else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInputError(f"cannot read '{p}' as an npz file ({exc})",
                            hint="write it with numpy.savez (no pickled objects)") from exc
    splits = {}
    for split in ("train", "val"):
        x = _as_images(arrays[f"x_{split}"], f"x_{split}")
        y = _as_labels(arrays[f"y_{split}"], f"y_{split}")
        if resolution and tuple(x.shape[-2:]) != (resolution, resolution):
            x = x.float() / 255.0 if not x.is_floating_point() else x
            x = resize_images(x, (resolution, resolution)).contiguous()
        splits[split] = ArrayDataset(x, y, names or [])
    return finish_bundle(name=p.stem, spec=spec, train=splits["train"], val=splits["val"],
                         class_names=names, num_classes=len(names) if names else None,
                         resolution=resolution, seed=seed, labelled_fraction=labelled_fraction)


# --------------------------------------------------------------------------- py

def _classes_of(ds) -> Sequence[str] | None:
    classes = getattr(ds, "classes", None)
    if classes is None:
        return None
    if isinstance(classes, int) and not isinstance(classes, bool):
        return [str(i) for i in range(classes)]
    try:
        return [str(c) for c in classes]
    except TypeError:
        return None


def _py(ref: str, *, spec, resolution, seed, labelled_fraction) -> DataBundle:
    from ..registry import import_object

    fn = import_object(ref)
    if not callable(fn):
        raise BadInputError(f"'{ref}' is not a function", hint="point py: at a function "
                            "that returns (train_dataset, val_dataset)")
    kwargs = {}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "resolution" in params and resolution is not None:
        kwargs["resolution"] = resolution
    if "seed" in params:
        kwargs["seed"] = seed
    out = fn(**kwargs)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise BadInputError(f"'{ref}' returned a {type(out).__name__}, not (train, val)",
                            hint="return a pair of datasets yielding (x, y)")
    train_raw, val_raw = out
    for split, ds in (("train", train_raw), ("val", val_raw)):
        if not hasattr(ds, "__len__") or not hasattr(ds, "__getitem__"):
            raise BadInputError(f"the {split} dataset from '{ref}' has no __len__/__getitem__",
                                hint="return map-style datasets (torch.utils.data.Dataset)")
    names = _classes_of(train_raw)
    size = (resolution, resolution) if resolution else None
    train = SampleDataset(train_raw, resize=size, classes=names)
    val = SampleDataset(val_raw, resize=size, classes=names)
    return finish_bundle(name=ref.rpartition(":")[2], spec=spec, train=train, val=val,
                         class_names=names, num_classes=len(names) if names else None,
                         resolution=resolution, seed=seed, labelled_fraction=labelled_fraction)
