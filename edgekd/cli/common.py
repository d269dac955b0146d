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


VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE")
_RANK = {"PASS": 0, "INCONCLUSIVE": 1, "ERROR": 1, "FAIL": 2}  # a gate ERROR (runtime missing) decided nothing


def _verdict_of(doc: dict) -> "str | None":
    """The command's verdict in the one spelling (PASS/FAIL/INCONCLUSIVE), or None when it has none:
    its own `verdict` (any case), the worst of a gate's result statuses, else a `passed`/`ok`/`met`
    flag (verify, doctor, prune)."""
    v = doc.get("verdict")
    if isinstance(v, str) and v.upper() in VERDICTS:
        return v.upper()
    results = doc.get("results")
    if isinstance(results, list) and results and all(isinstance(r, dict) and r.get("status") in _RANK
                                                     for r in results):
        worst = max((r["status"] for r in results), key=_RANK.__getitem__)
        return "INCONCLUSIVE" if worst == "ERROR" else worst
    for key in ("passed", "ok", "met"):
        if isinstance(doc.get(key), bool):
            return "PASS" if doc[key] else "FAIL"
    return None


def _latency_of(doc: dict) -> "dict | None":
    """The one latency block (`latency_ms`, statistics in ms with `p90_ci`) where a command reports
    it under another name: verify's `latency`, calibrate's `stats`, compress's `verify.latency`, a gate
    result's `decision`."""
    if isinstance(doc.get("latency_ms"), dict):
        return None
    verify = doc.get("verify") if isinstance(doc.get("verify"), dict) else {}
    for lat in (doc.get("latency"), doc.get("stats"), verify.get("latency")):
        if isinstance(lat, dict) and "p90_ci" in lat:
            return lat
    dec = doc.get("decision")
    if isinstance(dec, dict) and dec.get("metric") and "ci" in dec:
        m = str(dec["metric"])
        return {m: dec.get("value"), f"{m}_ci": dec["ci"], "n": dec.get("n")}
    return None


def envelope(obj: Any, command: "str | None" = None) -> dict:
    """``obj`` (a command's payload) in the envelope every --json shares (docs/JSON.md): `schema`
    ("edgekd.<command>/v1" unless the payload names its own), `verdict` where there is one, and
    `latency_ms` (with `p90_ci`) wherever a latency block sits under another name; the payload's
    own keys follow unchanged (a `verdict` among them in the one spelling)."""
    doc = _clean(obj)
    if not isinstance(doc, dict):
        doc = {"result": doc}
    if command is None:
        ctx = click.get_current_context(silent=True)
        command = ctx.info_name if ctx is not None and ctx.info_name else "edgekd"
    out: dict = {"schema": doc.get("schema") or f"edgekd.{command}/v1"}
    verdict = _verdict_of(doc)
    if verdict is not None:
        out["verdict"] = verdict
    lat = _latency_of(doc)
    if lat is not None:
        out["latency_ms"] = lat
    for key in ("results", "targets"):  # a list of per-model (gate) or per-target (profile) rows
        rows = doc.get(key)
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            doc[key] = [_row(r) for r in rows]
    out.update({k: v for k, v in doc.items() if k not in out})
    return out


def _row(row: dict) -> dict:
    lat = _latency_of(row)
    return {**row, "latency_ms": lat} if lat is not None else row


def emit_json(obj: Any, *, command: "str | None" = None) -> None:
    """One JSON object on stdout (NaN/inf become null), nothing else, in the shared envelope
    (envelope(); the command's name comes from click's context unless given)."""
    sys.stdout.write(json.dumps(envelope(obj, command), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object on stdout instead of a table.")

TRUST_CODE_HELP = ("Allow model files that run code when loaded or run: TorchScript, torch.export "
                   ".pt2 and pickled models (they can read and write any file you can). Give it only "
                   "for files you trust.")


def trust_code_option(f=None, *, pass_as: str | None = None):
    """--trust-code (alias --trust-pickle): the command runs inside models.ref.trust_code(), so
    every TorchScript or .pt2 file it opens is allowed; ``pass_as`` also hands the flag to the
    command under that name (compress and distill pass it on as trust_pickle)."""
    import functools

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, trust_code: bool = False, **kwargs):
            from ..models.ref import trust_code as trusting

            if pass_as:
                kwargs[pass_as] = trust_code
            with trusting(trust_code):
                return fn(*args, **kwargs)

        return click.option("--trust-code", "--trust-pickle", "trust_code", is_flag=True,
                            help=TRUST_CODE_HELP)(wrapper)

    return deco(f) if f is not None else deco


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


def sample_shape(shape: "str | None", resolution: "int | None", in_channels: int) -> "tuple[int, ...] | None":
    """The per-sample input shape from --shape C,H,W or --resolution N (in_channels,N,N); None when
    neither is given; BadInputError when both are."""
    from ..errors import BadInputError

    if shape and resolution:
        raise BadInputError("--shape and --resolution both set the input size",
                            hint="give one: --resolution N for N×N images, or --shape C,H,W")
    if resolution is not None:
        if resolution < 1:
            raise BadInputError(f"--resolution {resolution} must be at least 1")
        return (in_channels, resolution, resolution)
    return parse_shape(shape) if shape else None


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


# Output options, by the parameter name commands give them, and whether each names a file or a
# directory. Every command's outputs are checked with util_io.check_output_location before the
# command does any work (cli/main.py applies check_output_options to each command it loads).
OUTPUT_OPTIONS: dict[str, tuple[str, str]] = {
    "out": ("--out", "dir"), "out_dir": ("--out", "dir"), "work_dir": ("--work-dir", "dir"),
    "samples_path": ("--samples", "file"), "junit_path": ("--junit", "file"),
    "save_baseline": ("--save-baseline", "file"), "json_out": ("--json-out", "file"),
    "history_db": ("--history-db", "file"),
}


def _output_kind(param, default: str) -> str:
    """"dir" or "file" from a click.Path option's type (file_okay / dir_okay), else ``default``."""
    t = getattr(param, "type", None)
    if isinstance(t, click.Path):
        if not t.file_okay:
            return "dir"
        if not t.dir_okay:
            return "file"
    return default


def check_output_options(command: click.Command, values: dict) -> None:
    """Exit 2 naming the path when an output option of ``command`` (OUTPUT_OPTIONS) points where
    nothing can be written: checked before measuring, training or writing anything."""
    from ..util_io import check_output_location

    for param in command.params:
        entry = OUTPUT_OPTIONS.get(param.name or "")
        value = values.get(param.name or "")
        if entry is None or value is None or not isinstance(param, click.Option):
            continue
        flag = max(param.opts, key=len) if param.opts else entry[0]
        check_output_location(value, flag, kind=_output_kind(param, entry[1]))


def with_output_checks(command: click.Command) -> click.Command:
    """``command`` with check_output_options run on its values before its callback (once)."""
    import functools

    if getattr(command, "_edgekd_outputs_checked", False) or command.callback is None:
        return command
    inner = command.callback

    @functools.wraps(inner)
    def callback(*args, **kwargs):
        check_output_options(command, kwargs)
        return inner(*args, **kwargs)

    command.callback = callback
    command._edgekd_outputs_checked = True
    return command
