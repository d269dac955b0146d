"""The select stage: the student to distill, given or chosen from the target's latency profile
(profiled into OUT/profile first when no stored profile applies here)."""
from __future__ import annotations

import shutil
from dataclasses import replace

from ..errors import BadInputError, VerdictError
from .context import Context
from .results import SelectResult


def select_stage(ctx: Context) -> SelectResult:
    from ..latency.profile import load_profile
    from ..latency.select import select_student
    from ..models import parse_spec
    from .plan import profile_resolutions

    cfg, b = ctx.cfg, ctx.bundle
    if cfg.student != "auto":
        spec = parse_spec(cfg.student).spec
        if parse_spec(spec).res != b.input_shape[-1]:
            raise BadInputError(f"--student {spec} takes {parse_spec(spec).res}px inputs but the data is "
                                f"{b.input_shape[-1]}px", hint="set the spec's res knob or --resolution")
        return SelectResult(spec=spec, source="given", needs_pruning=None)
    res = b.input_shape[-1]
    prof_path = ctx.plan.profile
    profile = load_profile(prof_path) if prof_path is not None else None
    if profile is not None and res not in profile_resolutions(profile):
        # the stored profile was measured at other sizes (the plan could not know the data's):
        # profile the grid at the data's resolution, as when no profile applies here
        if ctx.show:
            ctx.echo(f"[select] {prof_path.name} has no candidate at the data's {res} px: "
                     f"profiling the '{cfg.grid}' grid at {res} px instead")
        profile = None
    if profile is None:
        prof_path, profile = _profile_grid(ctx, res)
    at_res = [m.spec for m in profile.models if parse_spec(m.spec).res == res]
    if not at_res:
        raise BadInputError(f"profile {prof_path} has no candidate at the data's {res}px",
                            hint="pass --resolution to match it, or --student SPEC")
    note = None
    try:
        sel = select_student(_only(profile, at_res), cfg.budget_ms, metric=cfg.metric, verify=True, rank=cfg.rank,
                             target=ctx.plan.target, max_size_kb=cfg.max_size_kb, max_peak_mb=cfg.max_peak_mb)
        needs = False
    except (BadInputError, VerdictError) as exc:
        if cfg.prune == "off":
            raise
        # The budget needs more than selection can give: go on with the fastest candidate and
        # let the prune stage shrink it after distillation (verify reports what is left).
        fast = min((m for m in profile.models if m.spec in at_res), key=lambda m: m.latency.metric(cfg.metric))
        sel = select_student(_only(profile, at_res), fast.latency.metric(cfg.metric) * 10, metric=cfg.metric,
                             rank=cfg.rank)
        sel = _force_choice(sel, fast.spec, cfg.budget_ms)
        needs, note = True, exc.one_line()
    if parse_spec(sel.chosen.spec).res != res:
        raise BadInputError(f"the selection picked {sel.chosen.spec}, not a {res}px student",
                            hint="pass --student SPEC at the data's resolution")
    return SelectResult(spec=sel.chosen.spec, source="profile", profile=str(prof_path), selection=sel.to_dict(),
                        needs_pruning=needs, note=note)


def _profile_grid(ctx: Context, res: int):
    """Profile the config's grid of the planned family, moved to ``res``, into OUT/profile."""
    from ..latency.profile import profile_family, read_grid

    cfg, b, fam = ctx.cfg, ctx.bundle, ctx.plan.family
    grid = _at_resolution(read_grid(cfg.grid, fam, in_channels=b.in_channels, num_classes=b.num_classes), res)
    if not grid:
        raise BadInputError(f"the '{cfg.grid}' grid of {fam} has no candidate at {res}px",
                            hint="pass --resolution matching the grid or --student SPEC")
    grid_file = ctx.out / "profile" / "grid.txt"
    grid_file.parent.mkdir(parents=True, exist_ok=True)
    grid_file.write_text("\n".join(grid) + "\n", encoding="utf-8")
    prof_path = ctx.out / "profile" / f"{ctx.plan.target.name}-{fam}.json"
    on_event = None
    if ctx.show:
        def on_event(ev):
            if ev.kind == "measured":
                ctx.echo(f"  profile [{ev.done}/{ev.total}] {ev.what} {ev.name}: p50 {ev.latency_ms:.4f} ms")
    profile = profile_family(ctx.plan.target, fam, out=prof_path, grid=str(grid_file),
                             resume=prof_path.exists(), in_channels=b.in_channels,
                             num_classes=b.num_classes, min_time_s=cfg.profile_min_time_s,
                             block_min_time_s=min(0.2, cfg.profile_min_time_s),
                             work_dir=ctx.out / "profile" / "work", on_event=on_event).profile
    shutil.rmtree(ctx.out / "profile" / "work", ignore_errors=True)
    return prof_path, profile


def _at_resolution(specs, res: int) -> list[str]:
    """The grid's candidates moved to the data's resolution (each distinct spec once): every
    point of the grid is then one the data can feed, and selection has all of them to choose from."""
    from ..models import parse_spec
    from ..models.spec import StudentConfig

    out: list[str] = []
    for s in specs:
        c = parse_spec(s)
        try:
            moved = parse_spec(StudentConfig(c.family, c.config.model_copy(update={"res": res})).spec).spec
        except BadInputError:
            continue
        if moved not in out:
            out.append(moved)
    return out


def _only(profile, specs):
    return replace(profile, models=[m for m in profile.models if m.spec in specs])


def _force_choice(sel, spec, budget_ms):
    limit = budget_ms / (1.0 + sel.epsilon)
    cands = tuple(replace(c, fits=c.predicted_ms <= limit) for c in sel.candidates)
    chosen = next(c for c in cands if c.spec == spec)
    return replace(sel, chosen=chosen, candidates=cands, budget_ms=float(budget_ms), limit_ms=limit)
