"""report.md: a short Markdown summary that fits a CI step summary ($GITHUB_STEP_SUMMARY)."""
from __future__ import annotations

from typing import Any, Mapping


def _f(v: Any, spec: str = ".4f", unit: str = "") -> str:
    if v is None:
        return "n/a"
    try:
        return f"{format(float(v), spec)}{unit}"
    except (TypeError, ValueError):
        return str(v)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{float(v) * 100:.2f}%"


def render_markdown(doc: Mapping[str, Any]) -> str:
    verdict = str(doc.get("verdict") or "unknown").upper()
    mark = {"PASS": "✅", "FAIL": "❌", "INCONCLUSIVE": "⚠️"}.get(verdict, "")
    lat = doc.get("latency") or {}
    metric = doc.get("metric", "p90")
    st, acc = doc.get("student") or {}, doc.get("accuracy") or {}
    ci = lat.get("p90_ci") or [None, None]
    lines = [
        f"## edgekd compress: {mark} {verdict}",
        "",
        f"Student **{st.get('spec')}** for **{doc.get('target')}**, budget {_f(doc.get('budget_ms'), 'g')} ms "
        f"({metric}), teacher `{(doc.get('teacher') or {}).get('spec')}`.",
        "",
        "| | value |",
        "|---|---|",
        f"| {metric} latency | {_f(lat.get(metric))} ms (p90 95% CI {_f(ci[0])}..{_f(ci[1])}, n {lat.get('n')}) |",
        f"| p50 latency | {_f(lat.get('p50'))} ms |",
        *([f"| unstable | yes (IQR/median {_f(lat.get('iqr_over_median'), '.3f')}) |"] if lat.get("unstable") else []),
        f"| accuracy: teacher (torch) | {_pct(acc.get('teacher'))} |",
        f"| accuracy: student (torch) | {_pct(acc.get('student_torch'))} |",
        f"| accuracy: student on runtime | {_pct(acc.get('student_runtime'))} |",
    ]
    if acc.get("quantized_runtime") is not None:
        lines.append(f"| accuracy: quantized student | {_pct(acc.get('quantized_runtime'))} |")
    if doc.get("accuracy_ratio") is not None:
        lines.append(f"| deployed / teacher accuracy | {_f(doc['accuracy_ratio'], '.3f')} |")
    cost = st.get("cost") or {}
    tcost = (doc.get("teacher") or {}).get("cost") or {}
    if cost:
        lines.append(f"| params student / teacher | {cost.get('params'):,} / "
                     f"{tcost.get('params', 'n/a') if not tcost else format(tcost['params'], ',')} |")
    rows = doc.get("stage_table") or []
    if rows:
        from .stages import table_cells, versus_text

        lines += ["", "| stage | model | latency | accuracy | params | size |", "|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(_cell(c) for c in table_cells(r)) + " |" for r in rows]
        if doc.get("versus"):
            lines += ["", versus_text(doc["versus"])]
    env = doc.get("environment") or {}
    if env:
        lines += ["", "Measured on: " + _cell(", ".join(f"{k} {v}" for k, v in env.items()
                                                       if k in ("cpu", "cores", "threads", "runtime",
                                                                "runtime_version", "host")))]
    for flag in doc.get("unstable") or []:
        lines += ["", f"Read with care: {_cell(flag)}."]
    if (doc.get("verify") or {}).get("fallback"):
        lines += ["", f"Shipped fp32: {_cell(doc['verify']['fallback'])}."]
    lines += ["", "| check | verdict | detail |", "|---|---|---|"]
    for c in (doc.get("verify") or {}).get("checks", []):
        lines.append(f"| {c['name']} | {c['verdict']} | {_cell(c.get('detail', ''))} |")
    lines += ["", "| stage | status | wall s |", "|---|---|---|"]
    for name, s in (doc.get("stages") or {}).items():
        if name == "report":
            continue
        extra = ""
        if name in ("prune", "quantize"):
            r = doc.get(name) or {}
            extra = f" ({r.get('status')}: {r.get('reason')})" if r.get("reason") else f" ({r.get('status')})"
        lines.append(f"| {name} | {_cell(str(s.get('status')) + extra)} | {_f(s.get('wall_s'), '.1f')} |")
    cmp_ = (doc.get("quantize") or {}).get("comparison") or {}
    if cmp_.get("qad"):  # quantization-aware distillation ran: PTQ and QAD side by side
        side = lambda k: (f"{k.upper()} top-1 {_pct(cmp_[k]['int8']['accuracy'])}, p50 "  # noqa: E731
                          f"{_f(cmp_[k]['int8']['p50_ms'], '.4f')} ms")
        lines += ["", f"INT8: {side('ptq')}; {side('qad')}; kept {str(cmp_.get('chosen')).upper()} "
                      f"({_cell(str(cmp_.get('qat_reason')))})."]
    if doc.get("needs_pruning"):
        lines += ["", f"Note: no profiled candidate meets the budget ({doc.get('selection_note')}); the fastest "
                      "was distilled, then pruned (see the prune stage)."]
    return "\n".join(lines) + "\n"
