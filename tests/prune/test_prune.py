"""edgekd.prune: ratio pruning, pruned checkpoints, budget mode, `edgekd prune` CLI."""
from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from edgekd.errors import BadInputError, VerdictError
from edgekd.models import build_model, count_macs_params
from edgekd.models.checkpoint import load_checkpoint, save_checkpoint
from edgekd.prune import (apply_shapes, load_pruned, prune_model, prune_to_budget,
                          pruned_shapes, save_pruned)

SPEC = "resnet:width=16,blocks=1,res=16"
SHAPE = (1, 16, 16)


def _model(spec=SPEC):
    torch.manual_seed(0)
    return build_model(spec, num_classes=10, in_channels=1).eval()


def _x(n=1):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(1))


def _convs(model):
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_ratio_shrinks_macs_keeps_classifier_outputs():
    model = _model()
    macs0, params0 = count_macs_params(model, SHAPE)
    out = prune_model(model, _x(), ratio=0.5, round_to=1)
    macs1, params1 = count_macs_params(out, SHAPE)
    assert macs1 < 0.6 * macs0 and params1 < params0
    assert out.classifier.out_features == 10
    assert out(_x(3)).shape == (3, 10)


@pytest.mark.parametrize("importance", ["l1", "lamp", "bn", "taylor"])
def test_importances_run(importance):
    batch = (_x(8), torch.arange(8) % 10)
    model = prune_model(_model(), _x(), ratio=0.4, importance=importance, round_to=1,
                        taylor_batch=batch)
    assert model(_x(2)).shape == (2, 10)


def test_round_to_respected():
    model = prune_model(_model("resnet:width=32,blocks=1,res=16"), _x(), ratio=0.3, round_to=8)
    widths = _convs(model)
    assert widths and all(w % 8 == 0 for w in widths.values()), widths


def test_keep_leaves_module_alone():
    model = _model()
    before = _convs(model)
    name = next(iter(before))
    out = prune_model(model, _x(), ratio=0.5, round_to=1, keep=[name])
    assert out.get_submodule(name).out_channels == before[name]
    with pytest.raises(BadInputError, match="no.such"):
        prune_model(_model(), _x(), ratio=0.5, keep=["no.such"])


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_bad_ratio(ratio):
    with pytest.raises(BadInputError, match="outside"):
        prune_model(_model(), _x(), ratio=ratio)


def test_emptied_layer_is_named(monkeypatch):
    import torch_pruning as tp

    # torch-pruning itself keeps >= round_to channels; simulate a step that empties a layer
    real_step = tp.pruner.MetaPruner.step

    def step(self, *a, **kw):
        real_step(self, *a, **kw)
        conv = self.model.features[0][0] if isinstance(self.model.features[0], nn.Sequential) \
            else next(m for m in self.model.modules() if isinstance(m, nn.Conv2d))
        tp.prune_conv_out_channels(conv, list(range(1, conv.out_channels)))

    monkeypatch.setattr(tp.pruner.MetaPruner, "step", step)
    with pytest.raises(BadInputError, match="leaves layer .* 1 channel"):
        prune_model(_model(), _x(), ratio=0.3, round_to=8)


def test_no_rounding_keeps_at_least_one_channel():
    model = prune_model(_model(), _x(), ratio=0.99, round_to=None, global_pruning=True)
    assert min(_convs(model).values()) >= 1 and model(_x(1)).shape == (1, 10)


def test_taylor_needs_batch():
    with pytest.raises(BadInputError, match="taylor"):
        prune_model(_model(), _x(), ratio=0.3, importance="taylor")


def test_save_load_round_trip_weights_only(tmp_path, monkeypatch):
    model = prune_model(_model(), _x(), ratio=0.5, round_to=4)
    path = save_pruned(tmp_path / "p.pt", model, spec=SPEC, num_classes=10, in_channels=1,
                       input_shape=SHAPE)
    calls = []
    real = torch.load

    def spy(*a, **kw):
        calls.append(kw.get("weights_only"))
        return real(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    again, meta = load_pruned(path)
    assert calls and all(c is True for c in calls)
    assert meta["extra"]["pruned"] == pruned_shapes(model)
    with torch.no_grad():
        assert torch.equal(model(_x(4)), again(_x(4)))
    same, _ = load_checkpoint(path)  # the plain loader restores the shapes too
    assert pruned_shapes(same) == pruned_shapes(model)


def test_unpruned_checkpoint_unchanged(tmp_path):
    model = _model()
    save_checkpoint(tmp_path / "m.pt", model, spec=SPEC, num_classes=10, in_channels=1,
                    input_shape=SHAPE)
    again, meta = load_checkpoint(tmp_path / "m.pt")
    assert "pruned" not in meta["extra"] and pruned_shapes(again) == pruned_shapes(model)


def test_apply_shapes_rejects_mismatch():
    with pytest.raises(BadInputError, match="lacks"):
        apply_shapes(_model(), {"nope": {"type": "bn2d", "num_features": 3}})


# ------------------------------------------------------------------ budget mode

@pytest.fixture(scope="module")
def bundle():
    from edgekd.data import load_data

    return load_data("digits", resolution=16)


def _fake_latency(model):
    """Deterministic 'latency': 1 ms per million MACs."""
    ms = count_macs_params(model, SHAPE)[0] / 1e6
    return types.SimpleNamespace(p50=ms * 0.9, p90=ms, p99=ms * 1.1, mean=ms)


def test_budget_stops_at_first_ratio_meeting_it(bundle):
    model = _model("resnet:width=32,blocks=1,res=16")
    full = _fake_latency(model).p90
    budget = 0.6 * full
    res = prune_to_budget(model, None, bundle, "ort-cpu", budget, step=0.1, finetune_epochs=0,
                          round_to=1, latency_fn=_fake_latency)
    assert res.met and res.after["p90"] <= budget
    ratios = [s["ratio"] for s in res.steps]
    assert ratios[-1] == res.ratio and res.steps[-1]["p90"] <= budget
    assert all(s["p90"] > budget for s in res.steps[:-1])
    assert ratios == [0.0] + [round(0.1 * i, 6) for i in range(1, len(ratios))]
    assert res.model.classifier.out_features == 10
    assert res.acc_finetuned is None and 0 <= res.acc_pruned <= 1


def test_budget_min_accuracy_stop_keeps_best(bundle):
    model = _model("resnet:width=32,blocks=1,res=16")
    budget = 0.05 * _fake_latency(model).p90  # needs heavy pruning
    with pytest.raises(VerdictError, match="min-accuracy") as info:
        prune_to_budget(model, None, bundle, "ort-cpu", budget, finetune_epochs=0,
                        round_to=1, min_accuracy=0.99, latency_fn=_fake_latency)
    res = info.value.result
    assert not res.met and res.ratio == 0.0  # nothing pruned kept the accuracy
    res2 = prune_to_budget(model, None, bundle, "ort-cpu", budget, finetune_epochs=0,
                           round_to=1, min_accuracy=0.99, latency_fn=_fake_latency,
                           strict=False)
    assert not res2.met and "kept" in res2.message


def test_budget_unreachable_keeps_fastest(bundle):
    model = _model()
    res = prune_to_budget(model, None, bundle, "ort-cpu", 1e-9, step=0.3, max_ratio=0.6,
                          finetune_epochs=0, round_to=1, latency_fn=_fake_latency,
                          strict=False)
    assert not res.met and res.ratio == 0.6
    assert res.after["p90"] == min(s["p90"] for s in res.steps)


# ------------------------------------------------------------------ CLI

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("prune") / "m.pt"
    save_checkpoint(path, _model(), spec=SPEC, num_classes=10, in_channels=1, input_shape=SHAPE)
    return path


def test_cli_ratio_writes_files(run_cli, ckpt, tmp_path):
    import json

    r = run_cli("prune", str(ckpt), "--teacher", str(ckpt), "--data", "digits", "--ratio", "0.5",
                "--epochs", "1", "--round-to", "4", "--out", str(tmp_path / "o"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["after"]["macs"] < out["before"]["macs"]
    assert out["acc_finetuned"] is not None
    assert (tmp_path / "o" / "pruned.pt").is_file() and (tmp_path / "o" / "pruned.onnx").is_file()
    model, meta = load_pruned(tmp_path / "o" / "pruned.pt")
    assert meta["extra"]["pruned"] and model(_x(1)).shape == (1, 10)


@pytest.mark.parametrize("args, needle", [
    (["--ratio", "1.5"], "--ratio"),
    (["--ratio", "0.3", "--budget-ms", "1", "--target", "ort-cpu"], "exactly one"),
    (["--budget-ms", "1"], "--target"),
    (["--ratio", "0.3", "--keep", "no.such"], "no.such"),
])
def test_cli_bad_inputs(run_cli, ckpt, tmp_path, args, needle):
    r = run_cli("prune", str(ckpt), "--teacher", str(ckpt), "--data", "digits", "--epochs", "0",
                "--out", str(tmp_path / "o"), *args)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr


def test_pruned_checkpoint_loads_as_a_teacher(tmp_path):
    import torch

    from edgekd.models import build_model
    from edgekd.models.teacher import load_teacher
    from edgekd.prune import prune_model, save_pruned

    spec = "convnet:width=16,depth=2,res=8"
    model = build_model(spec, num_classes=10, in_channels=1).eval()
    prune_model(model, torch.randn(1, 1, 8, 8), ratio=0.5, round_to=4)
    path = save_pruned(tmp_path / "p.pt", model, spec=spec, num_classes=10, in_channels=1, input_shape=(1, 8, 8))
    teacher = load_teacher(str(path))
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), model(x))


def test_recalibrate_bn_reestimates_statistics_on_data():
    from edgekd.data.base import ArrayDataset
    from edgekd.prune import recalibrate_bn

    torch.manual_seed(0)
    conv, bn = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4, momentum=0.3)
    model = nn.Sequential(conv, bn).eval()
    bn.running_mean.fill_(5.0)  # stale statistics, as after pruning
    bn.running_var.fill_(100.0)
    x = torch.randn(300, 1, 8, 8) * 2 + 1
    ds = ArrayDataset(x, torch.zeros(300), classes=["a"])
    out = recalibrate_bn(model, ds, samples=1000, batch_size=100)  # 3 equal batches
    assert out is model and not model.training and bn.momentum == 0.3
    with torch.no_grad():
        feats = conv(x)
    torch.testing.assert_close(bn.running_mean, feats.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    # each batch's unbiased variance, averaged: close to the whole set's
    torch.testing.assert_close(bn.running_var, feats.var(dim=(0, 2, 3)), rtol=0.05, atol=0.05)


def test_budget_mode_recalibrates_each_pruned_candidate(bundle, monkeypatch):
    import edgekd.prune.budget as P  # where prune_to_budget looks the helper up

    seen = []
    real = P.recalibrate_bn
    monkeypatch.setattr(P, "recalibrate_bn", lambda m, ds, n: seen.append(n) or real(m, ds, n))
    model = _model("resnet:width=32,blocks=1,res=16")
    budget = 0.6 * _fake_latency(model).p90
    res = prune_to_budget(model, None, bundle, "ort-cpu", budget, finetune_epochs=0, round_to=1,
                          latency_fn=_fake_latency, recalibrate=64)
    assert seen == [64] * (len(res.steps) - 1) and res.met
    seen.clear()
    prune_to_budget(model, None, bundle, "ort-cpu", budget, finetune_epochs=0, round_to=1,
                    latency_fn=_fake_latency, recalibrate=0)
    assert seen == []


def test_budget_pass_on_the_short_protocol_is_confirmed_with_the_targets(bundle, monkeypatch):
    import edgekd.prune.budget as P  # where prune_to_budget looks the helper up

    def measure(model, shape, target, settings=None):
        v = _fake_latency(model)
        if settings is not None:  # the target's own protocol: 30% slower than the short one here
            return types.SimpleNamespace(**{k: getattr(v, k) * 1.3 for k in ("p50", "p90", "p99", "mean")})
        return v

    monkeypatch.setattr(P, "measure_model", measure)
    model = _model("resnet:width=32,blocks=1,res=16")
    full = _fake_latency(model).p90
    budget = 0.6 * full
    res = prune_to_budget(model, None, bundle, "ort-cpu", budget, finetune_epochs=0, round_to=1)
    short_pass = next(s for s in res.steps if _fake_latency_at(model, s["ratio"]) <= budget)
    assert short_pass.get("protocol") == "target" and short_pass["p90"] > budget  # rejected
    assert res.met and res.ratio > short_pass["ratio"]
    assert res.steps[-1]["protocol"] == "target" and res.after["p90"] == res.steps[-1]["p90"] <= budget
    assert all("protocol" not in s for s in res.steps if s["ratio"] < short_pass["ratio"])


def _fake_latency_at(model, ratio):
    import copy

    if ratio == 0:
        return _fake_latency(model).p90
    return _fake_latency(prune_model(copy.deepcopy(model), _x(), ratio=ratio, round_to=1)).p90


def test_budget_metric_is_one_of_the_verdict_metrics(bundle):
    with pytest.raises(BadInputError, match="unknown latency metric 'p95'") as info:
        prune_to_budget(_model(), None, bundle, "ort-cpu", 1.0, metric="p95",
                        finetune_epochs=0, latency_fn=_fake_latency)
    assert "p50, p90, p99, mean" in info.value.hint


def test_loading_a_pruned_checkpoint_does_not_import_prune(tmp_path):
    import subprocess
    import sys

    model = prune_model(_model(), _x(), ratio=0.5, round_to=4)
    path = save_pruned(tmp_path / "p.pt", model, spec=SPEC, num_classes=10, in_channels=1,
                       input_shape=SHAPE)
    code = ("import sys; from edgekd.models.checkpoint import load_checkpoint; "
            f"m, meta = load_checkpoint({str(path)!r}); "
            "assert meta['extra']['pruned'] and 'edgekd.prune' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


class _FixedReshape(nn.Module):
    """A block whose forward reshapes by a channel count fixed at construction (as attention
    layers do with their head sizes): pruning its conv leaves it unable to run."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.classifier = nn.Linear(16 * 8 * 8, 3)

    def forward(self, x):
        return self.classifier(self.conv(x).reshape(x.shape[0], 16 * 8 * 8))


def test_a_model_pruning_breaks_is_one_line_bad_input():
    with pytest.raises(BadInputError, match="torch-pruning cannot prune this model") as err:
        prune_model(_FixedReshape(), torch.zeros(1, 1, 8, 8), ratio=0.5)
    assert "\n" not in str(err.value) and "--prune off" in str(err.value)
