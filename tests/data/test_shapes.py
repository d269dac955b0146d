"""The built-in ``shapes`` data spec: determinism, shapes at any resolution, balance, the
normalization, every place a data spec goes, a task that is learnable but not trivial, and
one-line errors for bad knobs."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from edgekd.data import (SPEC_FORMS, calibration_batches, calibration_from_dataset,
                         dataset_arrays, load_data, make_loader, shapes_normalization)
from edgekd.data.shapes import ShapesDataset, _shapes_arrays, parse_shapes
from edgekd.data.shapes_draw import KINDS, draw
from edgekd.errors import BadInputError


def test_same_spec_and_resolution_give_identical_arrays():
    a = load_data("shapes:n=100", resolution=24)
    a_x, a_fp = a.train.x.clone(), a.fingerprint
    _shapes_arrays.cache_clear()  # drawn again, not served from the cache
    b = load_data("shapes:n=100", resolution=24)
    assert b.train.x is not a.train.x
    assert torch.equal(a_x, b.train.x) and torch.equal(a.val.x, b.val.x)
    assert torch.equal(a.train.y, b.train.y) and a_fp == b.fingerprint
    # the same knobs spelled another way are the same data, fingerprint included
    same = load_data("shapes: clutter=0.5 , seed=0,n=100", resolution=24)
    assert same.fingerprint == a_fp
    # the seed= knob picks other scenes; --seed changes neither the images nor the split
    other = load_data("shapes:n=100,seed=1", resolution=24)
    assert not torch.equal(other.train.x, a_x) and other.fingerprint != a_fp
    by_seed = load_data("shapes:n=100", resolution=24, seed=7)
    assert torch.equal(by_seed.train.x, a_x) and by_seed.val.targets == a.val.targets
    assert by_seed.fingerprint == a_fp


def test_an_image_depends_on_its_index_not_on_n():
    small = load_data("shapes:n=100", resolution=20)
    big = load_data("shapes:n=200", resolution=20)
    assert torch.equal(small.train.x, big.train.x[:len(small.train)])
    assert torch.equal(small.val.x, big.val.x[:len(small.val)])
    one = draw(3, 3, seed=0, res=20, clutter=0.5)
    assert one.dtype == np.uint8 and np.array_equal(one, small.train.x[3].numpy())


@pytest.mark.parametrize("res", [16, 41, 96])
def test_samples_at_any_resolution(res):
    b = load_data("shapes:n=60", resolution=res)
    assert b.name == "shapes" and b.input_shape == (3, res, res) and b.in_channels == 3
    assert b.num_classes == 10 and b.class_names == KINDS[:10]
    assert isinstance(b.train, ShapesDataset) and b.train.x.dtype == torch.uint8
    x, y = b.train[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, res, res)
    assert y.dtype == torch.int64 and y.dim() == 0
    assert bool(torch.isfinite(x).all())


def test_default_resolution_and_floor():
    assert load_data("shapes:n=50").input_shape == (3, 64, 64)
    with pytest.raises(BadInputError, match="resolution of at least 16") as err:
        load_data("shapes:n=50", resolution=8)
    assert "--resolution 16" in str(err.value)


def test_normalized_per_channel_with_the_train_mean_and_std():
    b = load_data("shapes:n=200", resolution=24)
    x = torch.stack([b.train[i][0] for i in range(len(b.train))])
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    mean, std = shapes_normalization("shapes:n=200", 24)
    assert (mean, std) == (b.train.mean, b.train.std) == (b.val.mean, b.val.std)
    raw = b.val.x[5].float() / 255.0
    want = (raw - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(b.val[5][0], want, atol=1e-5)


@pytest.mark.parametrize("spec,classes,per_class", [("shapes:n=500", 10, 50),
                                                    ("shapes:classes=12,n=600", 12, 50),
                                                    ("shapes:classes=3,n=60", 3, 20)])
def test_classes_are_balanced_with_a_fixed_80_20_split(spec, classes, per_class):
    b = load_data(spec, resolution=16)
    assert b.num_classes == classes and b.class_names == KINDS[:classes]
    train = collections.Counter(b.train.targets)
    val = collections.Counter(b.val.targets)
    assert train == {c: per_class * 4 // 5 for c in range(classes)}
    assert val == {c: per_class // 5 for c in range(classes)}


def test_labelled_fraction_hides_labels_and_keeps_images():
    full = load_data("shapes:n=200", resolution=16)
    part = load_data("shapes:n=200", resolution=16, labelled_fraction=0.25, seed=3)
    assert isinstance(part.train, ShapesDataset) and part.train.x is full.train.x
    labels = part.train.targets
    assert sum(v >= 0 for v in labels) == len(part.labelled_indices) == 40
    assert collections.Counter(full.train.targets[i] for i in part.labelled_indices) == \
        {c: 4 for c in range(10)}
    assert all(labels[i] == -1 for i in range(len(labels)) if i not in part.labelled_indices)
    assert part.fingerprint != full.fingerprint


def test_loaders_calibration_and_the_remote_npz_path(tmp_path):
    from edgekd.verify.remote import val_npz

    b = load_data("shapes:n=100", resolution=20)
    xb, yb = next(iter(make_loader(b.train, batch_size=8, shuffle=True, seed=0)))
    assert xb.shape == (8, 3, 20, 20) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    calib = calibration_batches(b.val, 12, 5, seed=0)
    assert [c.shape for c in calib] == [(5, 3, 20, 20), (5, 3, 20, 20), (2, 3, 20, 20)]
    assert all(c.dtype == np.float32 for c in calib)
    assert sum(len(c) for c in calibration_from_dataset(b.val, 12, batch_size=5)) == 12
    # remote verify ships the val split as float32 arrays in an npz and reads it with npz:
    x, y = dataset_arrays(b.val)
    assert x.shape == (20, 3, 20, 20) and x.dtype == np.float32
    shipped = load_data(f"npz:{val_npz(x, y)}")
    assert np.array_equal(shipped.val.x.numpy(), x) and shipped.val.targets == y.tolist()


@pytest.fixture(scope="module")
def small_task():
    return load_data("shapes:n=3000,clutter=0", resolution=16)


def test_mean_colour_does_not_tell_the_classes_apart(small_task):
    b = small_task
    feats = {s: getattr(b, s).x.float().mean(dim=(2, 3)).numpy() for s in ("train", "val")}
    y_tr, y_va = b.train.y.numpy(), b.val.y.numpy()
    centroids = np.stack([feats["train"][y_tr == c].mean(0) for c in range(10)])
    pred = ((feats["val"][:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == y_va).mean() < 0.15  # chance is 0.10


def test_a_tiny_convnet_learns_it_through_the_trainer(small_task, tmp_path):
    from edgekd.distill.run import distill

    res = distill("convnet:width=16,depth=4,res=16", None, small_task, tmp_path,
                  config=dict(epochs=4, batch_size=32, seed=0), loss="ce", progress=False,
                  log_json=False)
    assert res.best_acc >= 0.2  # twice chance after 4 epochs of 2400 images at 16 px


@pytest.mark.parametrize("spec,knob", [
    ("shapes:colour=3", "unknown shapes knob 'colour'"),
    ("shapes:classes=1", "classes=1 is outside 2..12"),
    ("shapes:classes=13", "classes=13 is outside 2..12"),
    ("shapes:classes=ten", "classes=ten is not an integer"),
    ("shapes:clutter=2", "clutter=2 is outside 0.0..1.0"),
    ("shapes:clutter=nan", "clutter=nan is outside"),
    ("shapes:seed=-1", "seed=-1 is outside"),
    ("shapes:n", "knob 'n' has no value"),
    ("shapes:n=3,n=4", "knob 'n' is given twice"),
    ("shapes:n=20", "n=20 is too few for 10 classes"),
])
def test_bad_knobs_are_one_line_errors_naming_the_knob_and_fix(spec, knob):
    with pytest.raises(BadInputError, match=knob) as err:
        load_data(spec)
    assert "\n" not in str(err.value) and err.value.hint


def test_too_many_bytes_is_refused_before_drawing():
    with pytest.raises(BadInputError, match="n=100000 at 224 px") as err:
        load_data("shapes:n=100000", resolution=224)
    assert "lower n=" in str(err.value)


def test_spec_forms_and_unknown_spec_hint_name_shapes():
    assert "shapes" in SPEC_FORMS
    with pytest.raises(BadInputError, match="shapes"):
        load_data("mnist")
    assert parse_shapes("shapes").canonical == "shapes:classes=10,n=3000,seed=0,clutter=0.5"
