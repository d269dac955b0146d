"""Helpers shared by commands: JSON output and target resolution."""
from __future__ import annotations

import json
import math
import sys
from typing import Any

import click


def _clean(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "to_dict"):
        return _clean(o.to_dict())
    if hasattr(o, "value") and hasattr(o, "name") and type(o).__module__ != "builtins":
        return o.value  # enums
    if hasattr(o, "__fspath__"):
        return str(o)
    return o


def emit_json(obj: Any) -> None:
    """One JSON object on stdout (NaN/inf become null), nothing else."""
    sys.stdout.write(json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object on stdout instead of a table.")
