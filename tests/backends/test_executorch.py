"""ExecuTorch (XNNPACK): fp32 and INT8 .pte programs built from torch modules, through the same
front door as every runtime; skipped with the reason when executorch is not installed."""
import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.backends import get_backend, require_backend
from edgekd.deploy import export_ref, open_model
from edgekd.errors import BadInputError, RuntimeMissingError
from edgekd.targets import load_target

needs_et = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                              reason="executorch is not installed (pip install 'edgekd[executorch]')")
SPEC = "convnet:width=8,depth=2,res=16"


def test_missing_executorch_is_exit_4_with_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "executorch" else real(name, *a))
    with pytest.raises(RuntimeMissingError) as err:
        require_backend(load_target("executorch-xnnpack"))
    assert err.value.exit_code == 4 and "pip install 'edgekd[executorch]'" in str(err.value)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("et") / "fp32"
    return export_ref(SPEC, load_target("executorch-xnnpack"), out)


@needs_et
def test_fp32_export_is_a_pte_with_parity_and_a_memory_plan(exported):
    art = exported.artifact
    assert art.format == "executorch-pte" and art.path.suffix == ".pte"
    assert (exported.out / art.path.name).exists()  # the artifact moved with its folder
    assert exported.parity.passed and exported.parity.max_abs_diff < 1e-4
    assert art.meta["planned_arena_bytes"] > 0
    assert (exported.out / "model.onnx").exists()  # the hub file is still written beside it


@needs_et
def test_a_pte_file_opens_as_is_and_runs_like_the_module(exported):
    from edgekd.models.ref import spec_module

    opened = open_model(exported.out / "model.pte", load_target("executorch-xnnpack"))
    assert opened.artifact.path == exported.out / "model.pte" and opened.input_shape == (1, 1, 16, 16)
    x = np.random.default_rng(0).standard_normal((1, 1, 16, 16)).astype(np.float32)
    module, _ = spec_module(SPEC)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(opened.session.run(x)[0], want, atol=1e-4)
    with pytest.raises(BadInputError, match="runs on executorch targets"):
        open_model(exported.out / "model.pte", load_target("ort-cpu"))


@needs_et
def test_onnx_is_refused_with_what_to_give(tmp_path):
    from edgekd.export import export_onnx

    onnx = export_onnx(nn.Linear(4, 2).eval(), torch.zeros(1, 4), tmp_path / "m.onnx")
    with pytest.raises(BadInputError, match="runs torch models, not ONNX"):
        open_model(onnx, load_target("executorch-xnnpack"))


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.export cannot capture it
            return x * 2
        return x


@needs_et
def test_a_model_torch_export_cannot_capture_is_one_line_bad_input(tmp_path):
    backend = get_backend("executorch")
    with pytest.raises(BadInputError) as err:
        backend.build_module(Branchy(), torch.zeros(1, 4), load_target("executorch-xnnpack"), tmp_path)
    msg = str(err.value)
    assert "torch.export cannot capture" in msg and "\n" not in msg.split("hint")[0].strip()
    assert not list(tmp_path.glob("*.pte"))


@needs_et
def test_int8_needs_calibration_and_then_agrees_with_fp32(tmp_path):
    from edgekd.models.ref import spec_module

    t8 = load_target("executorch-xnnpack-int8")
    module, shape = spec_module(SPEC)
    sample = torch.zeros((1, *shape))
    backend = get_backend("executorch")
    with pytest.raises(BadInputError, match="calibration"):
        backend.build_module(module, sample, t8, tmp_path)
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((16, *shape)).astype(np.float32)]
    art = backend.build_module(module, sample, t8, tmp_path, calib=calib)
    assert art.path.name == "model.int8.pte" and art.meta["quantizer"] == "xnnpack-pt2e"
    assert art.meta["calib_samples"] == 16
    sess = backend.load(art, t8)
    x = rng.standard_normal((32, *shape)).astype(np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    got = np.concatenate([sess.run(x[i:i + 1])[0] for i in range(len(x))])
    assert np.abs(got - ref).max() < 0.2 * np.abs(ref).max()  # int8 close, not equal
    assert not np.array_equal(got, ref)


@needs_et
def test_int8_keeps_the_head_float_so_close_logits_do_not_tie(tmp_path):
    """XNNPACK's quantizer would make the last layer's output int8 too: logits about 40 wide in
    255 steps, so classes closer than a step tie and argmax takes the lower one."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 40)).eval()
    with torch.no_grad():
        module[3].weight.mul_(8)
    t8 = load_target("executorch-xnnpack-int8")
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((64, 3, 4, 4)).astype(np.float32)]
    backend = get_backend("executorch")
    art = backend.build_module(module, torch.zeros((1, 3, 4, 4)), t8, tmp_path, calib=calib)
    sess = backend.load(art, t8)
    x = rng.standard_normal((300, 3, 4, 4)).astype(np.float32)
    got = np.concatenate([sess.run(x[i:i + 1])[0] for i in range(len(x))])
    top2 = np.sort(got, axis=1)[:, -2:]
    assert not (top2[:, 0] == top2[:, 1]).any()
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    assert not np.allclose(got, ref, atol=1e-4)  # the first layer still ran in int8
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.9


@needs_et
def test_quantize_compares_int8_with_the_fp32_program_on_executorch(tmp_path):
    """The faster-than-fp32 guard runs on ExecuTorch too: both sides measured on its runtime,
    the checkpoint (not the ONNX file) quantized. force=True: the outcome is not timing's."""
    from edgekd.models.checkpoint import save_checkpoint
    from edgekd.models.ref import spec_module
    from edgekd.quantize import quantize_model
    from edgekd.targets import MeasureSettings

    module, shape = spec_module(SPEC)
    ckpt = save_checkpoint(tmp_path / "m.pt", module, spec=SPEC, num_classes=10, in_channels=1,
                           input_shape=shape)
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((16, *shape)).astype(np.float32)]
    x, y = rng.standard_normal((8, *shape)).astype(np.float32), rng.integers(0, 10, 8)
    fast = MeasureSettings(warmup_s=0.0, warmup_iters=2, min_iters=20, min_time_s=0.0)
    rep = quantize_model(ckpt, "executorch-xnnpack-int8", tmp_path / "out", calib, (x, y),
                         rounds=1, settings=fast, force=True)
    assert rep.fp32.target == "executorch-xnnpack" and rep.int8.target == "executorch-xnnpack-int8"
    assert rep.fp32.p50 > 0 and rep.int8.p50 > 0 and rep.kept
    assert rep.artifact.path == tmp_path / "out" / "m.int8.pte" and rep.artifact.path.exists()
    with pytest.raises(BadInputError, match="not model.onnx"):
        get_backend("executorch").quantize(_onnx(tmp_path), load_target("executorch-xnnpack-int8"),
                                           tmp_path, calib)


def _onnx(tmp_path):
    from edgekd.export import export_onnx

    return export_onnx(nn.Linear(4, 2).eval(), torch.zeros(1, 4), tmp_path / "model.onnx")


@needs_et
def test_verify_reads_a_pte_input_size_and_holds_it_to_a_size_budget(exported, tmp_path):
    from edgekd.targets import MeasureSettings
    from edgekd.verify import verify_artifact

    rng = np.random.default_rng(0)
    y = np.arange(20) % 10
    data = tmp_path / "d.npz"
    np.savez(data, x_train=rng.random((20, 1, 16, 16), dtype=np.float32), y_train=y,
             x_val=rng.random((20, 1, 16, 16), dtype=np.float32), y_val=y)
    pte = exported.out / "model.pte"
    fast = MeasureSettings(warmup_s=0.0, warmup_iters=2, min_iters=10, min_time_s=0.0)
    rep = verify_artifact(pte, "executorch-xnnpack", f"npz:{data}", max_size_kb=0.5, settings=fast)
    c = next(c for c in rep.checks if c.name == "size")
    assert rep.n_val == 20 and c.verdict == "fail" and "(executorch-pte) vs max 0.5 KB" in c.detail
