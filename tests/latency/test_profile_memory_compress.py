"""compress and the memory budgets: its plan lists them, its select stage hands both to select,
and report.md shows them in its checks table."""
from dataclasses import replace
from types import SimpleNamespace

from edgekd.pipeline import CompressConfig, make_plan

BASE = dict(data="digits", target="ort-cpu", budget_ms=5.0)


def test_plan_text_lists_the_memory_budgets(tiny_assets):
    t = str(tiny_assets / "teacher.pt")
    text = make_plan(CompressConfig.make(teacher=t, max_size_kb=80, max_peak_mb=30, **BASE)).text()
    head, verify = text.splitlines()[0], next(ln for ln in text.splitlines() if " verify " in ln)
    assert head.endswith("at 5 ms (p90), size <= 80 KB, peak memory <= 30 MB:")
    assert verify.endswith("p90 <= 5 ms, size <= 80 KB, peak memory <= 30 MB")
    assert "latency and memory budgets" in text
    plain = make_plan(CompressConfig.make(teacher=t, **BASE)).text()
    assert "KB" not in plain and "peak memory" not in plain


def test_select_stage_hands_both_budgets_to_select(tiny_assets, tmp_path, monkeypatch):
    import edgekd.latency.profile as lp
    import edgekd.latency.select as ls
    from edgekd.latency.profile_file import ModelEntry, Profile
    from edgekd.latency.stats import LatencyStats
    from edgekd.pipeline.context import Context
    from edgekd.pipeline.select import select_stage

    spec = "convnet:width=4,depth=1,res=16"
    prof = Profile(target={"name": "ort-cpu"}, family="convnet", grid=[spec], models=[ModelEntry(
        family="convnet", spec=spec, params=100, macs=1000, blocks=(), latency=LatencyStats.from_samples([1.0] * 10))])
    monkeypatch.setattr(lp, "load_profile", lambda p: prof)
    seen = {}

    def fake_select(profile, budget_ms, **kw):
        seen.update(kw)
        chosen = SimpleNamespace(spec=spec)
        return SimpleNamespace(chosen=chosen, to_dict=lambda: {"chosen": {"spec": spec}})

    monkeypatch.setattr(ls, "select_student", fake_select)
    cfg = CompressConfig.make(teacher=str(tiny_assets / "teacher.pt"), max_size_kb=80, max_peak_mb=30, **BASE)
    plan = replace(make_plan(cfg), profile=tmp_path / "p.json")
    ctx = Context(tmp_path, cfg, plan, show=False)
    ctx._bundle = SimpleNamespace(input_shape=(1, 16, 16))
    res = select_stage(ctx)
    assert res.spec == spec and seen["max_size_kb"] == 80 and seen["max_peak_mb"] == 30


def test_report_md_shows_the_memory_checks():
    from edgekd.report.markdown import render_markdown

    doc = {"verdict": "pass", "verify": {"checks": [
        {"name": "size", "verdict": "pass", "detail": "48.1 KB (openvino-ir) vs max 60 KB"},
        {"name": "peak_memory", "verdict": "pass", "detail": "41.06 MB (rss high-water) vs max 60 MB"}]}}
    md = render_markdown(doc)
    assert "| size | pass | 48.1 KB (openvino-ir) vs max 60 KB |" in md
    assert "| peak_memory | pass | 41.06 MB (rss high-water) vs max 60 MB |" in md
