"""Reports of a compress run: report.json (schema "edgekd.report/v1"), report.md (fits a CI step
summary) and report.html (one self-contained file, plots as inline SVG).

    build_report(out_dir, state) -> dict        the report.json document
    write_reports(out_dir, state) -> {kind: path}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

SCHEMA = "edgekd.report/v1"

__all__ = ["SCHEMA", "build_report", "write_reports", "read_history"]


def read_history(path: Path) -> list[dict]:
    """train.jsonl -> one dict per epoch (a missing or torn last line is skipped)."""
    rows: list[dict] = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _res(state: Mapping, stage: str) -> dict:
    return dict((state.get("stages", {}).get(stage) or {}).get("result") or {})


def _deployed_cost(dis: Mapping, pru: Mapping) -> Any:
    """MACs and params of the model shipped: the pruned student's when the prune stage kept one."""
    after = pru.get("after") or {}
    if pru.get("checkpoint") and after.get("params") is not None:
        return {"macs": after.get("macs"), "params": after["params"]}
    return dis.get("student_cost")


def build_report(out_dir: "str | Path", state: Mapping[str, Any]) -> dict:
    """The report document, from the run's state (and its train.jsonl)."""
    from ..manifest import now

    out = Path(out_dir)
    sel, dis, exp = _res(state, "select"), _res(state, "distill"), _res(state, "export")
    qua, ver, pru = _res(state, "quantize"), _res(state, "verify"), _res(state, "prune")
    cfg = dict(state.get("config", {}))
    samples = ver.pop("samples_ms", None)
    lat = ver.get("latency") or {}
    shipped_int8 = qua.get("status") == "kept" and not ver.get("fallback")  # verify may have shipped fp32
    accuracy = {"teacher": dis.get("teacher_accuracy"), "student_torch": dis.get("student_accuracy"),
                "student_runtime": ver.get("accuracy") if not shipped_int8 else None,
                "quantized_runtime": ver.get("accuracy") if shipped_int8 else None}
    if qua.get("status") in ("kept", "not kept") and qua.get("report"):
        r = qua["report"]
        accuracy["student_runtime"] = (r.get("fp32") or {}).get("accuracy", accuracy["student_runtime"])
        accuracy["quantized_runtime"] = (r.get("int8") or {}).get("accuracy")
    t, s = accuracy["teacher"], accuracy["quantized_runtime"] if shipped_int8 else ver.get("accuracy")
    hist = read_history(out / dis["log"]) if dis.get("log") else []
    from .stages import environment, stage_rows, unstable_flags, versus

    parts = {"select": sel, "distill": dis, "prune": pru, "export": exp, "quantize": qua,
             "verify": {**ver, "latency": lat}, "context": dict(state.get("context") or {})}
    rows = stage_rows(out, cfg, parts)
    return {
        "schema": SCHEMA, "created": state.get("created"), "generated": now(),
        "verdict": ver.get("verdict"), "config": cfg, "context": state.get("context", {}),
        "target": ver.get("target") or cfg.get("target"), "budget_ms": cfg.get("budget_ms"),
        "metric": cfg.get("metric", "p90"),
        "teacher": {"spec": cfg.get("teacher"), "accuracy": t, "cost": dis.get("teacher_cost")},
        "student": {"spec": sel.get("spec"), "source": sel.get("source"), "cost": _deployed_cost(dis, pru),
                    "cost_distilled": dis.get("student_cost"),
                    "accuracy_torch": dis.get("student_accuracy"), "best_epoch": dis.get("best_epoch"),
                    "epochs": dis.get("epochs")},
        "accuracy": accuracy,
        "accuracy_ratio": (s / t) if (s is not None and t) else None,
        "selection": sel.get("selection"), "needs_pruning": sel.get("needs_pruning"),
        "selection_note": sel.get("note"),
        "prune": pru, "export": exp,
        "quantize": {k: v for k, v in qua.items() if k != "report"} | (
            {"comparison": qua["report"]} if qua.get("report") else {}),
        "verify": ver, "latency": lat, "latency_samples_ms": samples,
        "training": hist,
        "stages": {k: {"status": v.get("status"), "wall_s": v.get("wall_s"), "started": v.get("started"),
                       "finished": v.get("finished")} for k, v in state.get("stages", {}).items()},
        "data": dis.get("data"),
        "stage_table": rows, "versus": versus(rows), "environment": environment(lat),
        "unstable": unstable_flags(parts),
    }


def write_reports(out_dir: "str | Path", state: Mapping[str, Any]) -> dict[str, Path]:
    """Write report.json, report.md and report.html (each atomically)."""
    from ..util_io import atomic_write_json, atomic_write_text
    from .html import render_html
    from .markdown import render_markdown

    out = Path(out_dir)
    doc = build_report(out, state)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    atomic_write_json(paths["json"], doc)
    atomic_write_text(paths["md"], render_markdown(doc))
    atomic_write_text(paths["html"], render_html(doc))
    return paths
