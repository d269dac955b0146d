"""Data specs, validation, labelled fractions, transforms and loaders."""
from __future__ import annotations

import collections
import textwrap

import numpy as np
import pytest
import torch

from edgekd.data import (Compose, Normalize, RandomHFlip, RandomPadCrop, calibration_batches,
                         load_data, make_loader)
from edgekd.errors import BadInputError


# --------------------------------------------------------------------------- digits

def test_digits_shapes_and_determinism():
    a = load_data("digits")
    b = load_data("digits")
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    assert a.input_shape == (1, 16, 16) and a.in_channels == 1 and a.num_classes == 10
    assert a.class_names == tuple(str(i) for i in range(10))
    assert a.n_train + a.n_val == 1797 and a.n_skipped == 0
    assert abs(a.n_val - 0.2 * 1797) < 10
    x, y = a.train[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == (1, 16, 16) and y.dtype == torch.int64
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert abs(float(a.train.x.mean())) < 1e-4 and abs(float(a.train.x.std()) - 1) < 1e-4
    # every class is in both splits (stratified)
    assert set(a.train.targets) == set(a.val.targets) == set(range(10))


def test_digits_resolution_changes_fingerprint_not_split():
    a, c = load_data("digits"), load_data("digits", resolution=8)
    assert c.input_shape == (1, 8, 8) and c.fingerprint != a.fingerprint
    assert c.val.targets == a.val.targets  # the split does not depend on resolution
    assert load_data("digits", seed=5).val.targets == a.val.targets  # nor on the seed


def test_labelled_fraction_stratified_and_seeded():
    full = load_data("digits")
    a = load_data("digits", labelled_fraction=0.1, seed=0)
    b = load_data("digits", labelled_fraction=0.1, seed=0)
    c = load_data("digits", labelled_fraction=0.1, seed=1)
    assert a.labelled_indices == b.labelled_indices and a.fingerprint == b.fingerprint
    assert a.labelled_indices != c.labelled_indices and a.fingerprint != c.fingerprint
    assert a.fingerprint != full.fingerprint
    true = full.train.targets
    per_class = collections.Counter(true[i] for i in a.labelled_indices)
    all_class = collections.Counter(true)
    for cls, n in all_class.items():
        assert per_class[cls] == round(0.1 * n)
    labels = a.train.targets
    keep = set(a.labelled_indices)
    assert all(labels[i] == true[i] for i in keep)
    assert all(labels[i] == -1 for i in range(len(labels)) if i not in keep)
    assert len(a.train) == len(full.train)  # the teacher still sees every image
    assert full.labelled_indices == tuple(range(len(full.train)))
    with pytest.raises(BadInputError, match="1.5"):
        load_data("digits", labelled_fraction=1.5)


def test_unknown_spec_and_bad_resolution():
    with pytest.raises(BadInputError, match="unknown data spec 'mnist'"):
        load_data("mnist")
    with pytest.raises(BadInputError, match="resolution"):
        load_data("digits", resolution=0)


# --------------------------------------------------------------------------- folder

def _png(path, color, mode="RGB", size=(12, 10)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def _image_folder(root):
    for split, n in (("train", 3), ("val", 2)):
        for cls, color in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            for i in range(n):
                _png(root / split / cls / f"{i}.png", color)
    _png(root / "train" / "cat" / "gray.png", 128, mode="L")
    (root / "train" / "dog" / "bad.png").write_bytes(b"not an image at all")
    return root


def test_folder_skips_corrupt_image_and_counts_it(tmp_path):
    root = _image_folder(tmp_path / "pets")
    b = load_data(f"folder:{root}")
    assert b.n_skipped == 1
    assert b.class_names == ("cat", "dog") and b.num_classes == 2
    assert b.input_shape == (3, 10, 12)  # majority RGB, size from the first image
    assert len(b.train) == 7 and len(b.val) == 4
    x, y = b.train[0]
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert abs(float(x[0, 0, 0]) - 200 / 255) < 1e-6 and int(y) == 0
    r = load_data(f"folder:{root}", resolution=8, color_mode="L")
    assert r.input_shape == (1, 8, 8) and r.fingerprint != b.fingerprint
    assert load_data(f"folder:{root}").fingerprint == b.fingerprint


def test_folder_strict_names_the_bad_file(tmp_path):
    root = _image_folder(tmp_path / "pets")
    with pytest.raises(BadInputError, match="bad.png"):
        load_data(f"folder:{root}", strict=True)


def test_folder_layout_errors(tmp_path):
    root = tmp_path / "d"
    _png(root / "train" / "a" / "0.png", (1, 2, 3))
    with pytest.raises(BadInputError, match="no val/"):
        load_data(f"folder:{root}")
    _png(root / "val" / "zebra" / "0.png", (1, 2, 3))
    with pytest.raises(BadInputError, match="zebra"):
        load_data(f"folder:{root}")
    empty = tmp_path / "e"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    with pytest.raises(BadInputError, match="no class sub-folders"):
        load_data(f"folder:{empty}")
    with pytest.raises(BadInputError, match="does not exist"):
        load_data(f"folder:{tmp_path / 'missing'}")


# --------------------------------------------------------------------------- npz

def test_npz_uint8_and_missing_key(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "d.npz"
    np.savez(p, x_train=rng.integers(0, 256, (20, 6, 6), dtype=np.uint8),
             y_train=np.arange(20) % 3, x_val=rng.integers(0, 256, (6, 6, 6), dtype=np.uint8),
             y_val=np.arange(6) % 3)
    b = load_data(f"npz:{p}")
    assert b.input_shape == (1, 6, 6) and b.num_classes == 3
    x, _ = b.train[0]
    assert x.dtype == torch.float32 and float(x.max()) <= 1.0
    assert load_data(f"npz:{p}", resolution=4).input_shape == (1, 4, 4)
    q = tmp_path / "missing.npz"
    np.savez(q, x_train=np.zeros((2, 1, 4, 4), np.float32), y_train=np.zeros(2, np.int64))
    with pytest.raises(BadInputError, match="x_val, y_val"):
        load_data(f"npz:{q}")


def test_npz_nan_and_label_range(tmp_path):
    x = np.zeros((4, 1, 4, 4), np.float32)
    x_bad = x.copy()
    x_bad[2, 0, 1, 1] = np.nan
    p = tmp_path / "nan.npz"
    np.savez(p, x_train=x, y_train=np.array([0, 1, 0, 1]), x_val=x_bad, y_val=np.array([0, 1, 0, 1]))
    with pytest.raises(BadInputError, match="val sample 2 contains NaN"):
        load_data(f"npz:{p}")
    q = tmp_path / "labels.npz"
    np.savez(q, x_train=x, y_train=np.array([0, 1, 5, 1]), x_val=x, y_val=np.array([0, 1, 0, 1]),
             classes=np.array(["a", "b"]))
    with pytest.raises(BadInputError, match="train sample 2 has label 5"):
        load_data(f"npz:{q}")
    r = tmp_path / "shape.npz"
    np.savez(r, x_train=x, y_train=np.array([0, 1, 0, 1]), x_val=np.zeros((2, 1, 5, 5), np.float32),
             y_val=np.array([0, 1]))
    with pytest.raises(BadInputError, match="shape"):
        load_data(f"npz:{r}")


# --------------------------------------------------------------------------- py

_PY_DATA = textwrap.dedent('''
    import torch

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, n, bad=None, label=None, shape=None, classes=("a", "b", "c")):
            self.n, self.bad, self.label, self.shape, self.classes = n, bad, label, shape, list(classes)
        def __len__(self):
            return self.n
        def __getitem__(self, i):
            x = torch.full((1, 5, 5), float(i) / self.n)
            if i == self.bad:
                x[0, 0, 0] = float("inf")
            if self.shape is not None and i == self.n - 1:
                x = torch.zeros(self.shape)
            return x, (self.label if (self.label is not None and i == 1) else i % 3)

    def good(seed=0):
        return Pairs(12), Pairs(6)

    def nan():
        return Pairs(12, bad=3), Pairs(6)

    def bad_label():
        return Pairs(12), Pairs(6, label=7)

    def mixed():
        return Pairs(12, shape=(1, 4, 4)), Pairs(6)

    def empty():
        return Pairs(0), Pairs(6)

    def nolist():
        return Pairs(12)
''')


@pytest.fixture
def py_data(tmp_path, monkeypatch):
    (tmp_path / "edgekd_test_pydata.py").write_text(_PY_DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "py:edgekd_test_pydata"


def test_py_loader(py_data):
    b = load_data(f"{py_data}:good")
    assert b.num_classes == 3 and b.class_names == ("a", "b", "c") and b.input_shape == (1, 5, 5)
    x, y = b.train[4]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and int(y) == 1
    assert load_data(f"{py_data}:good").fingerprint == b.fingerprint
    r = load_data(f"{py_data}:good", resolution=8, labelled_fraction=0.5, seed=3)
    assert r.input_shape == (1, 8, 8) and tuple(r.train[0][0].shape) == (1, 8, 8)
    assert len(r.labelled_indices) == 6 and sum(t == -1 for t in r.train.targets) == 6


def test_py_loader_errors(py_data):
    with pytest.raises(BadInputError, match="train sample 3 contains NaN or inf"):
        load_data(f"{py_data}:nan")
    with pytest.raises(BadInputError, match=r"val sample 1 has label 7, outside \[0, 3\)"):
        load_data(f"{py_data}:bad_label")
    with pytest.raises(BadInputError, match="train sample 11 has shape"):
        load_data(f"{py_data}:mixed")
    with pytest.raises(BadInputError, match="train split has no samples"):
        load_data(f"{py_data}:empty")
    with pytest.raises(BadInputError, match="not \\(train, val\\)"):
        load_data(f"{py_data}:nolist")
    with pytest.raises(BadInputError, match="no attribute"):
        load_data(f"{py_data}:nothing")


# --------------------------------------------------------------------------- transforms

def test_transforms_repeat_with_a_seed():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 8, 8)
    aug = Compose([RandomPadCrop(2), RandomHFlip(0.5), Normalize([1.0, 2.0], [2.0, 4.0])])
    a = [aug(x, generator=torch.Generator().manual_seed(7)) for _ in range(3)]
    assert all(torch.equal(a[0], t) for t in a)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    s1 = [aug(x, generator=g1) for _ in range(10)]
    s2 = [aug(x, generator=g2) for _ in range(10)]
    assert all(torch.equal(p, q) for p, q in zip(s1, s2))
    assert any(not torch.equal(s1[0], t) for t in s1[1:])  # it does vary along the stream
    own1, own2 = RandomPadCrop(3, seed=4), RandomPadCrop(3, seed=4)
    assert all(torch.equal(own1(x), own2(x)) for _ in range(5))
    assert tuple(RandomPadCrop(3)(x).shape) == (2, 8, 8)
    flipped = RandomHFlip(1.0)(x)
    assert torch.equal(flipped, torch.flip(x, dims=(-1,)))
    n = Normalize(1.0, 2.0)(x)
    assert torch.allclose(n, (x - 1) / 2)


def test_make_loader_deterministic_and_calibration():
    b = load_data("digits", resolution=8)

    def batches(seed):
        loader = make_loader(b.train, batch_size=64, shuffle=True, seed=seed,
                             augment=Compose([RandomPadCrop(1), RandomHFlip(0.5)]))
        return [(x.clone(), y.clone()) for x, y in list(loader)[:3]]

    a, c, d = batches(0), batches(0), batches(1)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, c))
    assert not torch.equal(a[0][1], d[0][1])
    plain = make_loader(b.val, batch_size=100, shuffle=False, seed=0)
    xs, ys = next(iter(plain))
    assert torch.equal(xs, b.val.x[:100]) and torch.equal(ys, b.val.y[:100])
    sampler = torch.utils.data.DistributedSampler(b.train, num_replicas=2, rank=1, shuffle=True,
                                                  seed=0)
    dist = make_loader(b.train, batch_size=32, shuffle=True, seed=0, sampler=sampler)
    assert len(dist.dataset) == len(b.train) and len(list(dist)) == (len(b.train) // 2 + 31) // 32
    cal = calibration_batches(b.val, 50, 16, seed=0)
    assert [c.shape for c in cal] == [(16, 1, 8, 8)] * 3 + [(2, 1, 8, 8)]
    assert all(c.dtype == np.float32 for c in cal)
    again = calibration_batches(b.val, 50, 16, seed=0)
    assert all(np.array_equal(p, q) for p, q in zip(cal, again))
    assert sum(len(c) for c in calibration_batches(b.val, 10_000, 128, seed=0)) == len(b.val)


def test_digits_read_from_the_file_equal_load_digits():
    """The built-in digits are read from scikit-learn's own file without importing it: the same
    images and labels as load_digits, in the same order."""
    import numpy as np
    from sklearn.datasets import load_digits

    from edgekd.data.sources import _read_digits

    raw = load_digits()
    images, labels = _read_digits()
    assert images.shape == (1797, 8, 8)
    assert np.array_equal(images, raw.images) and np.array_equal(labels, raw.target)
