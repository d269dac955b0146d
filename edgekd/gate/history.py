"""Gate history: every gate result kept in a small local SQLite store, and its trend
(`edgekd gate --history`; docs/LATENCY.md, "The CI gate").

One table, one row per model x target per gate run: when, the branch and commit it judged
(from the CI's variables, else `git`, else empty), the model and its sha256, the metric, value,
bounds, budget, verdict, and the machine's speed factor when the run measured it. SQLite's own
transactions keep the file whole when a run is interrupted.
"""
from __future__ import annotations

import datetime as _dt
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..errors import BadInputError

HISTORY_FILE = "gate-history.sqlite"
_COLUMNS = ("time", "branch", "commit_sha", "model", "model_sha256", "target", "metric", "value_ms",
            "lower_ms", "upper_ms", "budget_ms", "verdict", "n", "rounds", "judged", "drift_factor", "unstable")
_SCHEMA = ("CREATE TABLE IF NOT EXISTS gate_results (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, "
           "branch TEXT, commit_sha TEXT, model TEXT NOT NULL, model_sha256 TEXT, target TEXT NOT NULL, "
           "metric TEXT, value_ms REAL, lower_ms REAL, upper_ms REAL, budget_ms REAL, verdict TEXT NOT NULL, "
           "n INTEGER, rounds INTEGER, judged TEXT, drift_factor REAL, unstable INTEGER)")
# Branch and commit variables of common CI systems, first match wins.
_BRANCH_VARS = ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "BUILDKITE_BRANCH", "GIT_BRANCH")
_COMMIT_VARS = ("GITHUB_SHA", "CI_COMMIT_SHA", "BUILDKITE_COMMIT", "GIT_COMMIT")


def default_path() -> Path:
    from ..util_io import cache_root

    return cache_root() / HISTORY_FILE


def _git(args: Sequence[str], cwd: "str | Path | None") -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def source_revision(env: Mapping[str, str] | None = None, cwd: "str | Path | None" = None) -> tuple[str, str]:
    """(branch, commit) from CI variables (GITHUB_HEAD_REF/GITHUB_REF_NAME, GITHUB_SHA, ...), else
    from `git rev-parse` in ``cwd``, else empty strings."""
    env = os.environ if env is None else env
    branch = next((env[v] for v in _BRANCH_VARS if env.get(v)), "")
    commit = next((env[v] for v in _COMMIT_VARS if env.get(v)), "")
    if not commit:
        commit = _git(["rev-parse", "HEAD"], cwd)
    if not branch:
        b = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
        branch = "" if b == "HEAD" else b
    return branch, commit


class GateHistory:
    """The SQLite store at ``path`` (created on first write)."""

    def __init__(self, path: "str | Path | None" = None):
        self.path = Path(path) if path else default_path()

    def _connect(self, create: bool) -> sqlite3.Connection:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise BadInputError(f"no gate history at {self.path}",
                                hint="run `edgekd gate` first, or point --history-db at the file it wrote")
        try:
            con = sqlite3.connect(str(self.path), timeout=10)
            con.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise BadInputError(f"{self.path} is not a gate history database ({exc})",
                                hint="give another --history-db, or remove the file") from exc
        return con

    def record(self, results: Iterable, *, branch: str | None = None, commit: str | None = None,
               when: "_dt.datetime | None" = None) -> int:
        """Append one row per result that has a decision; returns how many were written."""
        if branch is None or commit is None:
            b, c = source_revision()
            branch = b if branch is None else branch
            commit = c if commit is None else commit
        stamp = (when or _dt.datetime.now(_dt.timezone.utc)).isoformat(timespec="seconds")
        rows = []
        for r in results:
            d = r.decision
            if d is None:
                continue
            lo, hi = d.ci
            rows.append((stamp, branch, commit, str(r.model), r.model_sha256 or "", r.target, d.metric,
                         _real(d.value), _real(lo), _real(hi), d.budget_ms, r.status, d.n, r.rounds,
                         getattr(r, "judged", "raw"), getattr(r, "drift_factor", None), int(bool(d.unstable))))
        if not rows:
            return 0
        con = self._connect(create=True)
        try:
            with con:
                con.executemany(f"INSERT INTO gate_results ({', '.join(_COLUMNS)}) "
                                f"VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
        finally:
            con.close()
        return len(rows)

    def rows(self, models: Sequence[str] = (), target: str | None = None, limit: int = 20) -> list[dict]:
        """The last ``limit`` rows per model x target, oldest first; ``models`` filter by path or file name."""
        con = self._connect(create=False)
        try:
            con.row_factory = sqlite3.Row
            got = [dict(r) for r in con.execute("SELECT * FROM gate_results ORDER BY time, id")]
        finally:
            con.close()
        want = {Path(m).as_posix() for m in models} | {Path(m).name for m in models}
        if want:
            got = [r for r in got if Path(r["model"]).as_posix() in want or Path(r["model"]).name in want]
        if target:
            got = [r for r in got if r["target"] == target]
        keep: dict[tuple, list[dict]] = {}
        for r in got:
            keep.setdefault((r["model"], r["target"]), []).append(r)
        return [r for group in keep.values() for r in group[-limit:]]


def _real(v: float) -> float | None:
    import math

    return float(v) if v is not None and math.isfinite(v) else None


def trend_table(rows: Sequence[Mapping]) -> str:
    """The rows as text, one block per model x target, with each value's ratio to the one before."""
    if not rows:
        return "no gate results recorded for these models"
    groups: dict[tuple, list[Mapping]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["target"]), []).append(r)
    lines = []
    for (model, target), rs in groups.items():
        lines.append(f"{model} on {target}:")
        lines.append(f"  {'time':<25} {'branch':<16} {'commit':<10} {'verdict':<12} {'metric':<6} {'value ms':>9} "
                     f"{'bounds ms':>19} {'budget':>8} {'vs prev':>8} {'drift':>6}")
        prev = None
        for r in rs:
            v = r["value_ms"]
            vtxt = f"{v:.4g}" if v is not None else "-"
            ratio = f"x{v / prev:.3f}" if prev and v else ""
            lo, hi = (f"{x:.4g}" if x is not None else "-" for x in (r["lower_ms"], r["upper_ms"]))
            drift = f"{r['drift_factor']:.2f}" if r.get("drift_factor") else ""
            lines.append(f"  {r['time']:<25} {(r['branch'] or '-')[:16]:<16} {(r['commit_sha'] or '-')[:8]:<10} "
                         f"{r['verdict']:<12} {r['metric'] or '':<6} {vtxt:>9} "
                         f"{'[' + lo + ', ' + hi + ']':>19} {r['budget_ms']:>8.4g} {ratio:>8} {drift:>6}")
            prev = v
    return "\n".join(lines)
