"""`edgekd profile --target T --family F --out DIR`: measure a family's latency profile."""
from __future__ import annotations

import sys

import click

from .common import emit_json, json_option, resolve_target


@click.command("profile", short_help="Measure a family's grid on a target for prediction.")
@click.option("--target", "-t", "target_name", required=True, multiple=True,
              help="Target name (see `edgekd targets`) or the path of a target YAML file. Repeat it "
                   "to profile several devices in parallel, one profile file each (DIR/<target>-<family>.json).")
@click.option("--family", "-f", required=True, help="Student family, e.g. mobilenetv2 or resnet.")
@click.option("--grid", default="default", show_default=True, metavar="small|default|FILE",
              help="Candidates: a named grid of the family, or a file with one spec per line ('#' comments).")
@click.option("--out", "-o", "out_path", required=True, type=click.Path(), metavar="DIR",
              help="Folder to write the profile in, as DIR/<target>-<family>.json (rewritten atomically "
                   "after every measured entry). A path ending in .json names the file itself "
                   "(deprecated; with several targets, '{target}' in it or p.<target>.json).")
@click.option("--resume", is_flag=True,
              help="Keep the entries already in --out and measure only the missing ones (and two "
                   "stored blocks and models again, which put this run on the stored one's scale).")
@click.option("--in-channels", type=int, default=1, show_default=True, help="Input channels of the students.")
@click.option("--num-classes", type=int, default=10, show_default=True, help="Output classes of the students.")
@click.option("--min-time", "min_time_s", type=float, default=None,
              help="Minimum seconds of timing per whole model (target default: 1).")
@click.option("--block-min-time", "block_min_time_s", type=float, default=None,
              help="Minimum seconds of timing per block (default: 0.25, or --min-time if shorter).")
@click.option("--pairs/--no-pairs", default=True, show_default=True,
              help="Also measure each pair of adjacent blocks (the predictor's 'context' reading). "
                   "--no-pairs halves the entries of a real-size grid; the predictor then reads blocks alone.")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Where to keep exported files while measuring (default: a temporary directory).")
@json_option
def profile_cmd(target_name, family, grid, out_path, resume, in_channels, num_classes, min_time_s,
                block_min_time_s, pairs, work_dir, as_json):
    """Measure every candidate of a family's grid on a target, plus each unique block the
    runtime executes, and fit the latency predictor (sum of blocks + overhead, calibrated on a
    few whole models, validated on the rest). Shows progress with an ETA on stderr and prints
    the elapsed time. Interrupted runs keep what was complete; finish them with --resume.

    Example:

    \b
        edgekd profile -t ort-cpu --family mobilenetv2 --out profiles
    """
    from ..latency.profile import profile_family
    from ..util_io import check_output_location

    target = resolve_target(target_name[0])
    out = profile_out(out_path, family, target.name if len(target_name) == 1 else "{target}")
    check_output_location(out.replace("{target}", target.name), "--out", kind="file")
    kwargs = dict(out=out, grid=grid, resume=resume, in_channels=in_channels, num_classes=num_classes,
                  min_time_s=min_time_s, block_min_time_s=block_min_time_s, work_dir=work_dir)
    if len(target_name) > 1 or target.remote is not None:
        if not pairs:
            from ..errors import BadInputError

            raise BadInputError("--no-pairs profiles one local target", hint="drop --no-pairs, or give one --target")
        return profile_cli(list(target_name), family, as_json=as_json, **kwargs)
    kwargs["pairs"] = pairs

    if as_json or not sys.stderr.isatty():
        run = profile_family(target, family, on_event=_plain_progress(as_json), **kwargs)
    else:
        run = _with_progress_bar(target, family, kwargs)

    prof = run.profile
    v = prof.validation or {}
    summary = {
        "profile": str(run.path), "target": target.name, "family": family, "complete": prof.complete,
        "models": len(prof.models), "blocks": len(prof.blocks), "overhead_ms": prof.overhead_ms,
        "measured": run.measured, "skipped": run.skipped, "elapsed_s": round(run.elapsed_s, 2),
        "calibration": prof.calibration,
        "validation": {k: v.get(k) for k in ("metric", "method", "cache", "n_heldout", "fraction_within_10pct",
                                             "p95_rel_error", "max_rel_error", "fraction_within_10pct_raw",
                                             "p95_rel_error_raw")},
        "memory": {k: v for k, v in (prof.memory or {}).items() if k != "candidates"},
    }
    if as_json:
        emit_json(summary)
        return
    _print_summary(prof, run)


def profile_out(out: str, family: str, target: str) -> str:
    """The profile file --out OUT names: OUT/<target>-<family>.json for a folder; OUT itself (with a
    deprecation warning on stderr) when it ends in .json or is an existing file, the old form."""
    from pathlib import Path

    p = Path(out)
    if p.suffix.lower() == ".json" or p.is_file():
        click.echo(f"edgekd: warning: profile --out {out} names a file, a deprecated form: give a folder "
                   f"(--out DIR writes DIR/<target>-<family>.json)", err=True)
        return str(out)
    return str(p / f"{target}-{family}.json")


def _plain_progress(as_json: bool):
    def on_event(ev):
        if ev.kind == "measured" and not as_json:
            click.echo(f"[{ev.done}/{ev.total}] {ev.what} {ev.name}: p50 {ev.latency_ms:.4f} ms", err=True)
        elif ev.kind == "salvaged":
            click.echo(f"edgekd: {ev.what}", err=True)
    return on_event


def _with_progress_bar(target, family, kwargs):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from ..latency.profile import profile_family

    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[now]}"),
                  console=console, transient=False) as bar:
        task = bar.add_task(f"profiling {family} on {target.name}", total=None, now="")

        def on_event(ev):
            if ev.kind == "planned":
                bar.update(task, total=max(ev.total, 1) if ev.total else 1, completed=0 if ev.total else 1)
            elif ev.kind == "start":
                bar.update(task, now=f"{ev.what} {ev.name}")
            elif ev.kind == "measured":
                bar.update(task, completed=ev.done, now="")
            elif ev.kind == "salvaged":
                console.print(f"edgekd: {ev.what}", markup=False)

        return profile_family(target, family, on_event=on_event, **kwargs)


def _print_summary(prof, run) -> None:
    from rich.console import Console

    c = Console()
    v = prof.validation or {}
    c.print(f"profile [bold]{run.path}[/]: {len(prof.models)} models, {len(prof.blocks)} blocks, "
            f"overhead {prof.overhead_ms:.4f} ms; measured {len(run.measured)}, kept {len(run.skipped)}")
    cal = (prof.calibration or {}).get("p50")
    if cal:
        sign = "+" if cal["b"] >= 0 else "-"
        from ..latency.predict import cache_label

        cache = cache_label(cal.get("cache", ()))
        tied = f", averaged with {len(cal['also'])} close readings" if cal.get("also") else ""
        c.print(f"predictor p50 ≈ {cal['a']:.3f}·Σblocks {sign} {abs(cal['b']):.4f} ms "
                f"(blocks read {cal.get('method', 'alone')}, cold from {cache} x L2{tied}; "
                f"calibrated on {len(cal['specs'])} models)")
    if v.get("n_heldout"):
        raw = v.get("fraction_within_10pct_raw")
        c.print(f"held-out validation: {v['fraction_within_10pct']:.0%} of {v['n_heldout']} within ±10% "
                f"of measured p50, p95 relative error {v['p95_rel_error']:.1%}"
                + (f" ({raw:.0%} before the reference model's drift correction)"
                   if raw is not None and prof.protocol.get("reference") else ""))
    else:
        c.print("held-out validation: no held-out candidates (profile more to validate the predictor)")
    mem = memory_line(prof)
    if mem:
        c.print(mem, markup=False)
    if not prof.complete:
        c.print("[yellow]profile incomplete: finish it with --resume[/]")
    c.print(f"elapsed {run.elapsed_s:.1f} s")


def memory_line(prof) -> str:
    """'memory of 5 models: size 12.1-48.3 KB (fit's worst error 1.2%), peak 3.10-3.52 MB (...); 4.1 s'."""
    mems = [m.memory for m in prof.models if m.memory]
    if not mems:
        return ""
    parts = []
    for key, unit, scale, digits in (("size", "KB", 1024, 1), ("peak", "MB", 2 ** 20, 2)):
        vals = [m[f"{key}_bytes"] / scale for m in mems if m.get(f"{key}_bytes")]
        fit = (prof.memory or {}).get(key)
        if vals:
            parts.append(f"{key} {min(vals):.{digits}f}-{max(vals):.{digits}f} {unit}"
                         + (f" (fit's worst error {fit['max_rel_error']:.1%}, {fit['error_of']})" if fit else ""))
    took = sum(m.get("elapsed_s") or 0.0 for m in mems)
    return f"memory of {len(mems)} models: " + ", ".join(parts) + f"; measuring it took {took:.1f} s"


def profile_cli(target_names, family: str, *, out: str, as_json: bool = False,
                progress: bool | None = None, **kwargs) -> int:
    """`edgekd profile --target A --target B ...` (or one remote target): remote.profile.profile_targets
    with one progress line per target, then a summary (or JSON); the first target's error is raised
    after all finish (with --json: its exit code is returned, the error in the JSON)."""
    import threading

    from ..remote.profile import profile_targets
    from ..targets import load_target

    progress = (not as_json and sys.stderr.isatty()) if progress is None else progress
    specs = [load_target(t) for t in target_names]
    if progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TextColumn("{task.fields[now]}"), console=Console(stderr=True))
        tasks = {s.name: bar.add_task(f"{family} on {s.name}", total=None, now="") for s in specs}

        def on_event(name, ev):
            t = tasks[name]
            if ev.kind == "planned" and ev.total:
                bar.update(t, total=ev.total, completed=0)
            elif ev.kind == "start":
                bar.update(t, now=f"{ev.what} {ev.name}")
            elif ev.kind == "measured":
                bar.update(t, total=ev.total or None, completed=ev.done, now=f"{ev.what} {ev.name}")
            elif ev.kind == "done":
                bar.update(t, total=max(ev.total, 1), completed=max(ev.total, 1), now="done")
        with bar:
            runs = profile_targets(specs, family, out=out, on_event=on_event, **kwargs)
    else:
        lock = threading.Lock()

        def on_event(name, ev):
            if ev.kind == "measured" and not as_json:
                with lock:
                    click.echo(f"{name}: [{ev.done}/{ev.total}] {ev.what} {ev.name}: p50 {ev.latency_ms:.4f} ms",
                               err=True)
        runs = profile_targets(specs, family, out=out, on_event=on_event, **kwargs)

    summary = [r.to_dict() for r in runs]
    if as_json:
        emit_json({"family": family, "targets": summary})
    else:
        for row in summary:
            if row["ok"]:
                click.echo(f"{row['target']}: {row['profile']} ({row['models']} models, {row['blocks']} blocks, "
                           f"measured on {row['fingerprint_host']}, {row['elapsed_s']} s)")
            else:
                click.echo(f"{row['target']}: failed: {row['error']}", err=True)
    failed = [r for r in runs if r.error is not None]
    if failed:
        if as_json:
            return failed[0].error.exit_code
        raise failed[0].error
    return 0
