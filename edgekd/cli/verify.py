"""`edgekd verify ARTIFACT --target T --data SPEC`: accuracy, parity and latency on the target."""
from __future__ import annotations

import click

from ..verdict import METRICS
from .common import emit_json, json_option, resolve_target, trust_code_option


@click.command("verify", short_help="Check accuracy, parity and latency on a target.")
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--target", "-t", "target_name", required=True,
              help="Target name (see `edgekd targets`) or the path of a target YAML file.")
@click.option("--data", "-d", "data", required=True, help="Data spec whose validation split is used (digits, shapes[:knobs], folder:DIR, ...).")
@click.option("--resolution", type=int, default=None, help="Resize images to N×N [default: the artifact's input].")
@click.option("--budget-ms", type=float, default=None, help="Latency budget in milliseconds.")
@click.option("--metric", type=click.Choice(METRICS), default="p90", show_default=True,
              help="Latency statistic the budget applies to (p90: judged on its 95% interval).")
@click.option("--min-accuracy", type=float, default=None, help="Minimum top-1 accuracy (a fraction, e.g. 0.95).")
@click.option("--max-drop", type=float, default=None,
              help="Maximum top-1 drop from --reference (a fraction, e.g. 0.01).")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="The torch student (student.pt) for the parity check and --max-drop.")
@click.option("--max-size-kb", type=float, default=None,
              help="Memory budget: the artifact's size in KB (all its files, as the runtime reads them).")
@click.option("--max-peak-mb", type=float, default=None,
              help="Memory budget: peak memory of one inference in MB (docs/MEMORY.md).")
@click.option("--threads", type=int, default=None, help="Override the target's thread count.")
@click.option("--samples", "samples_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the raw per-inference latency samples (ms) to this JSON file.")
@json_option
@trust_code_option
def verify_cmd(artifact, target_name, data, resolution, budget_ms, metric, min_accuracy, max_drop, reference,
               max_size_kb, max_peak_mb, threads, samples_path, as_json):
    """Verify ARTIFACT on a target: top-1 accuracy through the target's runtime on the validation
    set, parity against the torch student (--reference), and latency measured per docs/LATENCY.md.

    Exit 0 when every requirement holds, 1 when one fails (the numbers are printed), 3 when
    the latency interval straddles the budget, 2 when ARTIFACT no longer matches the
    manifest.json beside it. A target with remote: is verified on its device (docs/REMOTE.md):
    the artifact, the validation arrays and --reference are copied there.

    Example:

    \b
        edgekd verify out/run/ort-cpu/model.onnx -t ort-cpu --data digits --budget-ms 0.2 \\
            --reference out/run/student.pt
    """
    from ..errors import InconclusiveError, VerdictError
    from ..verify import verify_artifact

    target = resolve_target(target_name, threads=threads)
    rep = verify_artifact(artifact, target, data, budget_ms=budget_ms, min_accuracy=min_accuracy,
                          max_drop=max_drop, reference=reference, metric=metric, resolution=resolution,
                          max_size_kb=max_size_kb, max_peak_mb=max_peak_mb)
    if samples_path and rep.samples_ms is not None:
        from ..util_io import atomic_write_json

        atomic_write_json(samples_path, {"target": rep.target, "artifact_sha256": rep.artifact_sha256,
                                         "samples_ms": [float(v) for v in rep.samples_ms]})
    if as_json:
        emit_json(rep.to_dict())
    else:
        _print(rep)
    bad = "; ".join(f"{c.name}: {c.detail}" for c in rep.failures())
    if rep.verdict == "fail":
        raise VerdictError(f"{rep.artifact} does not meet its requirements on {rep.target}{rep.where}: {bad}")
    if rep.verdict == "inconclusive":
        raise InconclusiveError(f"{rep.artifact} on {rep.target}{rep.where}: {bad}",
                                hint="re-run on a quieter machine or with a longer measurement")


def _print(rep) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"verify {rep.artifact} on {rep.target}"))
    for col in ("check", "verdict", "detail"):
        t.add_column(col)
    color = {"pass": "green", "fail": "red", "inconclusive": "yellow"}
    for c in rep.checks:
        t.add_row(c.name, f"[{color[c.verdict]}]{c.verdict}[/]", escape(c.detail))
    con = Console()
    if rep.checks:
        con.print(t)
    s = rep.latency
    con.print(f"accuracy {rep.accuracy:.4f} on {rep.n_val} validation samples"
              + (f" (torch reference {rep.reference_accuracy:.4f})" if rep.reference_accuracy is not None else ""))
    con.print(f"latency p50 {s.p50:.4f} ms, p90 {s.p90:.4f} ms (95% CI {s.p90_ci[0]:.4f}..{s.p90_ci[1]:.4f}), "
              f"n {s.n}" + (" [yellow]unstable[/]" if s.unstable else ""))
    if rep.manifest:
        con.print(f"sha256 matches {rep.manifest}")
    if rep.remote:
        env = rep.latency.environment
        con.print(f"measured on the device{rep.where}: {env.get('runtime')} {env.get('runtime_version')}, "
                  f"{env.get('arch') or rep.remote.get('arch')}")
    con.print(f"verdict: {rep.verdict.upper()}")
