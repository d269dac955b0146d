"""Each backend available here round-trips a tiny model with parity; TensorRT skips with its reason."""
import numpy as np
import pytest
import torch
from torch import nn

from edgekd.backends import get_backend, require_backend
from edgekd.deploy import open_model
from edgekd.errors import BadInputError, RuntimeMissingError
from edgekd.export import check_parity, export_for_target, export_onnx, run_batched
from edgekd.targets import load_target


def tiny_model(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with torch.no_grad():  # non-trivial BN statistics, so outputs are not ~0
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture
def onnx_file(tmp_path):
    return export_onnx(tiny_model(), torch.randn(1, 1, 12, 12), tmp_path / "tiny.onnx", dynamic_batch=True)


@pytest.mark.parametrize("target", ["ort-cpu", pytest.param("openvino-cpu", marks=pytest.mark.openvino)])
def test_onnx_runtimes_round_trip_with_parity(tmp_path, target):
    model = tiny_model()
    x = torch.randn(1, 1, 12, 12)
    art, report = export_for_target(model, x, target, tmp_path / target,
                                    parity_samples=torch.randn(16, 1, 12, 12))
    assert report.passed and report.max_abs_diff < 1e-4 and report.top1_agreement == 1.0
    assert art.path.exists() and len(art.sha256) == 64
    assert (tmp_path / target / "model.onnx").exists()
    if target == "openvino-cpu":
        assert art.path.suffix == ".xml" and art.extra_paths[0].suffix == ".bin"


def test_torch_backend_runs_eager_module():
    t = load_target("torch-cpu")
    model = tiny_model()
    art = get_backend("torch").artifact_for_module(model, t, input_shape=(1, 1, 12, 12))
    sess = get_backend("torch").load(art, t)
    x = np.random.default_rng(0).standard_normal((1, 1, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(sess.run(x)[0], model(torch.from_numpy(x)).detach().numpy(), rtol=1e-6)


def test_torch_backend_refuses_onnx(tmp_path, onnx_file):
    with pytest.raises(BadInputError, match="runs torch models, not ONNX"):
        get_backend("torch").build(onnx_file, load_target("torch-cpu"), tmp_path)


def test_torchscript_file_opens_on_torch_and_exports_for_ort(tmp_path):
    model = tiny_model()
    ts = tmp_path / "m.ts"
    torch.jit.save(torch.jit.trace(model, torch.randn(1, 1, 12, 12)), str(ts))
    from edgekd.models.ref import trust_code

    with trust_code():  # TorchScript holds code: opened only with the opt-in
        op = open_model(ts, load_target("torch-cpu"), sample_shape=(1, 12, 12))
        op2 = open_model(ts, load_target("ort-cpu"), work_dir=tmp_path / "w", sample_shape=(1, 12, 12))
    assert op.artifact.format == "torchscript" and op.input_shape == (1, 1, 12, 12)
    x = np.random.default_rng(1).standard_normal((1, 1, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(op2.session.run(x)[0], op.session.run(x)[0], atol=1e-5)


@pytest.mark.openvino
def test_openvino_fp32_target_really_runs_f32(tmp_path, onnx_file):
    op = open_model(onnx_file, load_target("openvino-cpu"), work_dir=tmp_path, sample_shape=(1, 12, 12))
    assert op.session.inference_precision() == "f32"
    assert op.artifact.format == "openvino-ir"


def test_torch_export_program_opens_on_torch_and_exports_for_ort(tmp_path):
    """A .pt2 program's module refuses eval() (a fixed graph): it opens and exports as it is."""
    model = tiny_model().eval()
    pt2 = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 1, 12, 12),)), str(pt2))
    from edgekd.models.ref import trust_code

    with trust_code():  # a .pt2 program holds code: opened only with the opt-in
        op = open_model(pt2, load_target("torch-cpu"), sample_shape=(1, 12, 12))
        op2 = open_model(pt2, load_target("ort-cpu"), work_dir=tmp_path / "w", sample_shape=(1, 12, 12))
    assert op.artifact.format == "torch-export"
    x = np.random.default_rng(1).standard_normal((1, 1, 12, 12)).astype(np.float32)
    ref = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(op.session.run(x)[0], ref, atol=1e-5)
    np.testing.assert_allclose(op2.session.run(x)[0], ref, atol=1e-5)


def test_parity_failure_is_loud(onnx_file):
    other = tiny_model(seed=1)  # different weights than the exported model
    from edgekd.errors import VerdictError

    with pytest.raises(VerdictError) as ei:
        check_parity(other, onnx_file, torch.randn(8, 1, 12, 12))
    msg = str(ei.value)
    assert "max|diff|" in msg and "cosine" in msg and "top-1 agreement" in msg


def test_run_batched_handles_fixed_batch(tmp_path):
    path = export_onnx(tiny_model(), torch.randn(1, 1, 12, 12), tmp_path / "b1.onnx")
    op = open_model(path, load_target("ort-cpu"))
    x = np.random.default_rng(2).standard_normal((5, 1, 12, 12)).astype(np.float32)
    out = run_batched(op.session, x)
    ref = tiny_model()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_tensorrt_unavailable_here_names_the_package():
    ok, reason = get_backend("tensorrt").available(load_target("tensorrt-fp16"))
    try:
        import tensorrt  # noqa: F401
        has_trt = True
    except ImportError:
        has_trt = False
    if not has_trt:
        assert ok is False and "tensorrt" in reason
        with pytest.raises(RuntimeMissingError, match="tensorrt"):
            require_backend(load_target("tensorrt-int8"))


@pytest.mark.tensorrt
@pytest.mark.parametrize("target", ["tensorrt-fp16"])
def test_tensorrt_round_trip(tmp_path, target):
    model = tiny_model()
    art, report = export_for_target(model, torch.randn(1, 1, 12, 12), target, tmp_path,
                                    parity_samples=torch.randn(8, 1, 12, 12))
    assert art.path.suffix == ".engine" and report.top1_agreement >= 0.9
    assert (tmp_path / "timing.cache").exists()


def test_int8_target_without_quantization_says_how(tmp_path, onnx_file):
    with pytest.raises(BadInputError, match="edgekd quantize"):
        get_backend("onnxruntime").build(onnx_file, load_target("ort-cpu-int8"), tmp_path)


@pytest.mark.openvino
def test_openvino_session_rebinds_new_inputs(tmp_path, onnx_file):
    """The session keeps the last input bound (one infer() per timed run); a different input
    object, or the same array changed in place, must still give that input's outputs."""
    op = open_model(onnx_file, load_target("openvino-cpu"), work_dir=tmp_path, sample_shape=(1, 12, 12))
    model = tiny_model()
    rng = np.random.default_rng(3)
    x1 = rng.standard_normal((1, 1, 12, 12)).astype(np.float32)
    x2 = rng.standard_normal((1, 1, 12, 12)).astype(np.float32)
    ref = lambda x: model(torch.from_numpy(x.copy())).detach().numpy()  # noqa: E731
    first = op.session.run(x1)[0]
    np.testing.assert_allclose(first, ref(x1), atol=1e-5)
    np.testing.assert_allclose(op.session.run(x1)[0], ref(x1), atol=1e-5)
    np.testing.assert_allclose(op.session.run(x2)[0], ref(x2), atol=1e-5)
    x2 *= -1.0  # same object, new content
    np.testing.assert_allclose(op.session.run(x2)[0], ref(x2), atol=1e-5)
    np.testing.assert_allclose(first, ref(x1), atol=1e-5)  # earlier outputs are copies
    with pytest.raises(BadInputError, match="expects shape"):
        op.session.run(np.zeros((1, 3, 12, 12), np.float32))
    np.testing.assert_allclose(op.session.run(x1)[0], ref(x1), atol=1e-5)  # recovers after an error


@pytest.mark.parametrize("target", ["ort-cpu", pytest.param("openvino-cpu", marks=pytest.mark.openvino)])
def test_bench_over_several_loads_reloads_the_built_artifact(tmp_path, onnx_file, target, monkeypatch):
    """sessions: 3 loads the artifact three times (even without a work_dir, where the artifact
    lives in a temporary folder) and pools what each load measured."""
    from edgekd.latency.bench import bench
    from edgekd.targets import MeasureSettings

    spec = load_target(target)
    backend = require_backend(spec)
    loads = []
    real_load = type(backend).load
    monkeypatch.setattr(type(backend), "load", lambda self, art, t: loads.append(art.path) or real_load(self, art, t))
    settings = MeasureSettings(warmup_s=0.0, warmup_iters=10, min_iters=30, min_time_s=0.0, sessions=3)
    r = bench(onnx_file, spec, settings=settings, sample_shape=(1, 12, 12))
    assert len(loads) == 3 and len(set(loads)) == 1  # one artifact, loaded three times
    assert r.stats.n == 30 and r.stats.warmup == 30


@pytest.mark.openvino
def test_signals_after_several_openvino_loads_do_not_crash(tmp_path, onnx_file):
    """Regression: with a Core per session, three loads then a signal to the process was a
    segmentation fault (a trainer stopping on SIGTERM after a verify over 3 loads). In a child
    process, so that a crash fails this test instead of ending the run."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import os, signal
        from edgekd.latency.bench import bench
        from edgekd.targets import MeasureSettings, load_target
        s = MeasureSettings(warmup_s=0.0, min_iters=30, min_time_s=0.0, sessions=4)
        r = bench({str(onnx_file)!r}, load_target("openvino-cpu"), settings=s, sample_shape=(1, 12, 12))
        got = []
        signal.signal(signal.SIGTERM, lambda *a: got.append(1))
        for _ in range(5):
            os.kill(os.getpid(), signal.SIGTERM)
        print(r.stats.n, len(got))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.returncode, res.stderr[-500:])
    assert res.stdout.split() == ["40", "5"]  # 4 loads x 10 samples (the per-load floor), 5 signals
