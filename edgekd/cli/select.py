"""`edgekd select --profile FILE --budget-ms B`: the largest student predicted to meet a budget."""
from __future__ import annotations

import click

from ..verdict import PREDICTED_METRICS
from .common import emit_json, json_option


@click.command("select", short_help="Pick the largest student predicted to meet a budget.")
@click.option("--profile", "profile_path", required=True, type=click.Path(dir_okay=False),
              help="Latency profile JSON written by `edgekd profile`.")
@click.option("--budget-ms", type=float, required=True, help="Latency budget in milliseconds.")
@click.option("--metric", type=click.Choice(PREDICTED_METRICS), default="p90", show_default=True,
              help="Latency statistic the budget applies to.")
@click.option("--verify", is_flag=True,
              help="Measure the pick on the profile's target; step down while it misses the budget, "
                   "and try larger candidates while the measurement leaves room.")
@click.option("--strict", is_flag=True,
              help="Refuse a profile measured in another environment, or one whose re-calibration finds "
                   "this machine outside [0.67, 1.5]x the profile's speed (default: warn).")
@click.option("--recalibrate/--no-recalibrate", "recal", default=True, show_default=True,
              help="Measure the profile's reference model here first (a few seconds) and scale its "
                   "predictions by the speed factor; with --verify, measure each pick in alternation "
                   "with it and judge the drift-corrected figure.")
@click.option("--spec", "extra_specs", multiple=True, metavar="SPEC",
              help="Also consider this candidate (its blocks must be in the profile). Repeatable.")
@click.option("--derived/--grid-only", "derive", default=True, show_default=True,
              help="Also consider variants of the profiled candidates (e.g. other depths) whose "
                   "blocks are all in the profile.")
@click.option("--max-size-kb", type=float, default=None,
              help="Size budget (KB): exclude candidates whose artifact is over it (measured by the profile, "
                   "else predicted from its fit; a profile that measured none: estimated from params).")
@click.option("--max-peak-mb", type=float, default=None,
              help="Peak memory budget (MB) of one inference: exclude candidates whose peak, measured by the "
                   "profile or predicted from its fit, is over it (a profile that measured none: not judged).")
@click.option("--rank", type=click.Choice(["macs", "params"]), default=None,
              help="What 'most capacity' means: MACs, then params (hf- families' default: params do "
                   "not grow with the input's resolution), or params, then MACs (edgekd's own "
                   "families' default: inputs upscaled beyond their detail, where a higher "
                   "resolution adds MACs but no information).")
@json_option
def select_cmd(profile_path, budget_ms, metric, verify, strict, recal, extra_specs, derive, max_size_kb,
               max_peak_mb, rank, as_json):
    """Pick the student with the most capacity (--rank; by default the family's: MACs for hf-
    families, params for edgekd's own) whose predicted latency is at or under BUDGET / (1 + eps),
    eps being the profile's p95 relative prediction error.

    A budget below every candidate is an error (exit 2) that names the smallest reachable
    latency. --max-size-kb and --max-peak-mb exclude candidates by artifact size and peak memory:
    the figures the profile measured, else predicted from lines fitted to them (with the fit's
    worst error as margin); a profile made before memory was measured estimates the size from
    params and leaves the peak to verify. A memory budget below every candidate is an error
    (exit 2) naming the smallest reachable figure. With --verify, a pick that misses when measured is replaced by the next faster
    one (exit 1 when none meets the budget); a pick that meets it with room to spare is followed
    by up to three larger candidates, predicted with the pick's measured/predicted ratio, and
    the largest one measured under the budget is kept.

    A profile is re-calibrated to this machine before it is trusted: its reference model is
    measured here, and predictions are multiplied by (reference p50 here / stored); a profile
    without reference readings is used as stored, with a warning.

    Example:

    \b
        edgekd select --profile profiles/ort-cpu-mobilenetv2.json --budget-ms 0.3 --verify
    """
    from ..latency.select import select_from_file
    from ..verdict import judge_value

    on_attempt = None
    if verify and not as_json:
        def on_attempt(c):
            ok = "meets" if judge_value(c.verified_ms, budget_ms).passed else "misses"
            raw = "" if c.verified_raw_ms is None else f" drift-corrected (raw {c.verified_raw_ms:.4f} ms)"
            click.echo(f"verify {c.spec}: measured {metric} {c.verified_ms:.4f} ms{raw} ({ok} {budget_ms:g} ms)",
                       err=True)

    sel = select_from_file(profile_path, budget_ms, strict=strict,
                           on_warning=lambda msg: click.echo(f"edgekd: warning: {msg}", err=True),
                           metric=metric, extra_specs=extra_specs, derive=derive, verify=verify,
                           on_attempt=on_attempt, recalibrate_here=recal, max_size_kb=max_size_kb,
                           max_peak_mb=max_peak_mb, rank=rank)
    if as_json:
        emit_json(sel.to_dict())
        return
    _print_table(sel)


def _print_table(sel) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{sel.metric} budget {sel.budget_ms:g} ms, eps {sel.epsilon:.1%}: predicted limit "
                    f"{sel.limit_ms:.3f} ms")
    mem = any(c.size_kb is not None for c in sel.candidates)
    for col, just in (("spec", "left"), ("params", "right"), ("MMACs", "right"),
                      (f"predicted {sel.metric} ms", "right"), (f"profiled {sel.metric} ms", "right"),
                      ("verified ms", "right"), *((("size KB", "right"), ("peak MB", "right")) if mem else ()),
                      ("", "left")):
        t.add_column(col, justify=just, no_wrap=True)
    for c in sel.neighbours(3):
        mark = "[bold green]selected[/]" if c.spec == sel.chosen.spec else ("fits" if c.fits else "over")
        if c.over_memory:
            mark += " (memory)"
        if c.derived:
            mark += " (derived)"
        figures = (_figure(c.size_kb, 1, c.size_from), _figure(c.peak_mb, 2, c.peak_from)) if mem else ()
        t.add_row(c.spec, f"{c.params:,}", f"{c.macs / 1e6:.2f}", f"{c.predicted_ms:.4f}",
                  "" if c.measured_ms is None else f"{c.measured_ms:.4f}",
                  "" if c.verified_ms is None else f"{c.verified_ms:.4f}", *figures, mark)
    import sys

    con = Console() if sys.stdout.isatty() else Console(width=200)
    con.print(t)
    if sel.recalibration is not None:
        con.print(sel.recalibration.describe())
    if mem:
        con.print("size / peak: m measured by the profile, p predicted from its fit, e estimated from params")
    if sel.memory_note:
        con.print(sel.memory_note, markup=False)
    con.print(f"selected: [bold]{sel.chosen.spec}[/] ({sel.chosen.macs / 1e6:.2f} MMACs, "
              f"{sel.chosen.params:,} params; most capacity by {sel.rank})"
              + (f", measured {sel.chosen.verified_ms:.4f} ms ({sel.judged} figure judged)"
                 if sel.chosen.verified_ms is not None else ""))


def _figure(value, digits: int, source: str) -> str:
    """'48.1 m': the figure and the first letter of where it comes from (measured, predicted, estimated)."""
    return "" if value is None else f"{value:.{digits}f} {source[:1]}"
