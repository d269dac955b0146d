"""`edgekd bench MODEL --target T`: latency measured exactly as docs/LATENCY.md says."""
from __future__ import annotations

import sys

import click

from ..targets import measure_settings
from .common import emit_json, json_option, resolve_target, sample_shape as _sample_shape, trust_code_option


@click.command("bench", short_help="Measure a model's latency on a target.")
@click.argument("model")
@click.option("--target", "-t", "target_name", default="ort-cpu", show_default=True,
              help="Target name (see `edgekd targets`) or the path of a target YAML file.")
@click.option("--shape", default=None, metavar="C,H,W",
              help="Per-sample input shape, needed when the model's input is dynamic.")
@click.option("--resolution", type=int, default=None, metavar="N",
              help="Square input of N×N with --in-channels channels (the same as --shape C,N,N).")
@click.option("--in-channels", type=click.IntRange(min=1), default=1, show_default=True,
              help="Input channels when MODEL is a student spec (3 for RGB models).")
@click.option("--threads", type=int, default=None,
              help="Override the target's thread count for this run.")
@click.option("--min-iters", type=int, default=None,
              help="Minimum timed inferences (target default: 200).")
@click.option("--min-time", "min_time_s", type=float, default=None,
              help="Minimum seconds of timing (target default: 1).")
@click.option("--warmup", "warmup_s", type=float, default=None,
              help="Minimum warm-up seconds (target default: 1).")
@click.option("--sessions", type=int, default=None,
              help="Load the model this many times and split the samples between the loads "
                   "(target default: 1); each load places the model's buffers anew.")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Where to keep built artifacts (default: a temporary directory).")
@click.option("--samples", "samples_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the raw per-inference samples (ms) to this JSON file.")
@click.option("--reference/--no-reference", "reference", default=None,
              help="Measure the target's reference workload in alternation with the model and report "
                   "drift-corrected figures against the calibration `edgekd calibrate` stored (default: on "
                   "when one exists for the target on this machine). The reference takes about 1/6 of "
                   "the timed time; the timing is lengthened by as much.")
@json_option
@trust_code_option
def bench_cmd(model, target_name, shape, resolution, in_channels, threads, min_iters, min_time_s, warmup_s, sessions, work_dir,
              samples_path, reference, as_json):
    """Measure MODEL's latency on a target.

    MODEL is an .onnx file, an OpenVINO .xml, a TensorRT engine (.engine/.plan), a TorchScript
    or torch.export file (.pt/.ts/.pt2), or a student spec such as
    'mobilenetv2:width=0.5,res=32'. The session build and the first inference are reported
    apart; then a time-based warm-up, at least 200 timed inferences, and p50/p90/p99, mean,
    std, CV, IQR/median, a confidence interval for p90, an unstable flag (IQR/median > 0.10),
    the samples during which the process was descheduled ("disturbed") and the environment
    fingerprint. With a calibration (`edgekd calibrate`), also the machine's speed factor and
    drift-corrected figures, which are the ones a budget is judged on.

    Example:

    \b
        edgekd bench mobilenetv2:width=0.5,res=32 -t openvino-cpu
        edgekd bench model.onnx -t ort-cpu --json
    """
    import tempfile
    from pathlib import Path

    from ..latency.bench import bench
    from ..util_io import atomic_write_json

    target = resolve_target(target_name, threads=threads)
    overrides = {k: v for k, v in (("min_iters", min_iters), ("min_time_s", min_time_s),
                                   ("warmup_s", warmup_s), ("sessions", sessions)) if v is not None}
    settings = measure_settings(target.measure, overrides) if overrides else target.measure
    sample_shape = _sample_shape(shape, resolution, in_channels)

    def run(wd):
        if as_json or not sys.stderr.isatty():
            return bench(model, target, work_dir=wd, settings=settings, sample_shape=sample_shape,
                         in_channels=in_channels, reference=reference, memory=True)
        from rich.console import Console

        with Console(stderr=True).status(f"measuring {model} on {target.name} ...") as status:
            def progress(n, want):
                status.update(f"measuring {model} on {target.name}: {n} samples")
            return bench(model, target, work_dir=wd, settings=settings, sample_shape=sample_shape,
                         on_progress=progress, in_channels=in_channels, reference=reference, memory=True)

    if work_dir:
        result = run(Path(work_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="edgekd-bench-") as tmp:
            result = run(Path(tmp))

    for w in result.warnings:
        click.echo(f"edgekd: warning: {w}", err=True)
    if samples_path:
        atomic_write_json(samples_path, {"target": result.target, "model_sha256": result.model_sha256,
                                         "environment": dict(result.environment),
                                         "samples_ms": [float(v) for v in result.samples_ms]})
    if as_json:
        emit_json(result.to_dict())
        return
    _print_table(result)


def _print_table(r) -> None:
    from rich.console import Console
    from rich.table import Table

    s = r.stats
    t = Table(title=f"{r.model} on {r.target} ({r.artifact_format})", show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("p50 ms", f"{s.p50:.4f}"), ("p90 ms", f"{s.p90:.4f}"),
        (f"p90 {int(s.confidence * 100)}% CI ms", f"[{s.p90_ci[0]:.4f}, {s.p90_ci[1]:.4f}]"),
        ("p99 ms" + ("" if s.p99_trustworthy else " (n < 662: indicative)"), f"{s.p99:.4f}"),
        ("mean ± std ms", f"{s.mean:.4f} ± {s.std:.4f}"), ("min / max ms", f"{s.min:.4f} / {s.max:.4f}"),
        ("CV", f"{s.cv:.3f}"), ("IQR/median", f"{s.iqr_over_median:.3f}"),
        ("samples / warm-up", f"{s.n} / {s.warmup}"),
        ("first inference ms", f"{r.first_inference_ms:.3f}"), ("build s", f"{r.build_s:.3f}"),
        ("unstable", "[red]yes[/]" if s.unstable else "no"),
        ("disturbed samples", f"{s.disturbed} of {s.n}"),
    ]
    mem = getattr(r, "memory", None)
    if mem is not None:  # latency.memory: beside latency, how big and how hungry
        rows += [("size KB", "?" if mem.size_kb is None else f"{mem.size_kb:.1f} ({mem.size_of})"),
                 ("peak memory MB", "?" if mem.peak_mb is None else f"{mem.peak_mb:.2f} ({mem.peak_source})")]
        if mem.planned_arena_bytes is not None:
            rows.append(("planned arena KB", f"{mem.planned_arena_bytes / 1024:.1f} (the runtime's memory plan; "
                                             "delegate workspace not included)"))
    d, c = getattr(r, "drift", None), getattr(r, "corrected", None)
    if d is not None and c is not None:
        rows += [("speed factor", f"{d.factor:.3f} (reference p50 {d.reference_p50_ms:.4f} ms, "
                                  f"calibrated {d.calibrated_p50_ms:.4f} ms)"),
                 ("corrected p50 / p90 ms", f"{c.p50:.4f} / {c.p90:.4f}"),
                 (f"corrected p90 {int(c.confidence * 100)}% CI ms", f"[{c.p90_ci[0]:.4f}, {c.p90_ci[1]:.4f}]"),
                 ("judged figures", f"corrected ({d.kept} undisturbed samples; reference {d.share:.0%} "
                                    f"of timed time)")]
    for k, v in rows:
        t.add_row(k, v)
    c = Console()
    c.print(t)
    e = r.environment
    c.print(f"[dim]{e.get('cpu')} | {e.get('logical_cores')} cores | threads {e.get('threads')} | "
            f"{e.get('runtime')} {e.get('runtime_version')} | {e.get('precision')} | batch {e.get('batch')} "
            f"| shape {e.get('input_shape')}[/]")
    if e.get("remote"):  # measured on a device over SSH (edgekd.remote)
        c.print(f"[dim]measured on device {e.get('host')} via ssh {e['remote'].get('host')}[/]")
