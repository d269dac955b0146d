"""report.html: one self-contained page (inline CSS, inline SVG plots, no scripts, no fetches)."""
from __future__ import annotations

import html
from typing import Any, Mapping

from .markdown import _f, _pct

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:960px;
color:#212529;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #dee2e6;padding:.3rem .6rem;
text-align:left;font-size:.9rem}th{background:#f1f3f5}
.pass{color:#2b8a3e;font-weight:600}.fail{color:#c92a2a;font-weight:600}.inconclusive{color:#e67700;
font-weight:600}figure{margin:1rem 0}figure svg{max-width:100%;height:auto}figcaption{font-size:.85rem;
color:#495057}code{background:#f1f3f5;padding:0 .2rem}ul.care li{color:#e67700}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _table(rows, head=None) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def render_html(doc: Mapping[str, Any]) -> str:
    from .plots import PLOTS

    verdict = str(doc.get("verdict") or "unknown")
    lat, acc = doc.get("latency") or {}, doc.get("accuracy") or {}
    st, te = doc.get("student") or {}, doc.get("teacher") or {}
    metric = doc.get("metric", "p90")
    ci = lat.get("p90_ci") or [None, None]
    summary = _table([
        ["verdict", f'<span class="{_e(verdict)}">{_e(verdict.upper())}</span>'],
        ["target", _e(doc.get("target"))],
        ["budget", f"{_e(_f(doc.get('budget_ms'), 'g'))} ms ({_e(metric)})"],
        [f"{_e(metric)} latency", f"{_e(_f(lat.get(metric)))} ms (p90 95% CI {_e(_f(ci[0]))}..{_e(_f(ci[1]))}, "
                                  f"n {_e(lat.get('n'))}, p50 {_e(_f(lat.get('p50')))} ms)"],
        ["teacher", f"<code>{_e(te.get('spec'))}</code>, accuracy {_e(_pct(te.get('accuracy')))}"],
        ["student", f"<code>{_e(st.get('spec'))}</code> ({_e(st.get('source'))}), accuracy torch "
                    f"{_e(_pct(acc.get('student_torch')))}, runtime {_e(_pct(acc.get('student_runtime')))}"],
        ["quantized", _e(_pct(acc.get("quantized_runtime"))) if acc.get("quantized_runtime") is not None
         else _e((doc.get("quantize") or {}).get("reason") or (doc.get("quantize") or {}).get("status"))],
        ["deployed / teacher accuracy", _e(_f(doc.get("accuracy_ratio"), ".3f"))],
        ["pruning", _e(f"{(doc.get('prune') or {}).get('status')}: {(doc.get('prune') or {}).get('reason')}")],
    ])
    checks = _table([[_e(c["name"]), f'<span class="{_e(c["verdict"])}">{_e(c["verdict"])}</span>',
                      _e(c.get("detail"))] for c in (doc.get("verify") or {}).get("checks", [])],
                    head=["check", "verdict", "detail"])
    stages = _table([[_e(k), _e(v.get("status")), _e(_f(v.get("wall_s"), ".1f"))]
                     for k, v in (doc.get("stages") or {}).items() if k != "report"], head=["stage", "status", "wall s"])
    from .stages import table_cells, versus_text

    per_stage = _table([[_e(c) if i != 1 else f"<code>{_e(c)}</code>" for i, c in enumerate(table_cells(r))]
                        for r in doc.get("stage_table") or []],
                       head=["stage", "model", "latency", "accuracy", "params", "size"])
    vs = f"<p>{_e(versus_text(doc['versus']))}</p>" if doc.get("versus") else ""
    env = _table([[_e(k), _e(v)] for k, v in (doc.get("environment") or {}).items()
                  if not isinstance(v, (dict, list))], head=["environment", "value"])
    flags = "".join(f"<li>{_e(f)}</li>" for f in doc.get("unstable") or [])
    care = f'<ul class="care">{flags}</ul>' if flags else "<p>No unstable measurement or warning.</p>"
    figures = []
    for key, title, fn in PLOTS:
        svg = fn(doc)
        if svg is None:
            figures.append(f'<p id="plot-{key}-none">{_e(title)}: nothing to plot for this run.</p>')
            continue
        figures.append(f'<figure id="plot-{key}" class="plot">{svg}<figcaption>{_e(title)}</figcaption></figure>')
    sel = doc.get("selection") or {}
    cand_rows = [[f"<code>{_e(c['spec'])}</code>", _e(f"{c['params']:,}"), _e(_f(c.get("predicted_ms"))),
                  _e(_f(c.get("measured_ms"))), _e(_f(c.get("verified_ms"))),
                  "chosen" if c["spec"] == (sel.get("chosen") or {}).get("spec") else ("fits" if c.get("fits") else "")]
                 for c in sel.get("candidates") or []]
    cand = _table(cand_rows, head=["spec", "params", f"predicted {metric} ms", f"profiled {metric} ms",
                                   "measured ms", ""]) if cand_rows else "<p>Student given by hand.</p>"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>edgekd report: {_e(st.get('spec'))} on {_e(doc.get('target'))}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>edgekd compress report</h1><p>schema {_e(doc.get('schema'))}, generated {_e(doc.get('generated'))}</p>"
        f"<h2>Summary</h2>{summary}<h2>Teacher to deployed model</h2>{per_stage}{vs}"
        f"<h2>Checks</h2>{checks}<h2>Read with care</h2>{care}<h2>Plots</h2>{''.join(figures)}"
        f"<h2>Candidates</h2>{cand}<h2>Run</h2>{stages}<h2>Environment</h2>{env}"
        "</body></html>\n")
