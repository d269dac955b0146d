"""Quantization-aware distillation on tiny models: fake quantizers sit where the INT8 graph
quantizes, the export keeps the graph's structure, the bad inputs, and resuming a killed run."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.errors import BadInputError

RES, C = 8, 4


class Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def make_bundle(n_train=64, n_val=32, fingerprint="qad-toy"):
    g = torch.Generator().manual_seed(0)

    def part(n):
        y = torch.arange(n) % C
        x = 0.3 * torch.randn(n, 1, RES, RES, generator=g)
        for c in range(C):  # a class is a bright row band
            x[y == c, :, 2 * c:2 * c + 2, :] += 1.0
        return x, y

    xt, yt = part(n_train)
    xv, yv = part(n_val)
    return SimpleNamespace(name="toy", train=Pairs(xt, yt), val=Pairs(xv, yv), num_classes=C,
                           in_channels=1, input_shape=(1, RES, RES), fingerprint=fingerprint,
                           class_names=[str(c) for c in range(C)], n_skipped=0,
                           labelled_indices=list(range(n_train)))


class Block(nn.Module):
    """Depthwise + pointwise with a residual add (what MobileNet-style students have)."""

    def __init__(self, c):
        super().__init__()
        self.dw = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                                nn.BatchNorm2d(c), nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.pw(self.dw(x))


def make_student(seed=0, classes=C):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), Block(8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(8, classes)).eval()


def toy_teacher(classes=C):
    from edgekd.models.teacher import _torch_teacher

    torch.manual_seed(1)
    m = nn.Sequential(nn.Flatten(1), nn.Linear(RES * RES, classes))
    return _torch_teacher(m, spec="toy", fingerprint=f"toy-teacher-{classes}", device="cpu",
                          num_classes=classes, input_shape=(1, RES, RES))


def qdq_for(gm, tmp_path, calib):
    from edgekd.backends.onnxruntime_quant import quantize_onnx_static
    from edgekd.export import export_onnx

    fp32 = export_onnx(gm, torch.from_numpy(calib[:1]), tmp_path / "s.onnx", dynamic_batch=True)
    return fp32, quantize_onnx_static(fp32, tmp_path / "s.int8.onnx", [calib])


def test_fake_quant_placement_matches_the_int8_graph(tmp_path):
    from edgekd.export import check_parity
    from edgekd.quantize.qad import prepare_qat
    from edgekd.quantize.qad_graph import quantized_ops, structure, write_weights
    from edgekd.quantize.qad_torch import FakeQuantAct, QuantConv, QuantLinear, fold_batchnorm

    student = make_student()
    gm = fold_batchnorm(student)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    calib = make_bundle().train.x[:32].numpy()
    _, qdq = qdq_for(gm, tmp_path, calib)
    prep = prepare_qat(gm, qdq, calib)
    fqs = [m for m in prep.model.modules() if isinstance(m, FakeQuantAct)]
    wq = [m for m in prep.model.modules() if isinstance(m, (QuantConv, QuantLinear))]
    # one fake quantizer per quantized tensor, one per quantized weight: the same set of ops
    assert len(fqs) == len(prep.plan.acts) and len(wq) == len(prep.plan.weights) == 4
    # what the export writes back trains: every weight and bias, those BatchNorm folding made
    # included (folding creates them as parameters that do not require a gradient)
    assert all(m.weight.requires_grad and m.bias is not None and m.bias.requires_grad for m in wq)
    assert sorted({prep.placement.acts[a.tensor] for a in prep.plan.acts}) == sorted(
        n.args[0].name for n in prep.model.graph.nodes if n.op == "call_module"
        and n.target.startswith("qad_fq"))
    assert quantized_ops(qdq).count("Conv") == 3 and "Gemm" in quantized_ops(qdq)
    assert "Add" in quantized_ops(qdq)
    # the fake-quantized student computes what the INT8 graph computes
    x = make_bundle().val.x
    par = check_parity(prep.model, qdq, x, check_values=False, raise_on_fail=False)
    assert par.cosine > 0.999 and par.top1_agreement >= 0.95
    # weights moved: written back into the same graph, only initializer values differ
    with torch.no_grad():
        for m in wq:
            m.weight.mul_(1.1)
    out = write_weights(prep.plan, prep.placement, prep.model, qdq, tmp_path / "qad.int8.onnx")
    assert structure(out) == structure(qdq)
    assert quantized_ops(out) == quantized_ops(qdq)
    par = check_parity(prep.model, out, x, check_values=False, raise_on_fail=False)
    assert par.cosine > 0.999
    import onnx
    from onnx import numpy_helper

    before = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(qdq)).graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert changed and all("weight" in k or "bias" in k for k in changed)


def test_qad_keeps_the_ptq_graph_structure_and_records_both(tmp_path):
    from edgekd.quantize.qad import qad_model
    from edgekd.quantize.qad_graph import structure

    rep = qad_model(make_student(), toy_teacher(), make_bundle(), "ort-cpu-int8", tmp_path / "o",
                    qat="always", epochs=1, rounds=1, calib_size=32, force=True)
    assert rep.qad is not None and rep.train["epochs"] == 1 and rep.parity["passed"]
    # the folded student trains without BatchNorm: its gradient norm is clipped unless told
    assert rep.train["grad_clip"] == 5.0
    assert rep.kept and rep.artifact.path.is_file() and rep.artifact.path.parent == tmp_path / "o"
    assert structure(rep.artifact.path) == structure(tmp_path / "o" / "qad" / "placement.int8.onnx")
    d = rep.to_dict()
    assert d["ptq"]["int8"]["accuracy"] is not None and d["qad"]["int8"]["accuracy"] is not None
    assert d["ptq"]["int8"]["p50_ms"] > 0 and d["qad"]["int8"]["p50_ms"] > 0
    assert len(list((tmp_path / "o").glob("*.int8.quant.json"))) == 1


def test_qat_off_and_auto_within_drop_do_not_train(tmp_path):
    from edgekd.quantize.qad import qad_model

    rep = qad_model(make_student(), toy_teacher(), make_bundle(), "ort-cpu-int8", tmp_path / "o",
                    qat="auto", max_drop=0.99, epochs=1, rounds=1, calib_size=32, force=True)
    assert rep.qad is None and rep.chosen == "ptq" and "within" in rep.reason


@pytest.mark.parametrize("kw, words", [
    (dict(qat="always", epochs=0), "--qat-epochs 0"),
    (dict(qat="sometimes", epochs=1), "--qat 'sometimes'"),
    (dict(qat="auto", epochs=1, teacher=None), "needs a teacher"),
])
def test_bad_options_are_one_line(kw, words):
    from edgekd.quantize.qad import check_options

    kw = {"loss": "kd", "teacher": object(), **kw}
    with pytest.raises(BadInputError, match=words.replace("(", r"\(").replace("'", "'")):
        check_options(kw["qat"], kw["epochs"], kw["loss"], kw["teacher"])


def test_target_without_int8_twin_and_class_mismatch(tmp_path):
    from edgekd.quantize.qad import qad_model

    with pytest.raises(BadInputError, match="not int8"):
        qad_model(make_student(), toy_teacher(), make_bundle(), "ort-cpu", tmp_path, qat="always", epochs=1)
    with pytest.raises(BadInputError, match="teacher predicts 3 classes"):
        qad_model(make_student(), toy_teacher(classes=3), make_bundle(), "ort-cpu-int8", tmp_path,
                  qat="always", epochs=1)
    with pytest.raises(BadInputError, match="student predicts 5 classes"):
        qad_model(make_student(classes=5), toy_teacher(), make_bundle(), "ort-cpu-int8", tmp_path,
                  qat="always", epochs=1)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.gate = Gate()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(4, C))

    def forward(self, x):
        return self.head(self.gate(self.stem(x)))


class Gate(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x  # data-dependent: torch.fx cannot trace it


def test_a_model_the_quantizer_cannot_prepare_names_the_layer():
    from edgekd.quantize.qad_torch import fold_batchnorm

    with pytest.raises(BadInputError, match="layer 'gate'"):
        fold_batchnorm(Branchy().eval())


def test_resume_after_an_interruption_mid_epoch(tmp_path, monkeypatch):
    """The QAD run checkpoints like distillation: interrupted in its second epoch, it resumes
    from the saved state (the first epoch is not trained again)."""
    from edgekd.distill import trainer
    from edgekd.errors import WorkInterrupted
    from edgekd.quantize.qad import qad_model

    calls = {"n": 0}
    real_batch = trainer.epoch_batches

    def batches(n, config, epoch, rank, world):
        calls["n"] += 1
        if epoch == 1 and calls["n"] == 3:  # epoch 0 (sizing + loop), then epoch 1
            import signal

            signal.raise_signal(signal.SIGINT)
        return real_batch(n, config, epoch, rank, world)

    monkeypatch.setattr(trainer, "epoch_batches", batches)
    args = (make_bundle(), "ort-cpu-int8", tmp_path / "o")
    with pytest.raises(WorkInterrupted):
        qad_model(make_student(), toy_teacher(), *args, qat="always", epochs=2, rounds=1,
                  calib_size=32, force=True)
    import json

    log = (tmp_path / "o" / "qad" / "train.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in log] == [1]
    first = json.loads(log[0])
    monkeypatch.setattr(trainer, "epoch_batches", real_batch)
    rep = qad_model(make_student(), toy_teacher(), *args, qat="always", epochs=2, rounds=1,
                    calib_size=32, force=True, resume=True)
    log = [json.loads(r) for r in (tmp_path / "o" / "qad" / "train.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and log[0] == first and rep.train["epochs"] == 2


def test_cli_refuses_bad_qad_inputs_in_one_line(tmp_path, run_cli):
    from edgekd.models import build_model
    from edgekd.models.checkpoint import save_checkpoint

    spec = f"convnet:width=4,depth=1,res={RES}"
    save_checkpoint(tmp_path / "s.pt", build_model(spec, num_classes=10, in_channels=1).eval(),
                    spec=spec, num_classes=10, in_channels=1, input_shape=(1, RES, RES))
    base = ["quantize", tmp_path / "s.pt", "-t", "ort-cpu-int8", "--data", "digits", "--out",
            tmp_path / "o"]
    r = run_cli(*base, "--qat", "always", "--qat-epochs", "0", "--teacher", tmp_path / "s.pt")
    assert r.returncode == 2 and "--qat-epochs 0" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(*base, "--qat", "always")
    assert r.returncode == 2 and "needs a teacher" in r.stderr
    (tmp_path / "m.onnx").write_bytes(b"")
    r = run_cli("quantize", tmp_path / "m.onnx", "-t", "ort-cpu-int8", "--data", "digits",
                "--out", tmp_path / "o", "--qat", "always", "--teacher", tmp_path / "s.pt")
    assert r.returncode == 2 and "not an edgekd checkpoint" in r.stderr
    r = run_cli(*base[:3], "ort-cpu", *base[4:], "--teacher", tmp_path / "s.pt")
    assert r.returncode == 2 and "not int8" in r.stderr


def test_cli_resumes_after_sigkill_mid_run(tmp_path):
    """`edgekd quantize --qat always` killed with SIGKILL once its first QAD epoch is saved,
    then run again with --resume: the saved epoch is kept, the rest is trained, the INT8 kept."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from edgekd.models import build_model
    from edgekd.models.checkpoint import save_checkpoint

    spec = f"convnet:width=4,depth=1,res={RES}"
    save_checkpoint(tmp_path / "s.pt", build_model(spec, num_classes=10, in_channels=1).eval(),
                    spec=spec, num_classes=10, in_channels=1, input_shape=(1, RES, RES))
    out = tmp_path / "o"
    args = [sys.executable, "-m", "edgekd", "quantize", str(tmp_path / "s.pt"), "-t", "ort-cpu-int8",
            "--data", "digits", "--out", str(out), "--qat", "always", "--qat-epochs", "4",
            "--teacher", str(tmp_path / "s.pt"), "--keep-slower", "--rounds", "1", "--batch-size", "8"]
    env = {k: v for k, v in os.environ.items() if k != "EDGEKD_DEBUG"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    log = out / "qad" / "train.jsonl"
    killed = False
    for _ in range(30000):
        if proc.poll() is not None:
            break
        if log.is_file() and log.read_text().strip():
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.01)
    proc.wait()
    assert killed, "the run finished before its first epoch was seen"
    first = [json.loads(r) for r in log.read_text().splitlines()]
    assert 1 <= len(first) < 4
    r = subprocess.run(args + ["--resume", "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    hist = [json.loads(x) for x in log.read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4] and hist[:len(first)] == first
    assert len(list(out.glob("*.int8.onnx"))) == 1


@pytest.mark.skipif(__import__("importlib").util.find_spec("openvino") is None
                    or __import__("importlib").util.find_spec("nncf") is None,
                    reason="openvino/nncf not installed")
def test_qad_for_openvino_builds_an_int8_ir_from_the_qdq_graph(tmp_path):
    from edgekd.backends.openvino_quant import count_fake_quantize
    from edgekd.quantize.qad import qad_model

    rep = qad_model(make_student(), toy_teacher(), make_bundle(), "openvino-cpu-int8", tmp_path / "o",
                    qat="always", epochs=1, rounds=1, calib_size=32, force=True)
    assert rep.ptq.method.startswith("nncf") and rep.qad.method == "qad:kd"
    art = rep.qad.artifact
    assert str(art.path).endswith(".xml") and count_fake_quantize(art.path) > 0
    assert rep.parity["passed"] and rep.qad.int8.accuracy is not None
