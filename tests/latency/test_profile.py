"""Profile files and the profiler: atomic rewrites, --resume, grid files, errors."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import edgekd.backends
from edgekd.errors import BadInputError
from edgekd.latency import profile as P
from edgekd.latency.measure import Measurement
from edgekd.latency.stats import LatencyStats

TINY = ["convnet:width=4,depth=1,res=8", "convnet:width=4,depth=2,res=8", "convnet:width=8,depth=2,res=8"]


def fast_target(tmp_path, name="fast-ort"):
    p = tmp_path / f"{name}.yaml"
    p.write_text("runtime: onnxruntime\ndevice: cpu\nprecision: fp32\nthreads: 1\nbatch: 1\n"
                 "measure:\n  warmup_s: 0.02\n  warmup_iters: 10\n  min_iters: 20\n  min_time_s: 0.05\n")
    return p


def grid_file(tmp_path, specs, name="grid.txt"):
    p = tmp_path / name
    p.write_text("# tiny candidates\n\n" + "\n".join(f"{s}   # candidate" for s in specs) + "\n")
    return p


def needs_runtime():
    pytest.importorskip("edgekd.export")
    pytest.importorskip("edgekd.deploy")
    pytest.importorskip("onnxruntime")


class FakeReference:
    def __init__(self, params):
        self.params = params
        self.closed = False
        self.session = self

    def close(self):
        self.closed = True


class FakeMeasure:
    """Stands in for export + runtime: latency grows with the module's parameter count."""

    def __init__(self):
        self.calls = []
        self.sessions = []
        self.references = []
        self.probes = []

    def __call__(self, module, shape, target, settings, work_dir, name):
        n = sum(p.numel() for p in module.parameters())
        ms = 0.01 + n * 1e-6
        self.calls.append((name, tuple(shape)))
        self.sessions.append((name, settings.sessions))
        stats = LatencyStats.from_samples(np.full(20, ms))
        env = {"cpu": "cpu", "logical_cores": 2, "threads": 1, "runtime": "onnxruntime",
               "runtime_version": "1", "precision": "fp32", "batch": 1, "device": "cpu"}
        return Measurement(stats=stats, samples_ms=np.full(20, ms), first_inference_ms=ms,
                           warmup_iters=10, warmup_s=0.0), env


    def open_reference(self, module, shape, target, work_dir):
        self.calls.append(("reference", tuple(shape)))
        ref = FakeReference(sum(p.numel() for p in module.parameters()))
        self.references.append(ref)
        return ref

    def with_reference(self, module, shape, target, settings, work_dir, reference):
        assert not reference.closed
        m, env = self(module, shape, target, settings, work_dir, "model")
        ms = 0.01 + reference.params * 1e-6
        return m, Measurement(stats=LatencyStats.from_samples(np.full(20, ms)), samples_ms=np.full(20, ms),
                              first_inference_ms=ms, warmup_iters=10, warmup_s=0.0), env

    def probe_reading(self, probe):
        assert probe is not None and not probe.closed  # opened once, held through the run
        self.probes.append(probe)
        return LatencyStats.from_samples(np.full(20, 0.02))

    def block(self, module, shape, target, settings, work_dir, copies, probe=None):
        from edgekd.latency.pieces import BlockReading

        hot, env = self(module, shape, target, settings, work_dir, "block")
        cold, _ = self(module, shape, target, settings, work_dir, "cold")
        return BlockReading(hot, LatencyStats.from_samples(np.full(20, 0.01)),
                            LatencyStats.from_samples(cold.samples_ms * 1.5), env, self.probe_reading(probe))

    def pair(self, first, second, target, settings, work_dir, probe=None):
        from edgekd.latency.pieces import PairReading, pair_module

        module, shape = pair_module(first, second)
        m, env = self(module, shape, target, settings, work_dir, "pair")
        return PairReading(m, Measurement(stats=LatencyStats.from_samples(m.samples_ms / 2),
                                          samples_ms=m.samples_ms / 2, first_inference_ms=0.0,
                                          warmup_iters=10, warmup_s=0.0), env, self.probe_reading(probe))


@pytest.fixture
def fake(monkeypatch):
    f = FakeMeasure()
    monkeypatch.setattr(P, "measure_module", f)
    monkeypatch.setattr(P, "measure_block", f.block)
    monkeypatch.setattr(P, "measure_pair", f.pair)
    monkeypatch.setattr(P, "open_reference", f.open_reference)
    monkeypatch.setattr(P, "measure_with_reference", f.with_reference)
    monkeypatch.setattr(edgekd.backends, "require_backend", lambda t: None)
    return f


def test_profiler_entries_blocks_once_and_resume_measures_nothing_stored(fake, tmp_path):
    out = tmp_path / "p.json"
    grid = grid_file(tmp_path, TINY[:2])
    run = P.profile_family("ort-cpu", "convnet", grid=str(grid), out=out)
    prof = P.load_profile(out)
    assert prof.complete and [m.spec for m in prof.models] == TINY[:2]
    keys = [k for m in prof.models for k in m.blocks]
    pairs = {k for m in prof.models for k in P.model_pairs(m.blocks)}
    assert sorted(prof.blocks) == sorted(set(keys))  # each unique block measured once
    assert sorted(prof.pairs) == sorted(pairs)  # and each unique adjacent pair
    assert all(q.first in prof.blocks and q.second in prof.blocks for q in prof.pairs.values())
    assert len(run.measured) == 1 + len(set(keys)) + len(pairs) + 2
    # overhead once; each block alone and as replicated copies; each pair; each model, with the
    # reference model opened once for the run (and closed at its end)
    # reference model and probe block both opened once for the run (and closed at its end)
    names = [n for n, _ in fake.calls]
    assert names.count("block") == names.count("cold") == len(set(keys)) and names.count("pair") == len(pairs)
    assert names.count("reference") == 2 and len(fake.references) == 2 and all(r.closed for r in fake.references)
    assert len(fake.calls) == 1 + 2 * len(set(keys)) + len(pairs) + 2 + 2
    assert prof.protocol["reference"] == TINY[1]  # the middle one by capacity (of two: the second)
    ref_blocks = prof.model(TINY[1]).blocks
    assert prof.protocol["probe"] == ref_blocks[len(ref_blocks) // 2]  # its middle block
    probe = fake.references[0]  # opened before the first block, held for every block and pair
    assert len(fake.probes) == len(set(keys)) + len(pairs) and all(p is probe for p in fake.probes)
    first_load = prof.models[0].reference_load
    assert first_load and all(m.reference is not None and m.reference_load == first_load for m in prof.models)
    # the probe's reading in alternation with each block and pair is stored, with its load
    entries = [*prof.blocks.values(), *prof.pairs.values()]
    assert all(e.probe.p50 == pytest.approx(0.02) and e.probe_load == first_load for e in entries)
    assert all(b.latency_cold is not None and b.copies >= 2 for b in prof.blocks.values())
    # the readings taken in alternation with each block and pair are stored with it
    assert all(b.overhead.p50 == pytest.approx(0.01) for b in prof.blocks.values())
    assert all(q.first_alone.p50 == pytest.approx(q.latency.p50 / 2) for q in prof.pairs.values())
    assert "interleaved" in prof.protocol
    assert prof.overhead is not None and prof.calibration["p50"]["a"] > 0
    before = {m.spec: m.to_dict() for m in prof.models}
    # resume with one more candidate: only it and its new blocks are measured
    grid.write_text("\n".join(TINY) + "\n")
    fake.calls.clear()
    run2 = P.profile_family("ort-cpu", "convnet", grid=str(grid), out=out, resume=True)
    prof2 = P.load_profile(out)
    assert TINY[2] in run2.measured and not set(run2.measured) & set(before)
    assert not set(run2.measured) & (set(prof.blocks) | set(prof.pairs)) and "overhead" in run2.skipped
    new_blocks = [k for k in run2.measured if k in prof2.blocks]
    # blocks twice, plus the reference and the probe (those the profile names, loaded anew: another
    # load id), plus the bridges: two stored blocks (twice each) and two stored models measured again
    assert len(fake.calls) == 2 * len(new_blocks) + (len(run2.measured) - len(new_blocks)) + 2 + 2 * 2 + 2
    bridges = {(type(b).__name__, getattr(b, "spec", None) or b.key) for b in prof2.bridges}
    assert {n for k, n in bridges if k == "ModelEntry"} == set(TINY[:2])
    assert len([n for k, n in bridges if k == "BlockEntry"]) == 2 and all(
        n in prof.blocks for k, n in bridges if k == "BlockEntry")
    new_load = prof2.model(TINY[2]).reference_load
    assert all((getattr(b, "reference_load", None) or b.probe_load) == new_load for b in prof2.bridges)
    assert prof2.protocol["reference"] == TINY[1] and len(fake.references) == 4 and fake.references[3].closed
    assert prof2.protocol["probe"] == prof.protocol["probe"] and "resumed_with" not in prof2.protocol
    assert prof2.model(TINY[2]).reference_load not in ("", first_load)
    for spec, d in before.items():
        assert prof2.model(spec).to_dict() == d  # stored entries are untouched
    assert prof2.complete and prof2.validation["n_heldout"] == 1


def test_calibration_models_are_measured_over_more_loads(fake, tmp_path):
    specs = TINY + ["convnet:width=8,depth=3,res=8", "convnet:width=16,depth=3,res=8"]
    out = tmp_path / "p.json"
    P.profile_family("ort-cpu", "convnet", grid=str(grid_file(tmp_path, specs)), out=out)
    prof = P.load_profile(out)
    loads = [n for name, n in fake.sessions if name == "model"]
    by_capacity = [m.spec for m in prof.models_by_capacity()]
    order = [m.spec for m in prof.models]  # measured in this order
    calibrated = set(prof.calibration["p50"]["specs"])
    assert len(calibrated) == 3 and {by_capacity[0], by_capacity[-1]} <= calibrated  # 5 models: 3 calibrate
    assert [n for s, n in zip(order, loads)] == [
        P.CALIBRATION_SESSIONS if s in calibrated else P.MODEL_SESSIONS for s in order]
    assert P.CALIBRATION_SESSIONS > P.MODEL_SESSIONS
    assert json.loads(out.read_text())["protocol"]["calibration"]["sessions"] == P.CALIBRATION_SESSIONS
    # blocks over several loads; pairs, read against their first block measured alongside, one
    assert {n for name, n in fake.sessions if name == "block"} == {P.BLOCK_SESSIONS}
    assert {n for name, n in fake.sessions if name == "pair"} == {P.PAIR_SESSIONS} and P.PAIR_SESSIONS < P.BLOCK_SESSIONS


def test_existing_profile_needs_resume_and_same_options(fake, tmp_path):
    out = tmp_path / "p.json"
    grid = grid_file(tmp_path, TINY[:1])
    P.profile_family("ort-cpu", "convnet", grid=str(grid), out=out)
    with pytest.raises(BadInputError, match="already exists"):
        P.profile_family("ort-cpu", "convnet", grid=str(grid), out=out)
    with pytest.raises(BadInputError, match="num_classes"):
        P.profile_family("ort-cpu", "convnet", grid=str(grid), out=out, resume=True, num_classes=3)


def test_grid_file_errors_name_the_line(tmp_path):
    p = tmp_path / "g.txt"
    p.write_text("# header\nconvnet:width=8,depth=2,res=16\n\nconvnet:width=8,bogus=3\n")
    with pytest.raises(BadInputError, match=r"g\.txt:4: .*bogus"):
        P.read_grid(str(p), "convnet")
    p.write_text("convnet:width=8,depth=2,res=16\nresnet:width=8\n")
    with pytest.raises(BadInputError, match=r"g\.txt:2: .*family 'resnet'"):
        P.read_grid(str(p), "convnet")
    with pytest.raises(BadInputError, match="neither small nor default"):
        P.read_grid(str(tmp_path / "nope.txt"), "convnet")
    p.write_text("convnet:width=8,depth=2,res=16  # a\nconvnet:width=8,depth=2,res=16\n")
    assert len(P.read_grid(str(p), "convnet")) == 1


def test_cli_grid_error_and_unknown_family(run_cli, tmp_path):
    g = tmp_path / "g.txt"
    g.write_text("convnet:width=8,depth=2,res=16\n# fine\nconvnet:width=-3\n")
    r = run_cli("profile", "--target", "ort-cpu", "--family", "convnet", "--grid", g, "--out", tmp_path / "o.json")
    assert r.returncode == 2 and "g.txt:3:" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("profile", "--target", "ort-cpu", "--family", "nosuchnet", "--out", tmp_path / "o.json")
    assert r.returncode == 2 and "nosuchnet" in r.stderr
    assert not (tmp_path / "o.json").exists()


def test_load_profile_rejects_truncated_and_foreign_files(tmp_path):
    p = tmp_path / "p.json"
    p.write_text('{"schema": "edgekd.profile/v1", "entries": [')
    with pytest.raises(BadInputError, match="truncated"):
        P.load_profile(p)
    p.write_text(json.dumps({"schema": "something/else"}))
    with pytest.raises(BadInputError, match="not an edgekd profile"):
        P.load_profile(p)
    p.write_text(json.dumps({"schema": P.SCHEMA, "family": "x"}))
    with pytest.raises(BadInputError, match="damaged"):
        P.load_profile(p)
    with pytest.raises(BadInputError, match="does not exist"):
        P.load_profile(tmp_path / "none.json")


def test_fingerprint_check(tmp_path):
    prof = P.Profile(target={"name": "t"}, family="f", fingerprint={"cpu": "A", "threads": 1})
    assert P.check_fingerprint(prof, {"cpu": "A", "threads": 1}) is None
    msg = P.check_fingerprint(prof, {"cpu": "B", "threads": 1})
    assert "cpu: 'A' vs 'B'" in msg
    with pytest.raises(BadInputError, match="another environment"):
        P.check_fingerprint(prof, {"cpu": "B", "threads": 1}, strict=True)


def test_tiny_grid_on_ort_cpu(run_cli, tmp_path):
    needs_runtime()
    out = tmp_path / "p.json"
    r = run_cli("profile", "--target", fast_target(tmp_path), "--family", "convnet",
                "--grid", grid_file(tmp_path, TINY), "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["complete"] and summary["models"] == 3 and summary["elapsed_s"] > 0
    prof = P.load_profile(out)
    d = json.loads(out.read_text())
    assert d["schema"] == P.SCHEMA and d["protocol"]["block"]["min_time_s"] <= 0.05
    # whole models and blocks over several loads (the target asks for one)
    assert d["protocol"]["model"]["sessions"] == P.MODEL_SESSIONS > 1
    assert d["protocol"]["block"]["sessions"] == P.BLOCK_SESSIONS > 1
    assert d["fingerprint"]["runtime"] == "onnxruntime" and d["overhead_ms"] > 0
    assert all(m.latency.n >= 20 and m.params > 0 and m.macs > 0 for m in prof.models)
    assert all(m.memory["size_bytes"] > 0 and m.memory["peak_bytes"] > 0 for m in prof.models)  # size, peak
    # every model read alongside the one reference load (the middle candidate), really measured
    assert d["protocol"]["reference"] == TINY[1]
    assert len({m.reference_load for m in prof.models}) == 1
    assert all(m.reference is not None and m.reference.p50 > 0 and m.reference.n >= 10 for m in prof.models)
    assert prof.validation["n_heldout"] == 1  # 3 candidates: 2 calibrate, 1 held out
    r = run_cli("select", "--profile", out, "--budget-ms", "1000", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["chosen"]["spec"] == TINY[2]


def test_killed_run_resumes_without_remeasuring(run_cli, tmp_path):
    needs_runtime()
    out = tmp_path / "p.json"
    specs = TINY + ["convnet:width=8,depth=3,res=8", "convnet:width=16,depth=3,res=8"]
    grid = grid_file(tmp_path, specs)
    target = fast_target(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "EDGEKD_DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", "profile", "--target", str(target),
                             "--family", "convnet", "--grid", str(grid), "--out", str(out), "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    stored = {}
    try:
        while proc.poll() is None:
            if out.exists():
                stored = json.loads(out.read_text())  # always whole: rewritten atomically
                if stored["entries"]:
                    break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert stored.get("entries"), "the profiler wrote no entry before it ended"
    kept = P.load_profile(out)  # what the killed run left is a valid profile
    before = {e.get("spec") or e["key"]: e for e in json.loads(out.read_text())["entries"]}
    assert len(before) == len(kept.models) + len(kept.blocks) + len(kept.pairs)
    r = run_cli("profile", "--target", target, "--family", "convnet", "--grid", grid, "--out", out,
                "--resume", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert not set(summary["measured"]) & set(before)  # nothing stored was measured again
    assert set(before) <= set(summary["skipped"])
    after = {e.get("spec") or e["key"]: e for e in json.loads(out.read_text())["entries"]}
    for k, e in before.items():
        assert after[k] == e  # same numbers, same timestamps
    assert summary["complete"] and set(after) == set(before) | set(summary["measured"]) - {"overhead"}


def test_cli_profiles_several_targets_in_one_command(run_cli, tmp_path):
    import json as _json

    grid = tmp_path / "g.txt"
    grid.write_text("convnet:width=4,depth=1,res=8\n")
    res = run_cli("profile", "--target", "ort-cpu", "--target", "openvino-cpu", "--family", "convnet",
                  "--grid", grid, "--out", tmp_path / "p-{target}.json", "--min-time", "0.02",
                  "--block-min-time", "0.01", "--json")
    assert res.returncode == 0, res.stderr
    rows = _json.loads(res.stdout)["targets"]
    assert [r["target"] for r in rows] == ["ort-cpu", "openvino-cpu"] and all(r["ok"] for r in rows)
    for name in ("ort-cpu", "openvino-cpu"):
        prof = _json.loads((tmp_path / f"p-{name}.json").read_text())
        assert prof["schema"] == "edgekd.profile/v1" and prof["target"]["name"] == name


def test_resume_recovers_the_whole_entries_of_a_truncated_profile(fake, tmp_path):
    out = tmp_path / "p.json"
    grid = grid_file(tmp_path, TINY)
    P.profile_family("ort-cpu", "convnet", grid=str(grid), out=out)
    whole = json.loads(out.read_text())
    text = out.read_text()
    # cut the file inside the 6th entry, as an interrupted copy would
    starts = [i for i in range(len(text)) if text.startswith('\n    {\n      "kind"', i)]
    out.write_text(text[:starts[5] + 40])
    with pytest.raises(BadInputError, match="truncated"):
        P.load_profile(out)
    kept, n = P.salvage_profile(out)
    assert n == 5 and kept.family == "convnet" and kept.fingerprint == whole["fingerprint"]
    events = []
    fake.calls.clear()
    run = P.profile_family("ort-cpu", "convnet", grid=str(grid), out=out, resume=True, on_event=events.append)
    assert [e.done for e in events if e.kind == "salvaged"] == [5]
    key = lambda e: e.get("spec") or e["key"]  # noqa: E731
    first5 = [key(e) for e in whole["entries"][:5]]
    assert not set(run.measured) & set(first5)  # what was whole is not measured again
    after = json.loads(out.read_text())
    assert sorted(key(e) for e in after["entries"]) == sorted(key(e) for e in whole["entries"])
    assert P.load_profile(out).complete
    assert P.salvage_profile(tmp_path / "none.json") is None


def test_a_profile_resumed_under_another_protocol_says_so(fake, tmp_path):
    out = tmp_path / "p.json"
    grid = grid_file(tmp_path, TINY[:2])
    P.profile_family("ort-cpu", "convnet", grid=str(grid), out=out)
    header = dict(P.load_profile(out).protocol)
    # the same protocol again: nothing noted
    grid.write_text("\n".join(TINY) + "\n")
    P.profile_family("ort-cpu", "convnet", grid=str(grid), out=out, resume=True)
    assert P.load_profile(out).protocol == header
    # an older profile (written before pairs were measured over one load): its header stays, the
    # protocol of the entries measured now is listed with when it began
    d = json.loads(out.read_text())
    d["protocol"]["pair"]["sessions"] = 2
    d["entries"] = [e for e in d["entries"] if e.get("spec") != TINY[2]]
    out.write_text(json.dumps(d))
    P.profile_family("ort-cpu", "convnet", grid=str(grid), out=out, resume=True)
    prof = P.load_profile(out)
    assert prof.protocol["pair"]["sessions"] == 2
    (later,) = prof.protocol["resumed_with"]
    assert later["pair"]["sessions"] == P.PAIR_SESSIONS and later["since"] <= prof.model(TINY[2]).measured_at
    # resumed once more under the same (new) protocol: still one
    d = json.loads(out.read_text())
    d["entries"] = [e for e in d["entries"] if e.get("spec") != TINY[2]]
    out.write_text(json.dumps(d))
    P.profile_family("ort-cpu", "convnet", grid=str(grid), out=out, resume=True)
    assert len(P.load_profile(out).protocol["resumed_with"]) == 1


def test_no_pairs_measures_blocks_and_models_only(fake, tmp_path):
    out = tmp_path / "p.json"
    grid = grid_file(tmp_path, TINY)
    P.profile_family("ort-cpu", "convnet", grid=str(grid), out=out, pairs=False)
    prof = P.load_profile(out)
    assert not prof.pairs and [n for n, _ in fake.calls].count("pair") == 0
    assert len(prof.models) == 3 and prof.blocks
    assert "--no-pairs" in prof.protocol["pairs"]
    assert prof.calibration["p50"]["method"] == "alone"  # context needs the pairs
    assert prof.complete


def test_quiet_stats_keep_the_samples_not_descheduled():
    x = np.concatenate([np.full(30, 1.0), np.full(70, 10.0)])
    m = Measurement(stats=LatencyStats.from_samples(x), samples_ms=x, first_inference_ms=1.0, warmup_iters=10,
                    warmup_s=0.0, disturbed=np.arange(100) >= 30)
    assert P.quiet_stats(m).p50 == pytest.approx(1.0) and P.quiet_stats(m).n == 30
    # fewer than QUIET_MIN calm samples: the fastest tenth of all
    y = np.linspace(1.0, 2.0, 200)
    m2 = Measurement(stats=LatencyStats.from_samples(y), samples_ms=y, first_inference_ms=1.0, warmup_iters=10,
                     warmup_s=0.0, disturbed=np.ones(200, dtype=bool))
    assert P.quiet_stats(m2).n == 20 and P.quiet_stats(m2).max < 1.1
    assert P.quiet_stats(Measurement(stats=m.stats, samples_ms=x, first_inference_ms=1.0, warmup_iters=1,
                                     warmup_s=0.0)) is None


def test_a_loaded_profile_is_read_through_its_quiet_samples():
    from edgekd.latency.cost import model_latency, quiet_readings
    from edgekd.latency.profile_file import ModelEntry, Profile

    def stats(v, disturbed=0):
        s = LatencyStats.from_samples(np.full(100, v))
        return LatencyStats(**{**s.__dict__, "disturbed": disturbed})

    def entry(spec, raw, quiet, ref_raw, ref_quiet, disturbed):
        return ModelEntry(family="convnet", spec=spec, params=1, macs=1, blocks=(), latency=stats(raw, disturbed),
                          reference=stats(ref_raw), reference_load="a", quiet=stats(quiet), reference_quiet=stats(ref_quiet))

    prof = Profile(target={"name": "t"}, family="convnet", in_channels=3, num_classes=10)
    prof.models = [entry("a", 10.0, 1.0, 20.0, 2.0, 90), entry("b", 30.0, 3.0, 20.0, 2.0, 90)]
    assert quiet_readings(prof)
    assert model_latency(prof, prof.models[1], "p50") == pytest.approx(3.0)
    prof.models = [entry("a", 10.0, 1.0, 20.0, 2.0, 10), entry("b", 30.0, 3.0, 20.0, 2.0, 10)]
    assert not quiet_readings(prof)  # an undisturbed run keeps every sample
    assert model_latency(prof, prof.models[1], "p50") == pytest.approx(30.0)
    back = ModelEntry.from_dict(prof.models[0].to_dict())
    assert back.quiet.p50 == pytest.approx(1.0) and back.reference_quiet.p50 == pytest.approx(2.0)


def test_a_model_that_never_ran_undisturbed_is_neither_calibrated_on_nor_judged():
    from edgekd.latency.cost import readable
    from edgekd.latency.profile_file import ModelEntry, Profile

    def stats(v, disturbed):
        s = LatencyStats.from_samples(np.full(100, v))
        return LatencyStats(**{**s.__dict__, "disturbed": disturbed})

    prof = Profile(target={"name": "t"}, family="convnet", in_channels=3, num_classes=10)
    prof.models = [ModelEntry(family="convnet", spec=s, params=1, macs=1, blocks=(), latency=stats(1.0, d),
                              reference=stats(1.0, 0), reference_load="a", quiet=stats(1.0, 0),
                              reference_quiet=stats(1.0, 0)) for s, d in (("a", 60), ("b", 100))]
    # too few models ran undisturbed to judge by: every one is read through its fastest tenth
    assert readable(prof, prof.models[0]) and readable(prof, prof.models[1])
    prof.models += [ModelEntry(family="convnet", spec=f"c{i}", params=1, macs=1, blocks=(), latency=stats(1.0, 60),
                               reference=stats(1.0, 0), reference_load="a", quiet=stats(1.0, 0),
                               reference_quiet=stats(1.0, 0)) for i in range(4)]
    assert readable(prof, prof.models[0]) and not readable(prof, prof.models[1])
    for m in prof.models:  # an unloaded run: the profile is read as timed, every model judged
        m.latency = stats(1.0, 10)
    assert readable(prof, prof.models[1])
