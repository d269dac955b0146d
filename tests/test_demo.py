"""`compress --demo` reads the teacher's budget and the student's verdict at one machine speed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekd import demo

FAST = ("name: fast-ort\nruntime: onnxruntime\ndevice: cpu\nprecision: fp32\nthreads: 1\nbatch: 1\n"
        "measure: {warmup_s: 0.02, warmup_iters: 5, min_iters: 60, min_time_s: 0.05}\n")


@pytest.fixture
def fast_target(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    yaml = tmp_path / "fast-ort.yaml"
    yaml.write_text(FAST)
    return str(yaml)


def test_ensure_calibration_makes_one_only_when_the_machine_has_none(fast_target, tmp_path):
    said: list[str] = []
    first = demo.ensure_calibration(fast_target, said.append)
    assert first["made_now"] and Path(first["path"]).is_file() and first["reference_p50_ms"] > 0
    assert Path(first["path"]).is_relative_to(tmp_path / "cache")
    assert len(said) == 1 and "no calibration of it" in said[0] and "edgekd calibrate" in said[0]
    stored = json.loads(Path(first["path"]).read_text())
    # three times the target's 0.05 s of timing: at least that many samples' worth of time
    assert stored["stats"]["n"] >= 60
    again = demo.ensure_calibration(fast_target, said.append)
    assert not again["made_now"] and again["path"] == first["path"] and len(said) == 1
    assert again["reference_p50_ms"] == pytest.approx(first["reference_p50_ms"])
    # one made under another version of the runtime cannot correct anything here: made again
    stale = json.loads(Path(first["path"]).read_text())
    stale["fingerprint"]["runtime_version"] = "0.0.1"
    Path(first["path"]).write_text(json.dumps(stale))
    remade = demo.ensure_calibration(fast_target, said.append)
    assert remade["made_now"] and len(said) == 2 and "0.0.1" in said[1]
    assert json.loads(Path(first["path"]).read_text())["fingerprint"]["runtime_version"] != "0.0.1"


def test_run_demo_calibrates_before_it_measures_the_teacher(fast_target, tmp_path, monkeypatch):
    """The budget comes from the teacher's drift-corrected p90 only if the calibration exists
    when the teacher is measured; verify (in compress) then corrects against the same one."""
    from edgekd.latency.bench import stored_calibration

    seen: dict = {}
    ckpt = tmp_path / "teacher.pt"
    monkeypatch.setattr(demo, "demo_target", lambda: fast_target)
    monkeypatch.setattr(demo, "demo_teacher", lambda echo, show: (ckpt, False))
    monkeypatch.setattr("edgekd.models.checkpoint.read_checkpoint", lambda p: {"extra": {"val_acc": 0.9}})

    def measure(teacher, target, metric="p90"):
        seen["calibrated_when_measured"] = stored_calibration(target) is not None
        return {"metric": metric, "latency_ms": 1.0, "basis": "p90", "judged": "corrected", "warning": None}

    class Plan:
        def text(self):
            return "plan"

    monkeypatch.setattr(demo, "measure_teacher", measure)
    monkeypatch.setattr("edgekd.pipeline.make_plan", lambda cfg: Plan())
    monkeypatch.setattr("edgekd.pipeline.compress", lambda cfg, out, **kw: kw["context"])
    assert stored_calibration(fast_target) is None
    context, info = demo.run_demo(tmp_path / "out", echo=lambda s: None)
    assert seen["calibrated_when_measured"] is True
    assert info["calibration"]["made_now"] and context["demo"]["calibration"] == info["calibration"]
    assert info["budget_ms"] == pytest.approx(demo.BUDGET_FRACTION)
