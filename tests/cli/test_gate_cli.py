"""`edgekd gate` end to end: exit codes 0/1/2/3/4, JUnit, GitHub lines, step summary, baselines,
budgets.yaml, folders and --predict-only."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

FAST_TARGET = ("name: fast-ort\nruntime: onnxruntime\ndevice: cpu\nprecision: fp32\nthreads: 1\nbatch: 1\n"
               "measure: {warmup_s: 0.02, warmup_iters: 10, min_iters: 60, min_time_s: 0.0, unstable_iqr: 0.5}\n")
# (a loose stability limit: microsecond-scale test models jitter more than real ones on shared cores)


def tiny_onnx(path, spec: str | None = None, hidden: int = 128):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(hidden, dtype=np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["y"])], "tiny",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, hidden])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, hidden])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    if spec:
        helper.set_model_props(m, {"edgekd.spec": spec})
    onnx.save(m, str(path))
    return path


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "models").mkdir()
    model = tiny_onnx(tmp_path / "models" / "tiny.onnx")
    target = tmp_path / "fast-ort.yaml"
    target.write_text(FAST_TARGET)
    return SimpleNamespace(dir=tmp_path, model=model, target=target)


def test_fail_exit_1_with_junit_github_and_summary(run_cli, setup):
    from junitparser import Failure, JUnitXml

    junit = setup.dir / "gate.xml"
    summary = setup.dir / "summary.md"
    summary.write_text("before\n")
    r = run_cli("gate", setup.model, "--target", setup.target, "--budget-ms", "0.00001", "--junit", junit,
                "--github", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert r.returncode == 1, r.stderr
    err_lines = [ln for ln in r.stdout.splitlines() if ln.startswith("::error ")]
    assert len(err_lines) == 1 and "title=edgekd gate%3A" in err_lines[0] and "budget 1e-05 ms" in err_lines[0]
    cases = [c for suite in JUnitXml.fromfile(str(junit)) for c in suite]
    assert len(cases) == 1 and cases[0].classname == "edgekd.gate"
    fail = cases[0].result[0]
    assert isinstance(fail, Failure) and "p90=" in fail.message and "bounds [" in fail.message
    text = summary.read_text()
    assert text.startswith("before\n") and "❌ FAIL" in text


def test_pass_exit_0_and_baseline_roundtrip(run_cli, setup):
    base = setup.dir / "baseline.json"
    r = run_cli("gate", setup.model, "--target", setup.target, "--budget-ms", "1000", "--save-baseline", base, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["counts"]["PASS"] == 1 and out["results"][0]["decision"]["ci"][1] <= 1000
    stored = json.loads(base.read_text())
    assert stored["schema"] == "edgekd.gate-baseline/v1" and stored["entries"][0]["samples_ms"]
    r2 = run_cli("gate", setup.model, "--target", setup.target, "--budget-ms", "1000", "--baseline", base, "--json")
    res = json.loads(r2.stdout)["results"][0]
    assert res["baseline_used"] and res["decision"]["regression"]["median_ratio"] > 0
    # a baseline taken elsewhere is ignored with a warning
    stored["entries"][0]["environment"]["cpu"] = "some other cpu"
    base.write_text(json.dumps(stored))
    r3 = run_cli("gate", setup.model, "--target", setup.target, "--budget-ms", "1000", "--baseline", base, "--json")
    res3 = json.loads(r3.stdout)["results"][0]
    assert not res3["baseline_used"] and "ignored" in res3["warnings"][0]


def test_tensorrt_target_here_exits_4(run_cli, setup):
    from conftest import _capability

    if _capability("tensorrt")[0]:
        pytest.skip("this machine can run TensorRT")
    r = run_cli("gate", setup.model, "--target", "tensorrt-fp16", "--budget-ms", "5", "--json")
    assert r.returncode == 4
    res = json.loads(r.stdout)["results"][0]
    assert res["status"] == "ERROR" and "tensorrt" in res["error"]


def test_budgets_file_with_folder(run_cli, setup):
    tiny_onnx(setup.dir / "models" / "other.onnx")
    budgets = setup.dir / "budgets.yaml"
    budgets.write_text(f"budgets:\n  - models: \"models/*.onnx\"\n    targets: [{setup.target}]\n    budget_ms: 1000\n")
    r = run_cli("gate", "--budgets", budgets, "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(x["model"].rsplit("/", 1)[-1] for x in json.loads(r.stdout)["results"]) == ["other.onnx", "tiny.onnx"]
    r2 = run_cli("gate", setup.dir / "models", "--budgets", budgets, "--json")
    assert r2.returncode == 0 and len(json.loads(r2.stdout)["results"]) == 2


def test_bad_input_exit_2(run_cli, setup):
    bad = setup.dir / "budgets.yaml"
    bad.write_text("budgets:\n  - models: a.onnx\n    targets: [ort-cpu]\n    budget_ms: zero\n")
    r = run_cli("gate", setup.model, "--budgets", bad)
    assert r.returncode == 2 and "budgets.yaml:4" in r.stderr and "budget_ms" in r.stderr
    assert "Traceback" not in r.stderr
    assert run_cli("gate", setup.model).returncode == 2
    assert run_cli("gate", setup.dir / "nope.onnx", "--budget-ms", "1").returncode == 2
    assert run_cli("gate", setup.model, "--budget-ms", "1", "--predict-only").returncode == 2


def _profile(path, spec, p90, eps):
    """A profile written by the profiler's own writer: one whole-model entry (p50 0.8 x p90) and
    a held-out error ``eps`` for every metric."""
    from edgekd.latency.profile import ModelEntry, Profile, save_profile
    from edgekd.latency.stats import LatencyStats

    prof = Profile(target={"name": "ort-cpu"}, family="convnet", grid=[spec],
                   validation={"p95_rel_error": eps, "by_metric": {m: {"p95_rel_error": eps} for m in ("p50", "p90")}})
    prof.models.append(ModelEntry(family="convnet", spec=spec, params=1, macs=1, blocks=(),
                                  latency=LatencyStats.from_samples([p90 * 0.8] * 5 + [p90] * 5)))
    return save_profile(prof, path, refit=False)


def test_predict_only(run_cli, setup):
    spec = "convnet:width=0.5"
    model = tiny_onnx(setup.dir / "spec.onnx", spec=spec)
    prof = _profile(setup.dir / "profile.json", spec, 2.0, 0.1)
    ok = run_cli("gate", model, "--budget-ms", "2.3", "--predict-only", "--profile", prof, "--json")
    assert ok.returncode == 0, ok.stderr
    d = json.loads(ok.stdout)["results"][0]
    assert d["source"] == "predicted" and d["decision"]["ci"][1] == pytest.approx(2.2)
    assert run_cli("gate", model, "--budget-ms", "2.1", "--predict-only", "--profile", prof).returncode == 3
    assert run_cli("gate", model, "--budget-ms", "2.1", "--predict-only", "--profile", prof,
                   "--on-inconclusive", "warn").returncode == 0
    assert run_cli("gate", model, "--budget-ms", "1.5", "--predict-only", "--profile", prof).returncode == 1
    nospec = run_cli("gate", setup.model, "--budget-ms", "2", "--predict-only", "--profile", prof)
    assert nospec.returncode == 2 and "edgekd.spec" in nospec.stderr


def test_predict_only_holds_each_metric_to_its_own_margin(setup, tmp_path, capsys):
    """A profile fitted and written by the real writer, whose p90 predictions miss by more than its
    p50 ones: a p90 budget gets p90's margin (validation.by_metric.p90), not the headline p50 one."""
    from synthetic_profiles import synthetic

    from edgekd.cli.main import main
    from edgekd.latency.profile import load_profile, save_profile
    from edgekd.latency.stats import LatencyStats

    prof = synthetic(distort={1: 1.04})  # p50 of held-out model 1 4% over the line
    held = prof.model("fam:i=2")  # held out too: its p90 (only) 30% over its p50
    ms = held.latency.p50
    held.latency = LatencyStats.from_samples([ms] * 6 + [1.3 * ms] * 4)
    assert (held.latency.p50, held.latency.p90) == (pytest.approx(ms), pytest.approx(1.3 * ms))
    path = save_profile(prof, tmp_path / "p.json")
    by = load_profile(path).validation["by_metric"]
    eps50, eps90 = by["p50"]["p95_rel_error"], by["p90"]["p95_rel_error"]
    assert 0 < eps50 < 0.1 < eps90  # two different margins

    spec = "fam:i=4"
    p90 = prof.model(spec).latency.p90
    model = tiny_onnx(setup.dir / "fam.onnx", spec=spec)
    budget = p90 * (1 + (eps50 + eps90) / 2)  # within p50's margin, not within p90's
    code = main(["gate", str(model), "--budget-ms", repr(budget), "--metric", "p90", "--predict-only",
                 "--profile", str(path), "--json"])
    d = json.loads(capsys.readouterr().out)["results"][0]["decision"]
    assert code == 3 and d["verdict"] == "INCONCLUSIVE"
    assert d["value"] == pytest.approx(p90)
    assert d["ci"] == pytest.approx([p90 / (1 + eps90), p90 * (1 + eps90)])
    # the same budget on p50 is judged with p50's own margin
    p50 = prof.model(spec).latency.p50
    code = main(["gate", str(model), "--budget-ms", repr(p50 * (1 + eps50) * 1.001), "--metric", "p50",
                 "--predict-only", "--profile", str(path), "--json"])
    d = json.loads(capsys.readouterr().out)["results"][0]["decision"]
    assert code == 0 and d["ci"] == pytest.approx([p50 / (1 + eps50), p50 * (1 + eps50)])


def test_measured_inconclusive_exit_3_in_process(setup, monkeypatch, capsys):
    """Re-measure pooling through the command with a monkeypatched measurement: a budget at the
    samples' own p90 (1.56 ms in round 1, 1.69 pooled) stays INCONCLUSIVE after --max-rounds and exits 3."""
    from edgekd.cli.main import main
    from edgekd.gate import check

    calls = []

    def fake_bench_measure(**kw):
        def measure(model, target):
            calls.append(model)
            rng = np.random.default_rng(len(calls))
            return SimpleNamespace(samples_ms=np.exp(rng.normal(0, 0.5, 300)), environment={}, model_sha256="x")
        return measure

    monkeypatch.setattr(check, "bench_measure", fake_bench_measure)
    code = main(["gate", str(setup.model), "--target", str(setup.target), "--budget-ms", "1.6", "--max-rounds", "2",
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 3 and len(calls) == 2
    assert out["results"][0]["round_verdicts"] == ["INCONCLUSIVE", "INCONCLUSIVE"]
    assert main(["gate", str(setup.model), "--target", str(setup.target), "--budget-ms", "1.6", "--max-rounds", "2",
                 "--on-inconclusive", "fail"]) == 1
