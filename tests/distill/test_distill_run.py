"""edgekd.distill.run.distill: the one fit-restore-deploy entry point."""
from __future__ import annotations


import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from edgekd.distill.run import distill  # noqa: E402
from edgekd.distill.trainer import TrainConfig, load_state  # noqa: E402
from test_trainer import make_bundle  # noqa: E402 - tests/distill is on sys.path under pytest

C, RES = 3, 8
SPEC = "convnet:width=4,res=8"


class _Teacher:
    def __init__(self):
        torch.manual_seed(123)
        self.module = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4),
                                    nn.Flatten(), nn.Linear(32, C)).eval()
        self.fingerprint = "teacher-v1"

    def __call__(self, x):
        return self.module(x)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


CONFIG = {"epochs": 2, "batch_size": 32, "seed": 3}


def test_a_spec_is_built_seeded_and_the_best_epoch_is_deployed(tmp_path):
    bundle, teacher = make_bundle(fingerprint="toy-v1"), _Teacher()
    got = distill(SPEC, teacher, bundle, tmp_path / "a", config=CONFIG, loss="kd", progress=False)
    assert got.model is not None and not got.model.training
    assert isinstance(got.config, TrainConfig) and got.config.seed == 3
    assert len(got.history) == 2 and got.paths["best"].is_file()
    accs = [h["val_acc"] for h in got.history]
    assert got.best_epoch == accs.index(max(accs)) + 1 and got.best_acc == max(accs)
    assert got.last_acc == accs[-1]
    best = load_state(got.paths["best"])["student"]
    assert all(torch.equal(v, best[k]) for k, v in got.model.state_dict().items())
    again = distill(SPEC, teacher, bundle, tmp_path / "b", config=CONFIG, loss="kd",
                    progress=False)
    assert _same_weights(got.model, again.model)  # seeded before the student is built


def test_resuming_a_finished_run_trains_nothing_more(tmp_path):
    bundle, teacher = make_bundle(fingerprint="toy-v1"), _Teacher()
    first = distill(SPEC, teacher, bundle, tmp_path, config=CONFIG, resume=True, progress=False)
    again = distill(SPEC, teacher, bundle, tmp_path, config=CONFIG, resume=True, progress=False)
    assert again.history == first.history and again.best_acc == first.best_acc
    assert _same_weights(first.model, again.model)


def test_the_criterion_is_closed_and_the_deployable_has_no_hooks(tmp_path):
    bundle, teacher = make_bundle(fingerprint="toy-v1"), _Teacher()
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                            nn.AvgPool2d(4), nn.Flatten(), nn.Linear(16, C))
    got = distill(student, teacher, bundle, tmp_path, config={"epochs": 1, "batch_size": 32},
                  loss="rkd", progress=False)  # rkd taps the student's and the teacher's layers
    for model in (student, teacher.module, got.model):
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert got.cache == "live"


def test_plain_training_needs_no_teacher(tmp_path):
    got = distill(SPEC, None, make_bundle(fingerprint="toy-v1"), tmp_path, config={"epochs": 1, "batch_size": 32},
                  loss="ce", progress=False)
    assert got.model(torch.zeros(2, 1, RES, RES)).shape == (2, C) and got.cache == "off"


def test_save_writes_a_checkpoint_that_rebuilds_the_deployable(tmp_path):
    from edgekd.models.checkpoint import load_checkpoint

    bundle = make_bundle(fingerprint="toy-v1")
    got = distill(SPEC, None, bundle, tmp_path / "run", config={"epochs": 1, "batch_size": 32},
                  loss="ce", progress=False)
    path = got.save(tmp_path / "m.pt", spec=SPEC, bundle=bundle, loss="ce")
    again, meta = load_checkpoint(path)
    assert meta["extra"] == {"val_acc": got.best_acc, "loss": "ce", "data": "toy-v1"}
    x = torch.randn(3, 1, RES, RES)
    with torch.no_grad():
        assert torch.equal(again(x), got.model(x))
    _, meta = load_checkpoint(got.save(tmp_path / "t.pt", spec=SPEC, bundle=bundle))
    assert "loss" not in meta["extra"]
