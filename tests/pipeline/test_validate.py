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
