"""`edgekd doctor --target T`: check a target end to end (local or over SSH) and say what to fix."""
from __future__ import annotations

import click

from .common import emit_json, json_option, resolve_target


@click.command("doctor", short_help="Check that a target works end to end.")
@click.option("--target", "-t", "target_name", required=True,
              help="Target name (see `edgekd targets`) or the path of a target YAML file.")
@json_option
def doctor_cmd(target_name, as_json):
    """Check that TARGET works, end to end, and say what to fix.

    Local target: its runtime is installed and a tiny model builds, loads and runs.
    Remote target (a `remote:` section): ssh gets in (BatchMode, no prompts), the device's
    edgekd is this same version, the target's runtime is installed there, a tiny model is
    copied over and sha256-checked, and it runs there with the device's fingerprint coming back.
    Exit 0 when everything works, else the first failing check's code (4: something missing).

    Example:

    \b
        edgekd doctor -t ort-cpu
    """
    from rich.markup import escape

    from ..remote.doctor import doctor

    target = resolve_target(target_name)

    def show(c):
        if as_json:
            return
        mark = {True: "[green]ok[/]  ", False: "[red]FAIL[/]", None: "[dim]skip[/]"}[c.ok]
        _console().print(f"{mark} {c.name:<10} {escape(str(c.detail))}")  # escape: "edgekd[tensorrt]"
        if c.ok is False and c.fix:
            _console().print(f"     [yellow]fix:[/] {escape(str(c.fix))}")

    if not as_json:
        where = " (over ssh)" if target.remote is not None else " (this machine)"
        _console().print(f"checking target [bold]{escape(target.name)}[/]{where}: {escape(target.summary())}")
    report = doctor(target, on_check=show)
    if as_json:
        emit_json(report.to_dict())
    else:
        verdict = "[green]all checks passed[/]" if report.ok else f"[red]not ready[/] (exit {report.exit_code})"
        _console().print(verdict)
    return report.exit_code


_CONSOLES: dict = {}


def _console():
    from rich.console import Console

    if "c" not in _CONSOLES:
        _CONSOLES["c"] = Console(highlight=False, soft_wrap=True)
    return _CONSOLES["c"]
