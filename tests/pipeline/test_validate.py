"""compress refuses bad inputs before it writes state.json or measures; a refused or early-stopped
run does not block its folder; --resume compares resolved paths."""
from __future__ import annotations

import json

import pytest

from edgekd.errors import BadInputError
from edgekd.pipeline import STATE, CompressConfig, compress, make_plan
from edgekd.pipeline.state import prepare_out
from edgekd.pipeline.validate import resolved_settings

STUDENT = "convnet:width=8,depth=2,res=16"


def _settings(assets, **kw):
    base = dict(teacher=str(assets / "teacher.pt"), data="digits", target=str(assets / "fast-cpu.yaml"),
                budget_ms=50.0, student=STUDENT, epochs=1)
    base.update(kw)
    return base


def _cfg(assets, **kw):
    return CompressConfig.make(**_settings(assets, **kw))


def _refused(cfg, out, *needles):
    with pytest.raises(BadInputError) as e:
        compress(cfg, out, show=False)
    for n in needles:
        assert n in str(e.value), str(e.value)
    assert not (out / STATE).exists()
    assert not out.exists() or not any(out.iterdir())
    return str(e.value)


def test_unknown_loss_is_refused_before_state(tiny_assets, tmp_path):
    _refused(_settings(tiny_assets, loss="nosuchloss"), tmp_path / "run", "nosuchloss", "kd")


def test_teacher_with_other_class_count_is_refused_before_state(tiny_assets, tmp_path):
    # the tiny teacher predicts 10 classes; shapes with 3 classes is RGB too, so either check fires
    msg = _refused(_cfg(tiny_assets, data="shapes:classes=3,n=60"), tmp_path / "run")
    assert "teacher" in msg


def test_pickled_teacher_without_trust_is_refused_before_state(tiny_assets, tmp_path):
    import torch

    from edgekd.models import build_model

    p = tmp_path / "whole.pt"
    torch.save(build_model("convnet:width=8,depth=2,res=16", num_classes=10, in_channels=1), p)
    _refused(_cfg(tiny_assets, teacher=str(p)), tmp_path / "run", "--trust-code")


def test_unwritable_out_is_refused(tiny_assets, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(BadInputError, match="is a file, not a directory"):
        compress(_cfg(tiny_assets), f / "run", show=False)


def test_a_run_that_finished_no_stage_blocks_nothing(tiny_assets, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(tiny_assets)
    state = prepare_out(out, _cfg(tiny_assets, epochs=3), resume=False, force=False)
    state["stages"]["select"] = {"status": "running"}
    (out / STATE).write_text(json.dumps(state))
    again = prepare_out(out, cfg, resume=True, force=False)  # other settings, nothing done: start over
    assert again["config"]["epochs"] == 1 and again["stages"] == {}


def test_resume_compares_resolved_paths(tiny_assets, tmp_path, monkeypatch):
    out = tmp_path / "run"
    state = prepare_out(out, _cfg(tiny_assets), resume=False, force=False)
    state["stages"]["select"] = {"status": "done", "result": {"spec": STUDENT, "source": "given",
                                                            "needs_pruning": None}}
    (out / STATE).write_text(json.dumps(state))
    monkeypatch.chdir(tiny_assets)
    rel = _cfg(tiny_assets, teacher="./teacher.pt", target="fast-cpu.yaml")
    assert rel.digest() != _cfg(tiny_assets).digest()
    assert prepare_out(out, rel, resume=True, force=False)["stages"]["select"]["status"] == "done"
    with pytest.raises(BadInputError, match="epochs"):
        prepare_out(out, _cfg(tiny_assets, epochs=4), resume=True, force=False)


def test_resolved_settings_leave_specs_alone(tmp_path):
    d = resolved_settings({"teacher": "resnet:width=8", "data": f"folder:{tmp_path}", "target": "ort-cpu"})
    assert d == {"teacher": "resnet:width=8", "data": f"folder:{tmp_path.resolve()}", "target": "ort-cpu"}


def test_plan_still_needs_no_data(tiny_assets):
    assert make_plan(_cfg(tiny_assets)).resolution == 16


def _onnx_teacher(path, dims):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
                               helper.make_node("Add", ["m", "w"], ["y"])], "t", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_plan_takes_the_resolution_from_an_hf_or_onnx_teacher(tiny_assets, tmp_path):
    """--resolution's default is the teacher's input size for every teacher that states one:
    an hf: directory's config.json image_size and an ONNX graph's fixed H = W, not only an
    edgekd checkpoint's (the data's own resolution otherwise)."""
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "resnet", "image_size": 48}))
    plan = make_plan(_cfg(tiny_assets, teacher=f"hf:{hf}", student="auto", family="convnet"))
    assert plan.resolution == 48
    assert "at 48 px" in plan.steps[0][1]
    fixed = _onnx_teacher(tmp_path / "fixed.onnx", ["N", 3, 40, 40])
    assert make_plan(_cfg(tiny_assets, teacher=str(fixed), student="auto", family="convnet")).resolution == 40
    dynamic = _onnx_teacher(tmp_path / "dynamic.onnx", ["N", 3, "H", "W"])
    plan = make_plan(_cfg(tiny_assets, teacher=str(dynamic), student="auto", family="convnet"))
    assert plan.resolution is None and "the data's resolution" in plan.steps[0][1]
    assert make_plan(_cfg(tiny_assets, teacher=f"hf:{hf}", student="auto", family="convnet",
                          resolution=24)).resolution == 24  # --resolution wins
