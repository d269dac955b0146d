"""The foundation commands through the real CLI: exit codes, one-line errors, nothing half-written."""
import json

import pytest
import torch

from edgekd.export import export_onnx

SPEC = "convnet:width=8,depth=2,res=8"


def _one_line_error(res, code, *needles):
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("edgekd: error:")
    for n in needles:
        assert n in err, err


@pytest.fixture
def onnx_path(tmp_path):
    from torch import nn

    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()
    return export_onnx(m, torch.randn(1, 1, 8, 8), tmp_path / "m.onnx")


def test_version_and_help(run_cli):
    res = run_cli("--version")
    assert res.returncode == 0 and "edgekd" in res.stdout and "version" in res.stdout
    for cmd in ("targets", "export", "bench"):
        h = run_cli(cmd, "--help")
        assert h.returncode == 0 and "--json" in h.stdout or cmd == "export" and "--target" in h.stdout


def test_bench_json_has_the_contract_fields(run_cli, onnx_path):
    res = run_cli("bench", onnx_path, "--target", "ort-cpu", "--json", "--min-iters", "50",
                  "--min-time", "0.05", "--warmup", "0.05")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    for k in ("target", "model_sha256", "latency_ms", "first_inference_ms", "build_s", "unstable", "environment"):
        assert k in d
    lat = d["latency_ms"]
    for k in ("p50", "p90", "p99", "mean", "std", "min", "max", "n", "p90_ci"):
        assert k in lat
    assert lat["n"] >= 50 and lat["min"] <= lat["p50"] <= lat["p90"] <= lat["max"]
    assert d["environment"]["runtime"] == "onnxruntime" and d["environment"]["threads"] == 1
    assert len(d["model_sha256"]) == 64


def test_bench_over_several_loads_and_out_of_range_options(run_cli, onnx_path):
    res = run_cli("bench", onnx_path, "--target", "ort-cpu", "--json", "--min-iters", "60",
                  "--min-time", "0", "--warmup", "0", "--sessions", "3")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["latency_ms"]["n"] == 60  # 20 from each of the 3 loads
    _one_line_error(run_cli("bench", onnx_path, "--sessions", "0"), 2, "sessions", "greater than or equal to 1")
    _one_line_error(run_cli("bench", onnx_path, "--min-iters", "3"), 2, "min_iters")


def test_bench_spec_on_torch_eager(run_cli):
    res = run_cli("bench", SPEC, "-t", "torch-cpu", "--json", "--min-iters", "20", "--min-time", "0",
                  "--warmup", "0")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["environment"]["runtime"] == "torch"


def test_bench_spec_with_rgb_input(run_cli):
    res = run_cli("bench", SPEC, "--in-channels", "3", "--json", "--min-iters", "20", "--min-time", "0",
                  "--warmup", "0")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["input_shape"][1] == 3


def test_bench_missing_file(run_cli, tmp_path):
    _one_line_error(run_cli("bench", tmp_path / "nope.onnx"), 2, "does not exist")


def test_bench_truncated_onnx(run_cli, onnx_path, tmp_path):
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(onnx_path.read_bytes()[:200])
    _one_line_error(run_cli("bench", bad), 2, "cut.onnx", "not a valid ONNX model")


def test_bench_unknown_target_lists_known(run_cli, onnx_path):
    _one_line_error(run_cli("bench", onnx_path, "--target", "ort-gpu"), 2, "unknown target 'ort-gpu'", "ort-cpu")


def test_bench_runtime_missing_exit_4(run_cli, onnx_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    _one_line_error(run_cli("bench", onnx_path, "--target", "tensorrt-fp16"), 4, "tensorrt")


def test_bench_wrong_shape(run_cli, onnx_path):
    _one_line_error(run_cli("bench", onnx_path, "--shape", "3,8,8"), 2, "expects shape", "--shape")


def test_bench_xml_on_ort_target_says_which_target(run_cli, tmp_path):
    x = tmp_path / "m.xml"
    x.write_text("<net/>")
    _one_line_error(run_cli("bench", x, "--target", "ort-cpu"), 2, "openvino-cpu")


def test_debug_shows_traceback(run_cli, tmp_path):
    res = run_cli("bench", tmp_path / "nope.onnx", env={"EDGEKD_DEBUG": "1"})
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_export_writes_artifacts_and_json(run_cli, tmp_path):
    out = tmp_path / "ov"
    res = run_cli("export", SPEC, "--target", "openvino-cpu", "--out", out, "--json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["format"] == "openvino-ir" and d["parity"]["passed"]
    assert sorted(p.name for p in out.iterdir()) == ["model.bin", "model.onnx", "model.xml"]


@pytest.mark.parametrize("args,code,needle", [
    (["export", "nope.pt", "--target", "ort-cpu"], 2, "does not exist"),
    (["export", "convnet:width=8,res=8", "--target", "ort-cpuu"], 2, "did you mean 'ort-cpu'"),
    (["export", "convnet:widht=8", "--target", "ort-cpu"], 2, "widht"),
    (["export", "convnet:width=8,res=8", "--target", "ort-cpu", "--shape", "1,9,9"], 2, "contradicts"),
])
def test_export_bad_input_leaves_nothing(run_cli, tmp_path, args, code, needle):
    out = tmp_path / "out"
    _one_line_error(run_cli(*args, "--out", out, cwd=tmp_path), code, needle)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".edgekd-export-")]


def test_export_truncated_onnx_leaves_nothing(run_cli, onnx_path, tmp_path):
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(onnx_path.read_bytes()[:100])
    out = tmp_path / "out"
    _one_line_error(run_cli("export", bad, "--target", "openvino-cpu", "--out", out), 2, "not a valid ONNX")
    assert not out.exists()


def test_export_tensorrt_here_exit_4(run_cli, tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    out = tmp_path / "trt"
    _one_line_error(run_cli("export", SPEC, "--target", "tensorrt-int8", "--out", out), 4, "tensorrt")
    assert not out.exists()


def test_targets_table(run_cli):
    res = run_cli("targets")
    assert res.returncode == 0 and "openvino-cpu" in res.stdout
