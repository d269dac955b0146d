"""Profiles store the size and peak memory of every whole model they measure, and lines fitted to
them; select judges --max-size-kb / --max-peak-mb on those figures (measured where measured,
predicted otherwise) and says which; profiles made before keep working."""
import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

import edgekd.backends
from edgekd.errors import BadInputError
from edgekd.latency import profile as P
from edgekd.latency.measure import Measurement
from edgekd.latency.select import select_student
from edgekd.latency.size_estimate import candidate_memory, estimate_size_bytes, fit_memory, memory_feature
from edgekd.latency.stats import LatencyStats
from edgekd.targets import load_target

SPECS = ["convnet:width=4,depth=1,res=8", "convnet:width=4,depth=2,res=8", "convnet:width=8,depth=2,res=8",
         "convnet:width=8,depth=4,res=8", "convnet:width=16,depth=4,res=8"]
ENV = {"cpu": "cpu", "logical_cores": 2, "threads": 1, "runtime": "onnxruntime", "runtime_version": "1",
       "precision": "fp32", "batch": 1, "device": "cpu"}
MB = 2 ** 20


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _m(ms, artifact=None):
    return Measurement(stats=LatencyStats.from_samples(np.full(20, ms)), samples_ms=np.full(20, ms),
                       first_inference_ms=ms, warmup_iters=10, warmup_s=0.0, artifact=artifact)


def _fake_size(params: int) -> int:
    return 4 * params + 3000


def _fake_peak(params: int) -> int:
    return 2 * MB + 3 * 4 * params


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """A profile of SPECS on ort-cpu, every measurement faked: a model's latency, size and peak
    grow with its parameters (the artifact a Measurement carries is the module itself)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        made = _profile(monkeypatch, tmp_path_factory.mktemp("profiled"))
    return made


def _profile(monkeypatch, tmp_path):
    monkeypatch.setattr(P, "measure_module", lambda mod, shape, t, s, wd, name: (_m(0.01), ENV))
    monkeypatch.setattr(P, "measure_block", lambda mod, shape, t, s, wd, copies, probe=None:
                        (_m(0.01 + _params(mod) * 1e-6), LatencyStats.from_samples(np.full(20, 0.01)), None, ENV,
                         None))
    monkeypatch.setattr(P, "open_reference", lambda mod, shape, t, wd: SimpleNamespace(session=None))
    monkeypatch.setattr(P, "measure_with_reference", lambda mod, shape, t, s, wd, ref:
                        (_m(0.02 + _params(mod) * 1e-6, artifact=mod), _m(0.05), ENV))
    seen = []

    def record(art, target, shape, peaks=None):
        seen.append(tuple(shape))
        n = _params(art)
        return {"size_bytes": _fake_size(n), "size_of": "onnx", "peak_bytes": _fake_peak(n),
                "peak_source": "rss (fake)", "planned_arena_bytes": None, "elapsed_s": 0.5}

    monkeypatch.setattr(P, "memory_record", record)
    monkeypatch.setattr(edgekd.backends, "require_backend", lambda t: None)
    grid = tmp_path / "grid.txt"
    grid.write_text("\n".join(SPECS) + "\n")
    out = tmp_path / "p.json"
    P.profile_family("ort-cpu", "convnet", grid=str(grid), out=out, pairs=False)
    return out, seen


def test_profile_stores_memory_per_model_and_the_fits(profiled):
    out, seen = profiled
    assert seen == [(1, 1, 8, 8)] * len(SPECS)  # one inference of the batch the target runs
    prof = P.load_profile(out)
    assert all(m.memory["size_bytes"] == _fake_size(m.params) for m in prof.models)
    assert all(m.memory["peak_bytes"] == _fake_peak(m.params) for m in prof.models)
    d = json.loads(out.read_text())["memory"]
    assert d["size"]["n"] == d["peak"]["n"] == len(SPECS) and d["peak"]["source"] == "rss (fake)"
    assert d["size"]["error_of"] == "leave-one-out" and d["size"]["max_rel_error"] < 0.05
    assert set(d["candidates"]) == set(SPECS)
    assert {c["size"] for c in d["candidates"].values()} == {c["peak"] for c in d["candidates"].values()} == {"measured"}
    assert "peak memory" in prof.protocol["memory"]


def test_select_judges_the_peak_on_measured_figures_and_names_the_smallest(profiled):
    out, _ = profiled
    prof = P.load_profile(out)
    peaks = {m.spec: m.memory["peak_bytes"] / MB for m in prof.models}
    free = select_student(prof, 1000, derive=False)
    assert free.chosen.spec == SPECS[-1] and free.chosen.peak_from == "measured"  # figures shown, nothing judged
    assert free.memory_note == ""
    limit = (peaks[SPECS[2]] + peaks[SPECS[3]]) / 2
    sel = select_student(prof, 1000, derive=False, max_peak_mb=limit)
    assert sel.chosen.spec == SPECS[2] and sel.chosen.peak_mb == pytest.approx(peaks[SPECS[2]])
    assert [c.over_memory for c in sel.candidates] == [False, False, False, True, True]
    assert "2 of 5 candidates excluded" in sel.memory_note and "measured by the profile" in sel.memory_note
    d = sel.to_dict()
    assert d["max_peak_mb"] == limit and d["chosen"]["peak_from"] == "measured" and d["memory_fit"]["peak"]["n"] == 5
    with pytest.raises(BadInputError) as err:
        select_student(prof, 1000, derive=False, max_peak_mb=1.0)
    assert (f"--max-peak-mb 1 is below every candidate" in str(err.value)
            and f"smallest reachable is {peaks[SPECS[0]]:.2f} MB measured ({SPECS[0]}" in str(err.value))


def test_size_budget_reads_the_measured_size_not_the_rule(profiled):
    out, _ = profiled
    prof = P.load_profile(out)
    kb = {m.spec: _fake_size(m.params) / 1024 for m in prof.models}
    sel = select_student(prof, 1000, derive=False, max_size_kb=kb[SPECS[3]] + 0.01)
    assert sel.chosen.spec == SPECS[3] and sel.chosen.size_from == "measured"
    assert sel.chosen.size_kb == pytest.approx(kb[SPECS[3]])


def test_a_candidate_not_measured_whole_is_predicted_with_the_fits_error_as_margin(profiled):
    out, _ = profiled
    prof = P.load_profile(out)
    t = load_target("ort-cpu")
    fits = fit_memory(prof, t)
    spec = "convnet:width=8,depth=3,res=8"  # its blocks are in the profile; the model is not
    from edgekd.models import block_signatures, build_model

    keys = [g["key"] for g in block_signatures(spec, 1)]
    params = _params(build_model(spec, num_classes=10, in_channels=1))
    f = candidate_memory(prof, fits, spec, params, keys, t)
    assert f.size_from == f.peak_from == "predicted"
    assert f.size_bytes == pytest.approx(_fake_size(params), rel=0.05)
    assert f.peak_bytes == pytest.approx(_fake_peak(params), rel=0.05)
    assert f.peak_error == fits["peak"]["max_rel_error"] > 0
    assert memory_feature(prof, params, keys, t) > 4 * params  # weights and an activation set
    sel = select_student(prof, 1000, extra_specs=[spec], derive=False, max_peak_mb=f.peak_bytes / MB)
    got = next(c for c in sel.candidates if c.spec == spec)
    assert got.peak_from == "predicted" and got.over_memory  # the margin puts it over its own prediction
    assert "predicted from the profile's fit" in sel.memory_note and "worst error" in sel.memory_note


def test_a_profile_made_before_memory_keeps_working_and_says_so(profiled, tmp_path):
    out, _ = profiled
    d = json.loads(out.read_text())
    d.pop("memory")
    for e in d["entries"]:
        e.pop("memory", None)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(d))
    prof = P.load_profile(old)
    sel = select_student(prof, 1000, derive=False, max_peak_mb=0.001, max_size_kb=1000)
    assert sel.chosen.spec == SPECS[-1] and sel.chosen.peak_mb is None
    assert sel.chosen.size_from == "estimated"
    assert sel.chosen.size_kb == pytest.approx(estimate_size_bytes(sel.chosen.params, load_target("ort-cpu")) / 1024)
    assert "peak not judged here" in sel.memory_note and "estimated from params" in sel.memory_note
    plain = select_student(prof, 1000, derive=False)  # no budget, no memory: as before
    assert plain.chosen.size_kb is None and plain.memory_note == ""


def test_another_target_drops_the_profiles_measured_figures(profiled):
    out, _ = profiled
    sel = select_student(P.load_profile(out), 1000, derive=False, target="ort-cpu-int8", max_size_kb=1000)
    assert sel.chosen.size_from == "estimated" and "not ort-cpu-int8" in sel.memory_note


def test_cli_select_peak_budget(profiled, run_cli):
    out, _ = profiled
    prof = P.load_profile(out)
    limit = prof.model(SPECS[2]).memory["peak_bytes"] / MB + 0.001
    args = ("select", "--profile", out, "--budget-ms", "1000", "--max-peak-mb", f"{limit}", "--no-recalibrate",
            "--grid-only")
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "peak MB" in r.stdout and "m measured by the profile" in r.stdout and "2 of 5 candidates" in r.stdout
    r = run_cli(*args, "--json")
    chosen = json.loads(r.stdout)["chosen"]
    assert chosen["spec"] == SPECS[2] and chosen["peak_from"] == chosen["size_from"] == "measured"
    r = run_cli("select", "--profile", out, "--budget-ms", "1000", "--max-peak-mb", "0.5", "--no-recalibrate")
    assert r.returncode == 2 and "smallest reachable is" in r.stderr and "Traceback" not in r.stderr


def test_a_fork_of_the_peak_process_measures_what_a_fresh_process_does(tmp_path):
    """The profiler's PeakProcess (a fork per model of one process that imported the runtime)
    against verify's measurement (a fresh process per model), on an ONNX Runtime model."""
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("peak memory reads Linux /proc")
    from edgekd.deploy import open_module
    from edgekd.latency.measure import close_session
    from edgekd.latency.memory import PeakProcess, measure_memory
    from edgekd.models import build_model

    t = load_target("ort-cpu")
    arts = []
    for i, spec in enumerate(SPECS[-1:]):
        o = open_module(build_model(spec, num_classes=10, in_channels=1), t, tmp_path / str(i), (1, 8, 8))
        close_session(o.session)
        arts.append(o.artifact)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    peaks = PeakProcess(t)
    try:
        forked = [measure_memory(a, t, (1, 1, 8, 8), peaks=peaks) for a in arts]
        with pytest.raises(BadInputError, match="bad.onnx failed"):  # measured afresh, which names it
            measure_memory(replace(arts[0], path=bad), t, (1, 1, 8, 8), peaks=peaks)
    finally:
        peaks.close()
    fresh = [measure_memory(a, t, (1, 1, 8, 8)) for a in arts]
    for f, g in zip(forked, fresh):
        assert f.peak_bytes == pytest.approx(g.peak_bytes, rel=0.05) and "forked" in f.peak_source
        assert f.size_bytes == g.size_bytes
