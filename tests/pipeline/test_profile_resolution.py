"""A stored profile measured at other input sizes than the data's: compress profiles the grid at
the data's size instead of refusing (the plan says so when it knows the size; the select stage
does it when only the data told it)."""
from __future__ import annotations

import dataclasses

import pytest

from edgekd.errors import BadInputError


@pytest.fixture(scope="module")
def stored(tiny_assets, tmp_path_factory):
    """A directory whose ./profiles holds a real fast-cpu convnet profile at 16 px only."""
    from edgekd.latency.profile import profile_family
    from edgekd.targets import load_target

    root = tmp_path_factory.mktemp("stored")
    grid = root / "grid.txt"
    grid.write_text("convnet:width=8,depth=2,res=16\n")
    profile_family(load_target(str(tiny_assets / "fast-cpu.yaml")), "convnet",
                   out=root / "profiles" / "fast-cpu-convnet.json", grid=str(grid), in_channels=1,
                   num_classes=10, min_time_s=0.05, block_min_time_s=0.05, work_dir=root / "work",
                   pairs=False)
    return root


def _cfg(tiny_assets, stored, res):
    from edgekd.pipeline import CompressConfig

    return CompressConfig.make(teacher=str(tiny_assets / "teacher.pt"), data="digits",
                               target=str(tiny_assets / "fast-cpu.yaml"), budget_ms=50.0,
                               family="convnet", grid=str(stored / "grid.txt"), resolution=res,
                               profile_min_time_s=0.05)


def test_the_plan_uses_a_stored_profile_only_at_a_size_it_holds(tiny_assets, stored, monkeypatch):
    from edgekd.pipeline import find_profile, make_plan
    from edgekd.targets import load_target

    monkeypatch.chdir(stored)
    target = load_target(str(tiny_assets / "fast-cpu.yaml"))
    path, note = find_profile(target, "convnet", 16)
    assert path is not None and path.resolve() == (stored / "profiles" / "fast-cpu-convnet.json").resolve()
    assert make_plan(_cfg(tiny_assets, stored, 16)).profile.resolve() == path.resolve()

    path, note = find_profile(target, "convnet", 24)
    assert path is None and note == "fast-cpu-convnet.json has no candidate at 24 px (it has 16 px)"
    plan = make_plan(_cfg(tiny_assets, stored, 24))
    assert plan.profile is None
    (select,) = [text for step, text in plan.steps if step == "select"]
    assert "profile the" in select and "at 24 px" in select and "no candidate at 24 px" in select


def test_select_profiles_the_grid_at_the_data_size_the_stored_profile_lacks(tiny_assets, stored,
                                                                           monkeypatch, tmp_path):
    from edgekd.models import parse_spec
    from edgekd.pipeline import make_plan
    from edgekd.pipeline.context import Context
    from edgekd.pipeline.select import select_stage

    monkeypatch.chdir(stored)
    plan = make_plan(_cfg(tiny_assets, stored, 16))
    assert plan.profile is not None
    # the data turned out 24 px after planning (as when no size was known before loading it)
    plan = dataclasses.replace(plan, resolution=24)
    said: list[str] = []
    ctx = Context(tmp_path / "run", _cfg(tiny_assets, stored, 24), plan, show=True, echo=said.append)
    ctx.out.mkdir()
    sel = select_stage(ctx)
    assert parse_spec(sel.spec).res == 24 and sel.source == "profile"
    assert sel.profile == str(tmp_path / "run" / "profile" / "fast-cpu-convnet.json")
    assert any("no candidate at the data's 24 px" in s for s in said)


@pytest.mark.parametrize("rank,said", [(None, "by params"), ("macs", "by MACs"), ("params", "by params")])
def test_compress_rank_reaches_the_plan_and_the_selection(tiny_assets, stored, monkeypatch, tmp_path,
                                                          rank, said):
    """--rank (None: the family's own order, params for convnet) is what the plan announces and
    what select_student is given."""
    import edgekd.latency.select as sel_mod
    from edgekd.pipeline import CompressConfig, make_plan
    from edgekd.pipeline.context import Context
    from edgekd.pipeline.select import select_stage

    monkeypatch.chdir(stored)
    cfg = CompressConfig.make(**{**_cfg(tiny_assets, stored, 16).model_dump(), "rank": rank})
    plan = make_plan(cfg)
    (select,) = [text for step, text in plan.steps if step == "select"]
    assert f"student {said} predicted" in select
    given = []
    real = sel_mod.select_student
    monkeypatch.setattr(sel_mod, "select_student", lambda *a, **kw: given.append(kw["rank"]) or real(*a, **kw))
    ctx = Context(tmp_path / "run", cfg, plan, show=False, echo=lambda m: None)
    ctx.out.mkdir()
    select_stage(ctx)
    assert given and set(given) == {rank}
    with pytest.raises(BadInputError, match="rank"):
        CompressConfig.make(**{**_cfg(tiny_assets, stored, 16).model_dump(), "rank": "flops"})
