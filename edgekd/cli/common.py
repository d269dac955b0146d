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


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,16,16' or '1x16x16' -> (1, 16, 16); BadInputError otherwise."""
    from ..errors import BadInputError

    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise BadInputError(f"--shape '{text}' is not a list of positive integers",
                            hint="write it as C,H,W, e.g. 1,16,16")
    return shape


def resolve_target(name: str, *, threads: int | None = None):
    """Load a target by name or path, optionally overriding its thread count."""
    from ..errors import BadInputError
    from ..targets import load_target

    t = load_target(name)
    if threads is not None:
        if threads < 1:
            raise BadInputError(f"--threads {threads} must be at least 1")
        t = t.model_copy(update={"threads": threads})
    return t
