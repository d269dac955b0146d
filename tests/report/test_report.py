"""Reports from a compress state: report.json's schema, report.md for a CI summary, and
report.html (self-contained, four plots) opened in headless Chromium without console errors."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "") if p and Path(p).exists()), None)


def _state(tmp: Path, *, quantized: bool = False, pruned: bool = False, teacher_ms: float | None = None) -> dict:
    """A finished run's state, as compress writes it (numbers made up, shapes real)."""
    import numpy as np

    from edgekd.latency.stats import LatencyStats

    rng = np.random.default_rng(0)
    samples = (0.05 + 0.005 * rng.standard_normal(300)).clip(0.01)
    stats = LatencyStats.from_samples(samples).to_dict()
    (tmp / "distill").mkdir(parents=True, exist_ok=True)
    (tmp / "distill" / "train.jsonl").write_text("".join(
        json.dumps({"epoch": e, "train_loss": 2.0 / e, "val_acc": 0.8 + 0.04 * e}) + "\n" for e in range(1, 5)))
    cands = [{"spec": f"convnet:width={w},depth=2,res=16", "params": 1000 * w, "macs": 10000 * w,
              "predicted_ms": 0.02 * w / 8, "measured_ms": 0.02 * w / 8, "fits": w <= 16,
              "verified_ms": 0.045 if w == 16 else None} for w in (8, 16, 32)]
    sel = {"budget_ms": 0.1, "metric": "p90", "epsilon": 0.1, "limit_ms": 0.0909, "chosen": cands[1],
           "candidates": cands, "verified": True, "attempts": [cands[1]], "profile": "p.json", "warnings": []}
    checks = [{"name": "latency", "verdict": "pass", "value": stats["p90"], "limit": 0.1,
               "detail": "p90 0.056 ms, 95% CI of p90 [0.055, 0.057] ms vs budget 0.1 ms"},
              {"name": "parity", "verdict": "pass", "value": 1.0, "limit": 0.99,
               "detail": "max|diff| 3e-06, cosine 1.000000, top-1 agreement 1.0000"}]
    quant = {"status": "skipped", "reason": "off (--quantize off)"}
    if quantized:
        quant = {"status": "kept", "artifact": "x-int8/model.int8.xml", "target": "x-int8", "extra": [],
                 "report": {"fp32": {"accuracy": 0.97, "p90_ms": 0.09, "target": "x"}, "int8": {"accuracy": 0.965}}}
    prune = {"status": "skipped", "reason": "not available yet"}
    if pruned:
        prune = {"status": "pruned", "reason": "the student misses the budget", "checkpoint": "pruned.pt",
                 "ratio": 0.3, "before": {"p90": 0.2, "params": 16000}, "after": {"p90": 0.08, "params": 9000},
                 "acc_finetuned": 0.96}
        (tmp / "pruned.pt").write_bytes(b"x" * 3000)
    (tmp / "student.pt").write_bytes(b"x" * 5000)
    (tmp / "ort-cpu").mkdir(exist_ok=True)
    (tmp / "ort-cpu" / "model.onnx").write_bytes(b"x" * 2048)
    done = lambda r: {"status": "done", "wall_s": 1.0, "result": r}  # noqa: E731
    context = {"demo": {"target": "ort-cpu", "teacher_latency": {"metric": "p90", "latency_ms": teacher_ms,
                                                                  "basis": "p90"}}} if teacher_ms else {}
    return {"schema": "edgekd.compress-state/v1", "created": "2026-01-01T00:00:00+00:00", "context": context,
            "config": {"teacher": "teacher.pt", "target": "ort-cpu", "budget_ms": 0.1, "metric": "p90"},
            "stages": {
                "select": done({"spec": cands[1]["spec"], "source": "profile", "selection": sel,
                                "needs_pruning": False}),
                "distill": done({"student_accuracy": 0.97, "teacher_accuracy": 0.99, "log": "distill/train.jsonl",
                                 "checkpoint": "student.pt",
                                 "student_cost": {"params": 16000, "macs": 1}, "teacher_cost": {"params": 90000,
                                                                                                 "macs": 2}}),
                "prune": done(prune),
                "export": done({"artifact": "ort-cpu/model.onnx", "extra": [], "target": "ort-cpu"}),
                "quantize": done(quant),
                "verify": done({"verdict": "pass", "accuracy": 0.965 if quantized else 0.97, "target": "ort-cpu",
                                "metric": "p90", "budget_ms": 0.1, "latency": stats, "checks": checks,
                                "samples_ms": samples.tolist()}),
                "report": {"status": "running"}}}


def test_report_json_and_markdown(tmp_path):
    from edgekd.report import write_reports

    paths = write_reports(tmp_path, _state(tmp_path, quantized=True))
    doc = json.loads(paths["json"].read_text())
    assert doc["schema"] == "edgekd.report/v1" and doc["verdict"] == "pass"
    assert doc["accuracy"] == {"teacher": 0.99, "student_torch": 0.97, "student_runtime": 0.97,
                               "quantized_runtime": 0.965}
    assert doc["accuracy_ratio"] == pytest.approx(0.965 / 0.99)
    assert [h["epoch"] for h in doc["training"]] == [1, 2, 3, 4]
    assert len(doc["latency_samples_ms"]) == 300
    md = paths["md"].read_text()
    assert md.startswith("## edgekd compress:") and "PASS" in md
    assert "max\\|diff\\|" in md  # pipes in cells are escaped, the table stays a table
    assert "quantized student | 96.50%" in md
    assert len(md) < 65536  # GitHub's step-summary limit is 1 MiB; stay far below


def test_report_html_is_self_contained(tmp_path):
    from edgekd.report import write_reports

    html = write_reports(tmp_path, _state(tmp_path))["html"].read_text()
    for key in ("candidates", "histogram", "training", "accuracy"):
        assert re.search(rf'<figure id="plot-{key}" class="plot"><svg', html), key
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)


def _chromium_dom(html: Path, profile: Path) -> tuple[str, str]:
    p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                        "--dump-dom", html.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout, p.stderr


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_html_in_headless_chromium(tmp_path):
    from edgekd.report import write_reports

    html = write_reports(tmp_path, _state(tmp_path, teacher_ms=0.4))["html"]
    # The console capture works: a page that logs an error is caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom'); missingFn();</script></body></html>")
    _, err = _chromium_dom(bad, tmp_path / "profile-bad")
    assert any("boom" in line for line in _console_lines(err))
    dom, err = _chromium_dom(html, tmp_path / "profile")
    assert _console_lines(err) == []
    for key in ("candidates", "pareto", "histogram", "training", "accuracy"):
        m = re.search(rf'<figure id="plot-{key}" class="plot">(.*?)</figure>', dom, re.S)
        assert m, key
        assert "<svg" in m.group(1) and ("<path" in m.group(1) or "<use" in m.group(1)), key
    assert "PASS" in dom


def test_stage_table_teacher_to_int8(tmp_path):
    from edgekd.report import build_report

    doc = build_report(tmp_path, _state(tmp_path, quantized=True, pruned=True, teacher_ms=0.4))
    rows = {r["stage"]: r for r in doc["stage_table"]}
    assert list(rows) == ["teacher", "distilled", "pruned", "fp32 on runtime", "INT8"]
    assert rows["distilled"]["latency_ms"] == 0.2 and rows["distilled"]["size_bytes"] == 5000
    assert rows["pruned"]["latency_ms"] == 0.08 and rows["pruned"]["params"] == 9000
    assert rows["pruned"]["accuracy"] == 0.96 and rows["pruned"]["size_bytes"] == 3000
    assert rows["fp32 on runtime"]["latency_ms"] == 0.09 and rows["fp32 on runtime"]["size_bytes"] == 2048
    assert rows["INT8"]["latency_ms"] == doc["latency"]["p90"] and rows["INT8"]["params"] == 9000
    vs = doc["versus"]
    assert vs["deployed"]["stage"] == "INT8" and vs["speedup"] == pytest.approx(0.4 / doc["latency"]["p90"])
    assert vs["params_ratio"] == pytest.approx(9000 / 90000)
    md = write_md(tmp_path, quantized=True, pruned=True, teacher_ms=0.4)
    assert "| pruned | " in md and f"{vs['speedup']:.2f}x faster" in md and "10.0x fewer parameters" in md


def test_without_a_teacher_latency_the_speedup_says_so(tmp_path):
    md = write_md(tmp_path)
    assert "speed-up n/a" in md and "| teacher | teacher.pt | not measured |" in md
    assert "Read with care: the final latency measurement is unstable" in md  # the synthetic samples' IQR


def write_md(tmp: Path, **kw) -> str:
    from edgekd.report import write_reports

    return write_reports(tmp, _state(tmp, **kw))["md"].read_text()


def test_histogram_resolves_the_samples_and_says_a_far_budget():
    from edgekd.report.plots import histogram_plot

    samples = [0.05 + 0.001 * (i % 10) for i in range(300)]
    far = histogram_plot({"latency_samples_ms": samples, "budget_ms": 4.0, "latency": {}})
    near = histogram_plot({"latency_samples_ms": samples, "budget_ms": 0.06, "latency": {}})
    assert "off the right edge (73.4x the median)" in far
    assert "off the right edge" not in near and "budget 0.06 ms" in near


def test_candidates_are_drawn_at_their_prediction():
    from edgekd.report.plots import candidates_plot

    cands = [{"spec": "a", "params": 10, "predicted_ms": 0.9, "measured_ms": 1.6, "fits": True},
             {"spec": "b", "params": 20, "predicted_ms": 1.5, "measured_ms": 1.7, "fits": False}]
    svg = candidates_plot({"budget_ms": 0.99, "selection": {"candidates": cands, "chosen": {
        **cands[0], "verified_ms": 0.25}}})
    assert "predicted p90 latency, ms" in svg and "chosen, measured 0.25 ms" in svg and "profiled reading" in svg
