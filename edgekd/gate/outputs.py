"""Gate outputs: exit code, JUnit XML, GitHub workflow-command lines, step-summary Markdown."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from ..errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_RUNTIME_MISSING, EXIT_VERDICT
from ..verdict import Verdict
from .run import ERROR, GateResult

ON_INCONCLUSIVE = ("fail", "warn", "exit3")


def exit_code(results: Sequence[GateResult], on_inconclusive: str = "exit3") -> int:
    """1 if any FAIL (or INCONCLUSIVE with on_inconclusive=fail), else 4 if a target can't run
    here, else 3 if any INCONCLUSIVE (unless warn), else 0. Nothing unverified ever exits 0."""
    st = {r.status for r in results}
    incon = Verdict.INCONCLUSIVE.value in st
    if Verdict.FAIL.value in st or (incon and on_inconclusive == "fail"):
        return EXIT_VERDICT
    if ERROR in st:
        return EXIT_RUNTIME_MISSING
    if incon and on_inconclusive == "exit3":
        return EXIT_INCONCLUSIVE
    return EXIT_OK


def _fails_the_job(status: str, on_inconclusive: str) -> bool:
    """Whether a verdict fails the CI job (exit 1 or 3): FAIL, or INCONCLUSIVE unless
    on_inconclusive=warn. JUnit and GitHub annotations report it the same way."""
    return status == Verdict.FAIL.value or (status == Verdict.INCONCLUSIVE.value and on_inconclusive != "warn")


def to_json(results: Sequence[GateResult], on_inconclusive: str = "exit3") -> dict:
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "INCONCLUSIVE", ERROR)}
    return {"schema": "edgekd.gate/v1", "exit_code": exit_code(results, on_inconclusive),
            "on_inconclusive": on_inconclusive, "counts": counts, "results": [r.to_dict() for r in results]}


def junit_xml(results: Sequence[GateResult], on_inconclusive: str = "exit3") -> str:
    """One testsuite "edgekd.gate", one testcase per model x target (classname edgekd.gate).
    FAIL -> <failure>, a target that can't run -> <error>, INCONCLUSIVE -> <skipped> only with
    on_inconclusive=warn (the one case it exits 0), else <failure> (it exits 1 or 3): the JUnit
    status agrees with the exit code. Every message carries the numbers."""
    suite = ET.Element("testsuite", name="edgekd.gate", tests=str(len(results)))
    n_fail = n_err = n_skip = 0
    for r in results:
        tc = ET.SubElement(suite, "testcase", classname="edgekd.gate", name=r.name, time=f"{r.elapsed_s:.3f}")
        msg = r.message
        if _fails_the_job(r.status, on_inconclusive):
            n_fail += 1
            el = ET.SubElement(tc, "failure", message=msg, type=f"latency.{r.status.lower()}")
            el.text = _details(r)
        elif r.status == ERROR:
            n_err += 1
            el = ET.SubElement(tc, "error", message=msg, type="runtime.missing")
            el.text = msg
        elif r.status == Verdict.INCONCLUSIVE.value:
            n_skip += 1
            ET.SubElement(tc, "skipped", message=msg)
        out = ET.SubElement(tc, "system-out")
        out.text = _details(r)
    suite.set("failures", str(n_fail))
    suite.set("errors", str(n_err))
    suite.set("skipped", str(n_skip))
    root = ET.Element("testsuites", name="edgekd gate")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def measured_on(r: GateResult) -> str:
    """Where the samples were taken: 'host H (cpu C, runtime R V)', plus 'via ssh U@A:P' for a
    remote target's device; '' when nothing was measured."""
    e = r.environment or {}
    if not e.get("host"):
        return ""
    text = f"host {e['host']} ({e.get('cpu')}, {e.get('runtime')} {e.get('runtime_version')})"
    rem = e.get("remote")
    if rem:
        who = f"{rem['user']}@{rem['host']}" if rem.get("user") else str(rem.get("host"))
        text += f" via ssh {who}:{rem.get('port')}"
    return text


def _details(r: GateResult) -> str:
    lines = [r.message, f"rounds: {r.rounds} ({', '.join(r.round_verdicts) or r.source})"]
    if measured_on(r):
        lines.append(f"measured on: {measured_on(r)}")
    lines += [f"warning: {w}" for w in r.warnings]
    return "\n".join(lines)


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_prop(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def github_lines(results: Sequence[GateResult], on_inconclusive: str = "exit3") -> list[str]:
    """`::error file=...,title=...::message` for FAIL and missing runtimes, `::warning` for
    INCONCLUSIVE with on_inconclusive=warn (else ``::error``: it fails the job) and for every
    warning; nothing for PASS."""
    out = []
    for r in results:
        props = f"file={_escape_prop(r.model)},title={_escape_prop('edgekd gate: ' + r.name + ' ' + r.status)}"
        if r.status == ERROR or _fails_the_job(r.status, on_inconclusive):
            out.append(f"::error {props}::{_escape_data(r.message)}")
        elif r.status == Verdict.INCONCLUSIVE.value:
            out.append(f"::warning {props}::{_escape_data(r.message)}")
        for w in r.warnings:
            out.append(f"::warning title={_escape_prop('edgekd gate: ' + r.name)}::{_escape_data(w)}")
    return out


_ICON = {"PASS": "✅ PASS", "FAIL": "❌ FAIL", "INCONCLUSIVE": "⚠️ INCONCLUSIVE", ERROR: "⛔ ERROR"}


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(results: Sequence[GateResult]) -> str:
    rows = ["| model | target | verdict | metric | value ms | bounds ms | budget ms | n | vs baseline |",
            "|---|---|---|---|---:|---|---:|---:|---|"]
    for r in results:
        d = r.decision
        rem = (r.environment or {}).get("remote")
        target = f"{r.target} (device {r.environment.get('host')})" if rem else r.target
        if d is None:
            rows.append(f"| {_cell(r.model)} | {_cell(target)} | {_ICON[r.status]} | {r.budget.metric} | | | "
                        f"{r.budget.budget_ms:g} | | {_cell(r.error or '')} |")
            continue
        lo, hi = d.ci
        reg = (f"x{d.regression.median_ratio:.3f}, p={d.regression.p_value:.2g}" if d.regression else "")
        metric = d.metric + (" (drift-corrected)" if d.judged == "corrected" else "")
        n = f"{d.n} (eff. {d.n_eff:.0f})" if d.n_eff is not None and d.n_eff < d.n else f"{d.n}"
        rows.append(f"| {_cell(r.model)} | {_cell(target)} | {_ICON.get(r.status, r.status)} | {metric} | "
                    f"{d.value:.4g} | [{lo:.4g}, {hi:.4g}] | {d.budget_ms:g} | {n} | {reg} |")
    return "### edgekd latency gate\n\n" + "\n".join(rows) + "\n"


def append_step_summary(results: Sequence[GateResult], path: "str | None" = None) -> Path | None:
    """Append the table to $GITHUB_STEP_SUMMARY (appending is how GitHub expects it)."""
    target = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as f:
        f.write(markdown_table(results) + "\n")
    return Path(target)
