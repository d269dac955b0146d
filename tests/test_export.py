"""torch -> ONNX export, parity reports, export_for_target per runtime, open_model's refusals and
`edgekd export` end to end."""
import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgekd.backends import get_backend
from edgekd.deploy import open_model
from edgekd.models.ref import build_spec_model
from edgekd.errors import BadInputError, VerdictError
from edgekd.export import check_parity, export_for_target, export_onnx, onnx_metadata
from edgekd.targets import load_target


def tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 10)).eval()


def leftovers(d):
    return [p.name for p in d.iterdir() if p.name.startswith(".")]


def test_export_onnx_is_checked_opset17_and_keeps_train_mode(tmp_path):
    m = tiny().train()
    p = export_onnx(m, torch.randn(1, 1, 8, 8), tmp_path / "m.onnx", metadata={"edgekd.spec": "x"})
    proto = onnx.load(str(p))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in proto.graph.input] == ["input"] and proto.graph.output[0].name == "logits"
    assert onnx_metadata(p)["edgekd.spec"] == "x"
    assert m.training  # restored after exporting in eval mode
    assert leftovers(tmp_path) == []


def test_export_onnx_wrong_shape_names_it_and_writes_nothing(tmp_path):
    with pytest.raises(BadInputError) as ei:
        export_onnx(tiny(), torch.randn(1, 3, 8, 8), tmp_path / "m.onnx")
    msg = str(ei.value)
    assert "(1, 3, 8, 8)" in msg and "--shape" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_export_onnx_rejects_old_opset(tmp_path):
    with pytest.raises(BadInputError, match="opset 13"):
        export_onnx(tiny(), torch.randn(1, 1, 8, 8), tmp_path / "m.onnx", opset=13)


def test_dynamic_batch_runs_any_batch(tmp_path):
    m = tiny()
    p = export_onnx(m, torch.randn(1, 1, 8, 8), tmp_path / "m.onnx", dynamic_batch=True)
    op = open_model(p, load_target("ort-cpu"))
    assert op.input_shape == (1, 1, 8, 8) and not isinstance(op.session.input_shapes[0][0], int)
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(op.session.run(x)[0], m(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_dynamo_exporter_also_works(tmp_path):
    m = tiny()
    p = export_onnx(m, torch.randn(1, 1, 8, 8), tmp_path / "d.onnx", exporter="dynamo")
    rep = check_parity(m, p, torch.randn(4, 1, 8, 8))
    assert rep.passed and rep.n == 4


def test_parity_report_numbers_and_session_reference(tmp_path):
    m = tiny()
    p = export_onnx(m, torch.randn(1, 1, 8, 8), tmp_path / "m.onnx")
    rep = check_parity(m, p, torch.randn(6, 1, 8, 8))
    d = rep.to_dict()
    assert {"max_abs_diff", "mean_abs_diff", "cosine", "top1_agreement", "n", "passed"} <= set(d)
    assert d["n"] == 6 and d["passed"] and d["max_abs_diff"] < 1e-5 and d["cosine"] > 0.99999
    # a Session can be the reference too (ONNX Runtime vs itself here)
    ort = open_model(p, load_target("ort-cpu")).session
    assert check_parity(ort, ort, np.zeros((2, 1, 8, 8), np.float32)).max_abs_diff == 0.0
    bad = check_parity(tiny(seed=3), p, torch.randn(6, 1, 8, 8), raise_on_fail=False)
    assert not bad.passed and bad.max_abs_diff > 1e-3
    with pytest.raises(VerdictError):
        check_parity(tiny(seed=3), p, torch.randn(6, 1, 8, 8))


def test_export_for_torch_target_writes_torchscript_and_checks_it(tmp_path):
    art, rep = export_for_target(tiny(), torch.randn(1, 1, 8, 8), "torch-cpu", tmp_path,
                                 parity_samples=torch.randn(8, 1, 8, 8))
    assert art.format == "torchscript" and art.path == tmp_path / "model.ts" and art.path.exists()
    assert (tmp_path / "model.onnx").exists() and "module" not in art.meta
    assert rep.passed and rep.n == 8 and art.meta["parity"]["n"] == 8
    assert len(art.meta["onnx_sha256"]) == 64
    sess = get_backend("torch").load(art, load_target("torch-cpu"))  # loads back from the file
    assert sess.run(np.zeros((1, 1, 8, 8), np.float32))[0].shape == (1, 10)


@pytest.mark.openvino
def test_openvino_compile_properties_pin_f32_and_threads():
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    from edgekd.backends.openvino import compile_properties

    cfg = compile_properties(load_target("openvino-cpu"))
    assert cfg[hints.inference_precision] == ov.Type.f32 and cfg[props.inference_num_threads] == 1
    assert cfg[hints.performance_mode] == hints.PerformanceMode.LATENCY and cfg[hints.num_requests] == 1


@pytest.mark.openvino
def test_ir_is_written_without_temp_files(tmp_path):
    art, _ = export_for_target(tiny(), torch.randn(1, 1, 8, 8), "openvino-cpu", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.onnx", "model.xml"]
    assert art.extra_paths == (tmp_path / "model.bin",)


@pytest.mark.parametrize("suffix,target,needle", [
    (".xml", "ort-cpu", "--target openvino-cpu"),
    (".engine", "openvino-cpu", "--target tensorrt-fp16"),
])
def test_open_model_refuses_mismatched_files(tmp_path, suffix, target, needle):
    f = tmp_path / f"m{suffix}"
    f.write_bytes(b"x")
    with pytest.raises(BadInputError) as ei:
        open_model(f, load_target(target))
    assert suffix in str(ei.value) and needle in str(ei.value)


def test_dynamic_spatial_dims_need_shape(tmp_path):
    p = export_onnx(tiny(), torch.randn(1, 1, 8, 8), tmp_path / "m.onnx")
    proto = onnx.load(str(p))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "h", "w"
    onnx.save(proto, str(p))
    with pytest.raises(BadInputError, match="pass --shape"):
        open_model(p, load_target("ort-cpu"))
    op = open_model(p, load_target("ort-cpu"), sample_shape=(1, 16, 16))
    assert op.input_shape == (1, 1, 16, 16)
    assert op.session.run(np.zeros(op.input_shape, np.float32))[0].shape == (1, 10)


def test_spec_models_are_seeded_and_leave_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = build_spec_model("convnet:width=8,depth=2,res=8")
    b = build_spec_model("convnet:width=8,depth=2,res=8")
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_cli_export_onnx_to_openvino_checks_against_onnxruntime(run_cli, tmp_path):
    p = export_onnx(tiny(), torch.randn(1, 1, 8, 8), tmp_path / "m.onnx")
    out = tmp_path / "nested" / "ov"
    res = run_cli("export", p, "--target", "openvino-cpu", "--out", out, "--json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["parity_reference"] == "onnxruntime" and d["parity"]["passed"]
    assert d["input_shape"] == [1, 1, 8, 8] and d["path"] == str(out / "model.xml")
    assert {f["path"].rsplit("/", 1)[-1] for f in d["files"]} == {"model.onnx", "model.xml", "model.bin"}
    assert all(len(f["sha256"]) == 64 for f in d["files"])
    assert d["onnx_sha256"] == next(f["sha256"] for f in d["files"] if f["path"].endswith("model.onnx"))


def test_cli_export_text_output_and_wrong_shape(run_cli, tmp_path):
    p = export_onnx(tiny(), torch.randn(1, 1, 8, 8), tmp_path / "m.onnx")
    res = run_cli("export", p, "--target", "ort-cpu", "--out", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    assert "sha256" in res.stdout and "model.onnx" in res.stdout
    out = tmp_path / "deep" / "er" / "o2"
    bad = run_cli("export", p, "--target", "ort-cpu", "--out", out, "--shape", "3,8,8")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "(1, 3, 8, 8)" in bad.stderr
    assert not (tmp_path / "deep").exists()  # parents it created are removed again


def test_cli_export_refuses_non_empty_out(run_cli, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = run_cli("export", "convnet:width=8,depth=2,res=8", "--target", "ort-cpu", "--out", out)
    assert res.returncode == 2 and "not empty" in res.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_export_help_documents_every_option(run_cli):
    res = run_cli("export", "--help")
    assert res.returncode == 0
    for opt in ("--target", "--out", "--shape", "--opset", "--dynamic-batch", "--num-classes",
                "--in-channels", "--json"):
        assert opt in res.stdout
