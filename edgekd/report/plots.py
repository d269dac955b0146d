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
    sel = doc.get("selection") or {}
    cands = sel.get("candidates") or []
    if not cands:
        return None
    plt = _plt()
    metric = sel.get("metric", "p90")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = [c["params"] for c in cands]
    ys = [c["measured_ms"] if c.get("measured_ms") is not None else c["predicted_ms"] for c in cands]
    fits = [bool(c.get("fits")) for c in cands]
    ax.scatter([x for x, f in zip(xs, fits) if f], [y for y, f in zip(ys, fits) if f], c="#2b8a3e",
               label="predicted to fit", zorder=3)
    ax.scatter([x for x, f in zip(xs, fits) if not f], [y for y, f in zip(ys, fits) if not f], c="#adb5bd",
               label="over the limit", zorder=3)
    budget = doc.get("budget_ms") or sel.get("budget_ms")
    if budget:
        ax.axhline(budget, color="#c92a2a", ls="--", label=f"budget {budget:g} ms")
    if sel.get("limit_ms"):
        ax.axhline(sel["limit_ms"], color="#e8590c", ls=":", label=f"limit (budget/(1+eps)) {sel['limit_ms']:.3g} ms")
    ch = sel.get("chosen") or {}
    if ch:
        y = ch.get("verified_ms") or ch.get("measured_ms") or ch.get("predicted_ms")
        ax.scatter([ch["params"]], [y], s=160, facecolors="none", edgecolors="#1c7ed6", linewidths=2,
                   label=f"chosen {ch['spec']}", zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (capacity)")
    ax.set_ylabel(f"{metric} latency, ms (profiled)")
    ax.set_title("Candidates: latency vs capacity")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _svg(fig)


def histogram_plot(doc: Mapping[str, Any]) -> Optional[str]:
    samples = doc.get("latency_samples_ms") or []
    if not samples:
        return None
    import numpy as np

    plt = _plt()
    x = np.asarray(samples, dtype=float)
    budget = float(doc.get("budget_ms") or 0.0)
    hi = max(float(np.percentile(x, 99)), budget * 1.1)
    beyond = int((x > hi).sum())
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(x[x <= hi], bins=60, range=(0.0, hi), color="#4dabf7")
    ax.set_xlim(0, hi)
    lat = doc.get("latency") or {}
    for key, color in (("p50", "#1864ab"), ("p90", "#5f3dc4")):
        if lat.get(key) is not None:
            ax.axvline(lat[key], color=color, label=f"{key} {lat[key]:.4f} ms")
    if doc.get("budget_ms"):
        ax.axvline(doc["budget_ms"], color="#c92a2a", ls="--", label=f"budget {doc['budget_ms']:g} ms")
    ax.set_xlabel(f"latency per inference, ms ({beyond} slower samples not shown)")
    ax.set_ylabel("count")
    ax.set_title(f"Final model on {doc.get('target')}: {len(x)} timed inferences")
    ax.legend(fontsize=7)
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


PLOTS = (("candidates", "Candidates: latency vs capacity", candidates_plot),
         ("histogram", "Latency histogram of the final model", histogram_plot),
         ("training", "Training curves", training_plot),
         ("accuracy", "Accuracy", accuracy_plot))
