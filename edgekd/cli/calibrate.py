"""`edgekd calibrate --target T`: store the reference workload's speed on this machine."""
from __future__ import annotations

import click

from ..targets import measure_settings
from .common import emit_json, json_option, resolve_target


@click.command("calibrate", short_help="Measure the reference workload, for drift correction.")
@click.option("--target", "-t", "target_name", default="ort-cpu", show_default=True,
              help="Target name (see `edgekd targets`) or the path of a target YAML file.")
@click.option("--threads", type=int, default=None, help="Override the target's thread count.")
@click.option("--min-time", "min_time_s", type=float, default=None,
              help="Seconds of timing (default: 3 x the target's min_time_s).")
@json_option
def calibrate_cmd(target_name, threads, min_time_s, as_json):
    """Measure the reference workload (a small edgekd CNN built from a fixed seed, exported once
    and cached) alone on this machine for a target, and store its figures under the cache
    directory, keyed by target and machine fingerprint.

    Afterwards `edgekd bench` on that target measures the reference in alternation with the
    model (about 1/6 of the timed time) and reports the machine's speed factor (reference p50
    now / calibrated p50) and drift-corrected figures, which budgets are judged on. Calibrate
    on a quiet machine, and again after changing the runtime.

    Example:

    \b
        edgekd calibrate -t ort-cpu
    """
    from ..latency.bench import calibrate

    target = resolve_target(target_name, threads=threads)
    settings = measure_settings(target.measure, {"min_time_s": min_time_s}) if min_time_s is not None else None
    cal = calibrate(target, settings=settings)
    if as_json:
        emit_json({**cal.to_dict(), "path": cal.path})
        return
    s = cal.stats
    click.echo(f"reference {cal.reference} on {cal.target}: p50 {s.p50:.4f} ms, p90 {s.p90:.4f} ms, "
               f"IQR/median {s.iqr_over_median:.3f}, n {s.n}, disturbed {s.disturbed}"
               + (" (unstable: calibrate again on a quieter machine)" if s.unstable else ""))
    click.echo(f"stored in {cal.path}")
