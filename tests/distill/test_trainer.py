"""The trainer and the teacher-logit cache, with tiny stand-in data, models and losses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from edgekd.distill.cache import IndexedDataset, cache_key, teacher_logit_cache  # noqa: E402
from edgekd.distill.trainer import TrainConfig, fit, load_state, restore_weights  # noqa: E402
from edgekd.errors import BadInputError, WorkInterrupted  # noqa: E402

C, RES = 3, 8


class TensorPairs:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def make_bundle(n_train=96, n_val=48, labelled_every=1, fingerprint="data-v1"):
    g = torch.Generator().manual_seed(0)

    def part(n):
        y = torch.arange(n) % C
        x = 0.3 * torch.randn(n, 1, RES, RES, generator=g)
        for c in range(C):  # a class is a bright row band
            x[y == c, :, 2 * c:2 * c + 2, :] += 1.0
        return x, y

    xt, yt = part(n_train)
    xv, yv = part(n_val)
    labelled = [i for i in range(n_train) if i % labelled_every == 0]
    yt = yt.clone()
    mask = torch.ones(n_train, dtype=torch.bool)
    mask[labelled] = False
    yt[mask] = -1
    return SimpleNamespace(name="toy", train=TensorPairs(xt, yt), val=TensorPairs(xv, yv),
                           num_classes=C, in_channels=1, input_shape=(1, RES, RES),
                           class_names=[str(c) for c in range(C)], fingerprint=fingerprint,
                           n_skipped=0, labelled_indices=labelled)


def make_student(seed=0, width=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AvgPool2d(4), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(width * 4, C))


class Teacher:
    def __init__(self, fingerprint="teacher-v1"):
        self.module = make_student(seed=123, width=8).eval()
        self.fingerprint = fingerprint
        self.num_classes = C
        self.supports_features = False
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return self.module(x)


class Criterion(nn.Module):
    """CE (ignoring -1) + Hinton KD; with ``stop_at`` it sends itself SIGTERM on that call."""

    needs_teacher_features = False

    def __init__(self, kd=True, stop_at=None):
        super().__init__()
        self.needs_teacher = kd
        torch.manual_seed(1)
        self.proj = nn.Linear(C, C)  # an extra trainable module, like a serialization layer
        self.stop_at, self.calls = stop_at, 0

    def forward(self, zs, zt, y, epoch):
        self.calls += 1
        if self.stop_at is not None and self.calls == self.stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        labelled = y >= 0
        ce = F.cross_entropy(zs, y, ignore_index=-1) if labelled.any() else zs.sum() * 0
        loss, parts = ce, {"ce": ce.detach()}
        if self.needs_teacher:
            kd = F.kl_div(F.log_softmax(self.proj(zs) / 2, 1), F.log_softmax(zt / 2, 1),
                          log_target=True, reduction="batchmean") * 4
            loss, parts = ce * 0.5 + kd, {"ce": ce.detach(), "kd": kd.detach()}
        return loss, parts

    def deployable(self, student):
        return student


def cfg(**kw):
    base = dict(epochs=3, batch_size=16, lr=0.05, seed=7, augment="padcrop")
    base.update(kw)
    return TrainConfig.make(**base)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("stop_at, clip", [
    (8, None), (12, None),  # mid-epoch, and the last batch of epoch 2
    (8, 0.5),               # with gradient clipping (its per-epoch counters resume too)
])
def test_sigterm_then_resume_is_bit_identical(tmp_path, stop_at, clip):
    bundle, teacher = make_bundle(), Teacher()
    ref_student, ref_crit = make_student(), Criterion()
    ref = fit(ref_student, ref_crit, bundle, cfg(grad_clip=clip), tmp_path / "a",
              teacher=teacher, progress=False)

    crit = Criterion(stop_at=stop_at)
    with pytest.raises(WorkInterrupted) as info:
        fit(make_student(), crit, bundle, cfg(grad_clip=clip), tmp_path / "b", teacher=teacher,
            progress=False)
    assert info.value.exit_code == 130
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    state = load_state(tmp_path / "b" / "checkpoints" / "last.pt")
    assert state["step"] == stop_at

    student2, crit2 = make_student(seed=99), Criterion()  # different init: resume overwrites
    res = fit(student2, crit2, bundle, cfg(grad_clip=clip), tmp_path / "b", teacher=teacher,
              resume=True, progress=False)
    assert same(weights(student2), weights(ref_student))
    assert same(weights(crit2), weights(ref_crit))
    assert res.best_acc == ref.best_acc and res.last_acc == ref.last_acc
    if clip is not None:
        assert [h["clipped_steps"] for h in res.history] == [h["clipped_steps"]
                                                            for h in ref.history]
        assert sum(h["clipped_steps"] for h in ref.history) > 0
    lines = (tmp_path / "b" / "train.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]
    assert [json.loads(l)["val_acc"] for l in lines] == [h["val_acc"] for h in ref.history]


def test_fit_learns_and_writes_checkpoints(tmp_path):
    bundle = make_bundle()
    student = make_student()
    res = fit(student, Criterion(kd=False), bundle, cfg(epochs=4, augment="none"), tmp_path,
              progress=False)
    assert res.best_acc >= 0.9
    assert res.paths["best"].exists() and res.paths["last"].exists()
    best = load_state(res.paths["best"])
    assert best["epoch"] == res.best_epoch
    fresh = make_student(seed=5)
    restore_weights(res.paths["best"], fresh)
    assert all(h["cache"] == "off" for h in res.history)
    # a finished run resumed does nothing more and reports the same numbers
    again = fit(fresh, Criterion(kd=False), bundle, cfg(epochs=4, augment="none"), tmp_path,
                resume=True, progress=False)
    assert again.best_acc == res.best_acc and len(again.history) == 4


def test_resume_with_other_settings_is_refused(tmp_path):
    bundle = make_bundle()
    fit(make_student(), Criterion(kd=False), bundle, cfg(epochs=1), tmp_path, progress=False)
    with pytest.raises(BadInputError, match="lr"):
        fit(make_student(), Criterion(kd=False), bundle, cfg(epochs=1, lr=0.1), tmp_path,
            resume=True, progress=False)


def test_resume_checks_grad_clip_and_accepts_runs_from_before_it(tmp_path):
    bundle = make_bundle()
    fit(make_student(), Criterion(kd=False), bundle, cfg(epochs=1, grad_clip=1.0), tmp_path / "a",
        progress=False)
    with pytest.raises(BadInputError, match="grad_clip=2.0, but the saved run used grad_clip=1.0"):
        fit(make_student(), Criterion(kd=False), bundle, cfg(epochs=1, grad_clip=2.0),
            tmp_path / "a", resume=True, progress=False)
    # a state written before grad_clip existed has no such key: it trained without clipping
    fit(make_student(), Criterion(kd=False), bundle, cfg(epochs=1), tmp_path / "b",
        progress=False)
    last = tmp_path / "b" / "checkpoints" / "last.pt"
    state = load_state(last)
    del state["config"]["grad_clip"]
    torch.save(state, last)
    with pytest.raises(BadInputError, match="predates that setting .*grad_clip=None"):
        fit(make_student(), Criterion(kd=False), bundle, cfg(epochs=1, grad_clip=1.0),
            tmp_path / "b", resume=True, progress=False)
    res = fit(make_student(), Criterion(kd=False), bundle, cfg(epochs=1), tmp_path / "b",
              resume=True, progress=False)
    assert [h["epoch"] for h in res.history] == [1]  # finished: nothing more to do


class Scaled(Criterion):
    """CE times a huge factor: one unclipped SGD step throws the weights far away."""

    def forward(self, zs, zt, y, epoch):
        loss, parts = super().forward(zs, zt, y, epoch)
        return loss * 1e6, parts


@pytest.mark.parametrize("clip", [None, 1.0])
def test_grad_clip_bounds_one_step(tmp_path, clip):
    bundle = make_bundle(n_train=16)  # one batch of 16: exactly one optimizer step
    student = make_student()
    before = torch.cat([p.detach().flatten().clone() for p in student.parameters()])
    res = fit(student, Scaled(kd=False), bundle, cfg(epochs=1, augment="none", weight_decay=0.0,
                                                     grad_clip=clip), tmp_path, progress=False)
    after = torch.cat([p.detach().flatten() for p in student.parameters()])
    moved = float((after - before).norm())
    if clip is None:
        assert moved > 1e3  # the unclipped step explodes
        assert "clipped_steps" not in res.history[0]
    else:  # SGD's first step is lr * grad, and the clipped grad has norm `clip`
        assert moved == pytest.approx(0.05 * clip, rel=1e-3)
        assert res.history[0]["clipped_steps"] == 1 and res.history[0]["grad_norm_max"] > 1e3
    assert load_state(res.paths["last"])["config"]["grad_clip"] == clip


def test_config_validation():
    assert TrainConfig.make().grad_clip is None  # off unless asked for
    assert TrainConfig.make(grad_clip=5).grad_clip == 5.0
    for bad in (0, -1.0):
        with pytest.raises(BadInputError, match="grad_clip"):
            TrainConfig.make(grad_clip=bad)
    with pytest.raises(BadInputError, match="optimizer"):
        TrainConfig.make(optimizer="lion")
    with pytest.raises(BadInputError, match="warmup"):
        TrainConfig.make(epochs=2, warmup_epochs=2)
    assert TrainConfig.make(optimizer="adamw").lr == 2e-3
    assert TrainConfig.make().lr == 0.05


def test_unlabelled_targets(tmp_path):
    bundle = make_bundle(labelled_every=4)  # 24 of 96 labelled, the rest -1
    teacher = Teacher()
    res = fit(make_student(), Criterion(kd=True), bundle, cfg(epochs=1), tmp_path / "kd",
              teacher=teacher, progress=False)
    assert res.history[0]["samples"] >= 90  # distillation sees every image
    assert all(v is not None for v in res.history[0]["parts"].values())
    plain = fit(make_student(), Criterion(kd=False), bundle, cfg(epochs=1), tmp_path / "ce",
                progress=False)
    assert plain.history[0]["samples"] == 24  # plain training sees only the labelled ones
    assert plain.history[0]["train_acc"] is not None


def test_teacher_logit_cache_hit_miss_invalidation(tmp_path):
    bundle, teacher = make_bundle(), Teacher()
    kw = dict(teacher_fingerprint="t1", data_fingerprint="d1", transform="none", root=tmp_path)
    first = teacher_logit_cache(teacher, bundle.train, **kw)
    assert not first.hit and first.path.exists() and first.logits.shape == (96, C)
    calls = teacher.calls
    second = teacher_logit_cache(teacher, bundle.train, **kw)
    assert second.hit and teacher.calls == calls and torch.equal(second.logits, first.logits)
    with torch.no_grad():
        live = teacher.module(torch.stack([bundle.train[i][0] for i in (5, 70)]))
    assert torch.allclose(second.lookup(torch.tensor([5, 70])), live, atol=1e-5)
    changed = teacher_logit_cache(teacher, bundle.train, **{**kw, "teacher_fingerprint": "t2"})
    assert not changed.hit and changed.path != first.path
    assert not teacher_logit_cache(teacher, bundle.train, **{**kw, "transform": "res=16"}).hit
    first.path.write_bytes(b"garbage")  # a damaged entry is recomputed, not trusted
    assert not teacher_logit_cache(teacher, bundle.train, **kw).hit
    assert teacher_logit_cache(teacher, bundle.train, **kw).hit
    assert cache_key("t1", "d1", "none", 96) != cache_key("t1", "d1", "none", 95)


def test_fit_uses_cache_only_for_fixed_views(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    bundle = make_bundle()
    t1 = Teacher()
    r1 = fit(make_student(), Criterion(), bundle, cfg(epochs=1, augment="none"), tmp_path / "1",
             teacher=t1, progress=False)
    t2 = Teacher()
    r2 = fit(make_student(), Criterion(), bundle, cfg(epochs=1, augment="none"), tmp_path / "2",
             teacher=t2, progress=False)
    assert (r1.cache, r2.cache, t2.calls) == ("miss", "hit", 0)
    t3 = Teacher(fingerprint="teacher-v2")
    r3 = fit(make_student(), Criterion(), bundle, cfg(epochs=1, augment="none"), tmp_path / "3",
             teacher=t3, progress=False)
    assert r3.cache == "miss" and t3.calls > 0
    t4 = Teacher()
    r4 = fit(make_student(), Criterion(), bundle, cfg(epochs=1, augment="padcrop"),
             tmp_path / "4", teacher=t4, progress=False)
    assert r4.cache == "live" and t4.calls == 96 // 16  # one live teacher call per batch


def test_indexed_dataset_returns_base_indices():
    ds = IndexedDataset(make_bundle().train, [3, 9])
    assert len(ds) == 2 and ds[1][2] == 9 and torch.equal(ds[1][0], make_bundle().train[9][0])


_DDP_SCRIPT = """
import hashlib, json, os, sys
sys.path.insert(0, {tests!r})
import torch
from test_trainer import make_bundle, make_student, Criterion, Teacher, cfg
from edgekd.distill.trainer import fit
student = make_student(seed=int(os.environ["RANK"]))  # different inits: rank 0's wins
res = fit(student, Criterion(), make_bundle(), cfg(epochs=2), {out!r}, teacher=Teacher(),
          progress=False)
h = hashlib.sha256(b"".join(v.numpy().tobytes() for v in student.state_dict().values()))
open(os.path.join({marks!r}, "rank" + os.environ["RANK"]), "w").write(h.hexdigest())
"""


def test_ddp_two_processes_gloo(tmp_path):
    out, marks = tmp_path / "out", tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out),
                                         marks=str(marks)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", str(script)], capture_output=True, text=True,
                       env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    hashes = {f.read_text() for f in marks.iterdir()}
    assert len(list(marks.iterdir())) == 2 and len(hashes) == 1  # ranks stay in lock-step
    lines = (out / "train.jsonl").read_text().splitlines()
    assert [json.loads(l)["world"] for l in lines] == [2, 2]  # written once per epoch
    assert sorted(f.name for f in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    first = json.loads(lines[0])
    assert first["samples"] == 96  # both shards counted
    assert abs(first["parts"]["kd"] + 0.5 * first["parts"]["ce"] - first["train_loss"]) < 1e-6
