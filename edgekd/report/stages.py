"""What a reader of a compress report wants first: the model at each stage (teacher -> distilled
-> pruned -> deployed on the runtime -> INT8) with its latency, accuracy, params and size, the
teacher against the deployed student, the machine the numbers come from, and what to distrust.

    stage_rows(out, cfg, parts) -> [row]      one row per model the run made (and the teacher)
    versus(rows) -> dict                      teacher vs the deployed model: speed-up, ratios
    environment(latency) -> dict              the fingerprint the final latency was measured on
    unstable_flags(parts) -> [str]            measurements and choices to read with care
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional


def file_size(out: Path, *rels: Optional[str]) -> Optional[int]:
    """Bytes of a model's files (an artifact and its side files; a directory counts its files),
    None when none of them is there."""
    total, seen = 0, False
    for rel in dict.fromkeys(r for r in rels if r):
        p = Path(rel) if Path(rel).is_absolute() else out / rel
        try:
            if p.is_dir():
                total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            elif p.is_file():
                total += p.stat().st_size
            else:
                continue
        except OSError:
            continue
        seen = True
    return total if seen else None


def _teacher_size(teacher: Optional[str]) -> Optional[int]:
    """A teacher file's (or hf: directory's) size; None for a spec or py: teacher."""
    text = str(teacher or "")
    if text.startswith("hf:"):
        text = text[3:]
    elif not text or text.startswith("py:"):
        return None
    return file_size(Path("."), text)


def _row(stage: str, what: str, *, latency_ms=None, basis=None, accuracy=None, params=None,
         size_bytes=None, where=None) -> dict:
    return {"stage": stage, "model": what, "latency_ms": latency_ms, "latency_basis": basis,
            "accuracy": accuracy, "params": params, "size_bytes": size_bytes, "measured_on": where}


def stage_rows(out: Path, cfg: Mapping, parts: Mapping[str, Mapping]) -> list[dict]:
    """Rows in pipeline order; a number the run never measured is None. ``parts``: the stage
    results (select, distill, prune, export, quantize, verify) and the run's context."""
    dis, pru, exp = parts.get("distill", {}), parts.get("prune", {}), parts.get("export", {})
    qua, ver, ctx = parts.get("quantize", {}), parts.get("verify", {}), parts.get("context", {})
    metric = str(cfg.get("metric", "p90"))
    lat = ver.get("latency") or {}
    target = ver.get("target") or cfg.get("target")
    rows: list[dict] = []
    tcost = dis.get("teacher_cost") or {}
    tlat = (ctx.get("demo") or {}).get("teacher_latency") or {}
    rows.append(_row("teacher", str(cfg.get("teacher")), latency_ms=tlat.get("latency_ms"),
                     basis=tlat.get("metric") and f"{tlat.get('metric')}, measured by the demo",
                     accuracy=dis.get("teacher_accuracy"), params=tcost.get("params"),
                     size_bytes=_teacher_size(cfg.get("teacher")),
                     where=(ctx.get("demo") or {}).get("target") if tlat else None))
    if not dis:
        return rows
    scost = dis.get("student_cost") or {}
    before = pru.get("before") or {}
    d_lat = before.get(metric) if before else pru.get("measured_ms")
    fp32_target = exp.get("target")
    spec = str(dis.get("spec") or (parts.get("select") or {}).get("spec") or "")
    rows.append(_row("distilled", spec, latency_ms=d_lat,
                     basis=f"{metric} (prune stage)" if d_lat is not None else None,
                     accuracy=dis.get("student_accuracy"), params=scost.get("params"),
                     size_bytes=file_size(out, dis.get("checkpoint")), where=fp32_target if d_lat else None))
    if pru.get("checkpoint"):
        after = pru.get("after") or {}
        rows.append(_row("pruned", f"{spec} at ratio {pru.get('ratio')}", latency_ms=after.get(metric),
                         basis=f"{metric} (prune stage)", accuracy=pru.get("acc_finetuned"),
                         params=after.get("params"), size_bytes=file_size(out, pru.get("checkpoint")),
                         where=fp32_target))
    deployed_params = rows[-1]["params"]
    comp = (qua.get("report") or {}) if qua.get("status") in ("kept", "not kept") else {}
    kept = qua.get("status") == "kept"
    fp32 = comp.get("fp32") or {}
    if kept or not ver:
        fp_lat, fp_basis = fp32.get(f"{metric}_ms"), f"{metric} (quantize comparison)"
        fp_acc = fp32.get("accuracy")
    else:
        fp_lat, fp_basis = lat.get(metric), f"{metric} (verify, n {lat.get('n')})"
        fp_acc = ver.get("accuracy")
    rows.append(_row("fp32 on runtime", str(exp.get("artifact") or ""), latency_ms=fp_lat,
                     basis=fp_basis if fp_lat is not None else None, accuracy=fp_acc, params=deployed_params,
                     size_bytes=file_size(out, exp.get("artifact"), *(exp.get("extra") or ())) or fp32.get("size_bytes"),
                     where=fp32.get("target") or (target if not kept else None)))
    if kept:
        rows.append(_row("INT8", str(qua.get("artifact") or ""), latency_ms=lat.get(metric),
                         basis=f"{metric} (verify, n {lat.get('n')})", accuracy=ver.get("accuracy"),
                         params=deployed_params, size_bytes=file_size(out, qua.get("artifact"), *(qua.get("extra") or ())),
                         where=target))
    return rows


def _ratio(a, b) -> Optional[float]:
    return float(a) / float(b) if a is not None and b else None


def versus(rows: list[dict]) -> dict:
    """The teacher against the model shipped (the last row): speed-up = teacher latency / deployed
    latency (None when the teacher's latency was not measured), and the accuracy, params and
    size ratios."""
    t, d = rows[0], rows[-1]
    return {"teacher": t, "deployed": d, "speedup": _ratio(t["latency_ms"], d["latency_ms"]),
            "accuracy_ratio": _ratio(d["accuracy"], t["accuracy"]),
            "params_ratio": _ratio(d["params"], t["params"]), "size_ratio": _ratio(d["size_bytes"], t["size_bytes"])}


ENV_KEYS = ("cpu", "cores", "threads", "runtime", "runtime_version", "precision", "batch", "input_shape",
            "edgekd_version", "host", "os", "python", "torch")


def environment(latency: Mapping[str, Any]) -> dict:
    env = dict(latency.get("environment") or {})
    first = {k: env[k] for k in ENV_KEYS if k in env}
    return {**first, **{k: v for k, v in env.items() if k not in first}}


def unstable_flags(parts: Mapping[str, Mapping]) -> list[str]:
    """Plain sentences: an unstable final measurement, the selection's warnings (a profile from
    another machine, ...), a teacher latency read on a busy machine."""
    out: list[str] = []
    lat = (parts.get("verify") or {}).get("latency") or {}
    if lat.get("unstable"):
        iqr = lat.get("iqr_over_median")
        out.append(f"the final latency measurement is unstable (IQR/median {iqr:.3f} > 0.10): re-run verify "
                   "on a quieter machine" if isinstance(iqr, (int, float)) else "the final latency measurement "
                   "is unstable")
    sel = (parts.get("select") or {}).get("selection") or {}
    out += [f"selection: {w}" for w in sel.get("warnings") or []]
    tlat = ((parts.get("context") or {}).get("demo") or {}).get("teacher_latency") or {}
    if tlat.get("warning"):
        out.append(f"teacher latency: {tlat['warning']}; the budget rests on {tlat.get('basis')}")
    return out


def _num(v, spec: str) -> str:
    return "n/a" if v is None else format(float(v), spec)


def size_text(n: Optional[int]) -> str:
    if n is None:
        return "n/a"
    for unit, k in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} B"


def table_cells(row: Mapping[str, Any]) -> list[str]:
    """A stage row as text cells: stage, model, latency, accuracy, params, size."""
    lat = row.get("latency_ms")
    lat_txt = f"{lat:.4f} ms ({row.get('latency_basis')}" + (f" on {row['measured_on']})" if row.get("measured_on")
                                                               else ")") if lat is not None else "not measured"
    acc = row.get("accuracy")
    return [str(row.get("stage")), str(row.get("model") or ""), lat_txt,
            "n/a" if acc is None else f"{float(acc) * 100:.2f}%",
            "n/a" if row.get("params") is None else f"{int(row['params']):,}", size_text(row.get("size_bytes"))]


def versus_text(vs: Mapping[str, Any]) -> str:
    """One sentence: the teacher against the deployed model."""
    t, d = vs.get("teacher") or {}, vs.get("deployed") or {}
    parts = []
    if vs.get("speedup") is not None:
        parts.append(f"{vs['speedup']:.2f}x faster ({t['latency_ms']:.4f} -> {d['latency_ms']:.4f} ms)")
    else:
        parts.append("speed-up n/a (the teacher's latency was not measured in this run; "
                     "`edgekd bench TEACHER -t TARGET` gives it)")
    if vs.get("accuracy_ratio") is not None:
        parts.append(f"{vs['accuracy_ratio'] * 100:.1f}% of its accuracy")
    if vs.get("params_ratio"):
        parts.append(f"{1 / vs['params_ratio']:.1f}x fewer parameters")
    if vs.get("size_ratio"):
        parts.append(f"{1 / vs['size_ratio']:.1f}x smaller on disk")
    return f"Deployed {d.get('stage')} vs teacher: " + ", ".join(parts) + "."
