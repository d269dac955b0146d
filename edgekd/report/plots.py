"""The report's plots, drawn with matplotlib's Agg backend and returned as inline SVG text.

Each function takes the report document and returns an ``<svg>`` string, or None when the run
has nothing to draw (e.g. no candidates for a student given by hand).
"""
from __future__ import annotations

import io
from typing import Any, Mapping, Optional


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9})
    return plt


def _svg(fig) -> str:
    plt = _plt()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML


def candidates_plot(doc: Mapping[str, Any]) -> Optional[str]:
    """Each candidate at its *predicted* latency (what selection judged; the colour says whether
    that prediction fits), its profiled reading beside it, and the chosen one's measurement."""
    sel = doc.get("selection") or {}
    cands = [c for c in sel.get("candidates") or [] if c.get("predicted_ms") is not None]
    if not cands:
        return None
    plt = _plt()
    metric = sel.get("metric", "p90")
    x = "macs" if sel.get("rank") == "macs" else "params"  # the selection's capacity order
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for fits, color, label in ((True, "#2b8a3e", "predicted to fit"), (False, "#adb5bd", "predicted over")):
        pts = [(c[x], c["predicted_ms"]) for c in cands if bool(c.get("fits")) is fits]
        if pts:
            ax.scatter(*zip(*pts), c=color, label=label, zorder=3)
    prof = [(c[x], c["measured_ms"]) for c in cands if c.get("measured_ms") is not None]
    if prof:
        ax.scatter(*zip(*prof), marker="x", c="#495057", s=18, label="profiled reading", zorder=3)
    budget = doc.get("budget_ms") or sel.get("budget_ms")
    if budget:
        ax.axhline(budget, color="#c92a2a", ls="--", label=f"budget {budget:g} ms")
    if sel.get("limit_ms"):
        ax.axhline(sel["limit_ms"], color="#e8590c", ls=":", label=f"limit budget/(1+eps) {sel['limit_ms']:.3g} ms")
    ch = sel.get("chosen") or {}
    if ch.get("predicted_ms") is not None:
        ax.scatter([ch[x]], [ch["predicted_ms"]], s=160, facecolors="none", edgecolors="#1c7ed6",
                   linewidths=2, label=f"chosen {ch['spec']}", zorder=4)
        got = ch.get("verified_ms")
        if got is not None:
            ax.scatter([ch[x]], [got], marker="*", s=140, c="#1c7ed6", zorder=5,
                       label=f"chosen, measured {got:.3g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")  # a grid spans orders of magnitude of latency
    ax.set_xlabel("MACs (capacity)" if x == "macs" else "parameters (capacity)")
    ax.set_ylabel(f"predicted {metric} latency, ms")
    ax.set_title("Candidates: predicted latency vs capacity")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _svg(fig)


def histogram_plot(doc: Mapping[str, Any]) -> Optional[str]:
    """The final model's timed inferences from their 0.5th percentile to the 99.5th (at most
    p50 + 8 x (p90 - p50)), so the bars resolve the distribution; a budget far off that range is
    said, not drawn."""
    samples = doc.get("latency_samples_ms") or []
    if not samples:
        return None
    import numpy as np

    plt = _plt()
    x = np.asarray(samples, dtype=float)
    lo, p50, p90, hi = (float(v) for v in np.percentile(x, [0.5, 50, 90, 99.5]))
    hi = max(min(hi, p50 + 8 * (p90 - p50)), p90 * 1.05)  # a busy machine's far tail would flatten the bars
    pad = max(hi - lo, 1e-6) * 0.08
    lo, hi = max(0.0, lo - pad), hi + pad
    budget = float(doc.get("budget_ms") or 0.0)
    off = ""
    if budget and budget <= hi + (hi - lo):  # near enough: widen the range to show the line
        hi = max(hi, budget * 1.03)
    elif budget:
        off = f"; budget {budget:g} ms is off the right edge ({budget / float(np.median(x)):.1f}x the median)"
    shown = x[(x >= lo) & (x <= hi)]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(shown, bins=min(60, max(10, len(shown) // 20)), range=(lo, hi), color="#4dabf7")
    ax.set_xlim(lo, hi)
    lat = doc.get("latency") or {}
    for key, color in (("p50", "#1864ab"), ("p90", "#5f3dc4")):
        if lat.get(key) is not None:
            ax.axvline(lat[key], color=color, label=f"{key} {lat[key]:.4f} ms")
    ci = lat.get("p90_ci") or []
    if len(ci) == 2 and None not in ci:
        ax.axvspan(ci[0], ci[1], color="#5f3dc4", alpha=0.15, label="p90 95% CI")
    if budget and not off:
        ax.axvline(budget, color="#c92a2a", ls="--", label=f"budget {budget:g} ms")
    ax.set_xlabel(f"latency per inference, ms ({len(x) - len(shown)} outside the range not shown{off})")
    ax.set_ylabel("count")
    ax.set_title(f"Final model on {doc.get('target')}: {len(x)} timed inferences")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return _svg(fig)


def pareto_plot(doc: Mapping[str, Any]) -> Optional[str]:
    """Accuracy against latency for every model of the run where both were measured (teacher,
    distilled, pruned, fp32 and INT8 on the runtime), with the budget."""
    rows = [r for r in doc.get("stage_table") or [] if r.get("latency_ms") is not None and r.get("accuracy") is not None]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    colors = {"teacher": "#868e96", "distilled": "#4dabf7", "pruned": "#f08c00", "fp32 on runtime": "#1c7ed6",
              "INT8": "#5f3dc4"}
    for r in rows:
        ax.scatter([r["latency_ms"]], [r["accuracy"]], s=60, c=colors.get(r["stage"], "#495057"), zorder=3,
                   label=f"{r['stage']} ({r['latency_basis']})")
        ax.annotate(r["stage"], (r["latency_ms"], r["accuracy"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if doc.get("budget_ms"):
        ax.axvline(doc["budget_ms"], color="#c92a2a", ls="--", label=f"budget {doc['budget_ms']:g} ms")
    ax.set_xlabel(f"{doc.get('metric', 'p90')} latency, ms")
    ax.set_ylabel("top-1 accuracy (validation)")
    ax.margins(x=0.2, y=0.2)  # room for the labels
    ax.set_title("Accuracy vs latency, stage by stage")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _svg(fig)


def training_plot(doc: Mapping[str, Any]) -> Optional[str]:
    hist = doc.get("training") or []
    if not hist:
        return None
    plt = _plt()
    ep = [h["epoch"] for h in hist]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(ep, [h.get("train_loss") for h in hist], "o-", color="#e8590c", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    ax2 = ax.twinx()
    ax2.plot(ep, [h.get("val_acc") for h in hist], "s-", color="#2b8a3e", label="val accuracy")
    ax2.set_ylabel("val accuracy")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=7, loc="center right")
    ax.set_title("Distillation")
    ax.grid(alpha=0.3)
    return _svg(fig)


def accuracy_plot(doc: Mapping[str, Any]) -> Optional[str]:
    acc = doc.get("accuracy") or {}
    labels = {"teacher": "teacher (torch)", "student_torch": "student (torch)",
              "student_runtime": "student (runtime)", "quantized_runtime": "quantized (runtime)"}
    items = [(labels[k], acc[k]) for k in labels if acc.get(k) is not None]
    if not items:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.0))
    colors = ["#868e96", "#4dabf7", "#1c7ed6", "#5f3dc4"][:len(items)]
    bars = ax.bar([n for n, _ in items], [v for _, v in items], color=colors)
    for b, (_, v) in zip(bars, items):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v * 100:.2f}%", ha="center", va="bottom", fontsize=8)
    lo = min(v for _, v in items)
    ax.set_ylim(max(0.0, lo - 0.1), 1.04)
    ax.set_ylabel("top-1 accuracy (validation)")
    ax.set_title("Accuracy: teacher vs student vs quantized")
    return _svg(fig)


PLOTS = (("candidates", "Candidates: predicted latency vs capacity (colour: predicted to fit)", candidates_plot),
         ("pareto", "Accuracy vs latency of each model the run made", pareto_plot),
         ("histogram", "Latency histogram of the final model", histogram_plot),
         ("training", "Training curves", training_plot),
         ("accuracy", "Accuracy", accuracy_plot))
