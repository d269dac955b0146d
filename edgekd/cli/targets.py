"""`edgekd targets`: every known target and whether it can run here."""
from __future__ import annotations

import click

from .common import emit_json, json_option


@click.command("targets", short_help="List the targets and whether each runs here.")
@json_option
def targets_cmd(as_json: bool) -> None:
    """List the known targets (targets/*.yaml and EDGEKD_TARGETS_PATH) and whether each can
    run on this machine; when it can't, say which package or device is missing.

    Example:

    \b
        edgekd targets
        edgekd targets --json
    """
    from ..backends import get_backend
    from ..targets import list_targets

    rows = []
    for t in list_targets():
        ok, reason = get_backend(t.runtime).available(t)
        rows.append({"name": t.name, "runtime": t.runtime.value, "device": t.device.value,
                     "precision": t.precision.value, "threads": t.threads, "batch": t.batch,
                     "available": ok, "reason": "" if ok else reason,
                     "runtime_version": reason if ok else None,
                     "description": t.description, "source": t.source})
    if as_json:
        emit_json({"targets": rows})
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="edgekd targets")
    for col in ("name", "runtime", "device", "precision", "available", "note"):
        table.add_column(col)
    for r in rows:
        note = r["runtime_version"] if r["available"] else r["reason"]
        table.add_row(r["name"], r["runtime"], r["device"], r["precision"],
                      "[green]yes[/]" if r["available"] else "[red]no[/]", escape(note or ""))
    Console().print(table)
