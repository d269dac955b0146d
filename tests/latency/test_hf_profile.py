"""Profiling an hf- family: its blocks (read from the transformers module tree) are measured
alone and in pairs like edgekd's own, and the profile predicts and selects (tiny configs)."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

GRID = ["hf-resnet:width=8,depths=1,res=32", "hf-resnet:width=8,depths=1-1,res=32"]


def test_profile_predict_select_hf_resnet(tmp_path):
    from edgekd.latency.predict import predict
    from edgekd.latency.profile import load_profile, profile_family
    from edgekd.latency.select import select_student
    from edgekd.models import block_signatures, parse_spec

    target = tmp_path / "fast.yaml"
    target.write_text("runtime: onnxruntime\ndevice: cpu\nprecision: fp32\nthreads: 1\nbatch: 1\n"
                      "measure:\n  warmup_s: 0.02\n  warmup_iters: 10\n  min_iters: 20\n  min_time_s: 0.05\n")
    grid = tmp_path / "grid.txt"
    grid.write_text("\n".join(GRID) + "\n")
    out = tmp_path / "p.json"
    run = profile_family(str(target), "hf-resnet", out=out, grid=str(grid), in_channels=3)
    prof = load_profile(out)
    specs = [parse_spec(s).spec for s in GRID]
    assert [m.spec for m in prof.models_by_capacity()] == specs
    keys = {s["key"] for spec in specs for s in block_signatures(spec, 3)}
    assert set(prof.blocks) == keys  # the shared embedder and first layer measured once
    assert len(prof.pairs) == 4
    assert all(b.signature["kind"] in ("hf", "head") for b in prof.blocks.values())
    # every block and pair read beside the probe (a block of the reference model, held loaded)
    assert prof.protocol["probe"] in keys
    entries = [*prof.blocks.values(), *prof.pairs.values()]
    assert all(e.probe is not None and e.probe.p50 > 0 and e.probe_load for e in entries)
    # and every whole model's samples divided by the reference's speed in the same rounds
    assert all(m.steady is not None and m.steady.p50 > 0 for m in prof.models)
    assert prof.calibration and prof.calibration["p50"]["specs"] == specs
    for spec in specs:
        assert predict(prof, spec, "p50") > 0
    result = select_student(prof, budget_ms=1e3, derive=False)
    assert result.chosen.spec == specs[-1]
    assert run.elapsed_s > 0
