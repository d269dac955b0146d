"""The serialized size and the peak memory of a candidate, predicted (docs/MEMORY.md "Memory
budgets in select and compress").

    estimate_size_bytes(params, target)   -> bytes: the size rule, from the parameter count alone
    memory_feature(profile, params, keys, target) -> bytes: weights + the largest activation set
    fit_memory(profile, target)           -> {"size": fit, "peak": fit} from the profile's measured models
    candidate_memory(profile, fits, ...)  -> MemoryFigures: measured where measured, else predicted

The rule: size = params x (bytes per parameter of the target's precision + the format's bytes
per parameter of graph description) + the format's fixed overhead (header, names, metadata). The
graph's share grows with the layer count, which tracks the parameter count across a family;
the figures bound what was measured on convnet and mobilenetv2 students of 94 to 162k
parameters (tests/latency/test_select_memory.py measures them again): overheads of 1.0-2.6 /
5.2-14.8 / 3.8-8.3 KB for ONNX / OpenVINO IR (an .xml describing every layer in text, plus the
metadata compress writes) / ExecuTorch .pte.

A profile measures the size and the peak memory of each whole model it times
(ModelEntry.memory). fit_memory fits two lines to them: size = a x rule + b (the rule scaled to
what this runtime writes), and peak = a x feature + b, the feature being the bytes of the
weights at the target's precision plus the largest set of activations one block holds (its input,
its output and its expanded hidden tensor); b is then the runtime's own cost of a loaded model.
Each fit stores its worst relative error over the measured models (left out one at a time when
there are three or more). Figures are predictions, said as such: verify and gate measure the
artifact itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from .profile_file import Profile

BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.1}  # int8: + scales, zero points
BYTES_PER_ACTIVATION = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
# runtime: (fixed bytes, graph bytes per parameter)
OVERHEAD = {"onnxruntime": (4096, 0.08), "openvino": (16384, 0.35), "executorch": (8192, 0.06),
            "tensorrt": (256 * 1024, 0.5), "torch": (0, 0.0)}
SIZE_X = "the size rule (params x bytes per parameter + the format's overhead)"
PEAK_X = "weight bytes + the largest activation set of a block (input, output, hidden) in bytes"


def _precision(target) -> str:
    return str(getattr(getattr(target, "precision", None), "value", "fp32"))


def estimate_size_bytes(params: int, target) -> int:
    """Predicted bytes of the artifact of a ``params``-parameter model built for ``target``."""
    runtime = getattr(getattr(target, "runtime", None), "value", "onnxruntime")
    per = BYTES_PER_PARAM.get(_precision(target), 4.0)
    fixed, graph = OVERHEAD.get(str(runtime), (64 * 1024, 0.5))
    return int(round((per + graph) * int(params) + fixed))


def memory_feature(profile, params: int, keys: Sequence[str], target) -> float | None:
    """Weight bytes + the largest activation set of one block (bytes), from the block signatures
    the profile stores; None when a block or its shapes are not there."""
    act = 0
    for k in keys:
        entry = profile.blocks.get(k)
        sig = entry.signature if entry is not None else {}
        shape_in, shape_out = sig.get("in_shape"), sig.get("out_shape")
        if not shape_in or not shape_out:
            return None
        hw = math.prod(shape_in[1:]) if len(shape_in) > 1 else 1
        act = max(act, math.prod(shape_in) + math.prod(shape_out) + int(sig.get("hidden", 0) or 0) * hw)
    batch = int(getattr(target, "batch", 1) or 1)
    prec = _precision(target)
    return float(BYTES_PER_PARAM.get(prec, 4.0) * int(params) + BYTES_PER_ACTIVATION.get(prec, 4) * act * batch)


def _line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    from .fit import fit_line  # relative residuals; scale 1 when fewer than two distinct x

    a, b, _ = fit_line(x, y)
    return a, b


def _fit(x: list[float], y: list[float], what: str, **extra) -> dict:
    a, b = _line(x, y)
    errs = [abs(a * xi + b - yi) / yi for xi, yi in zip(x, y)]
    if len(x) >= 3:
        loo = []
        for i in range(len(x)):
            ai, bi = _line(x[:i] + x[i + 1:], y[:i] + y[i + 1:])
            loo.append(abs(ai * x[i] + bi - y[i]) / y[i])
        errs, how = loo, "leave-one-out"
    else:
        how = "in-sample (fewer than 3 measured models)"
    return {"a": a, "b": b, "n": len(x), "x": what, "max_rel_error": float(max(errs)), "error_of": how, **extra}


def fit_memory(profile, target) -> dict:
    """{"size": fit, "peak": fit} over the profile's models whose memory was measured (a key is
    left out when none was): each fit {"a", "b", "n", "x", "max_rel_error", "error_of"}."""
    sx, sy, px, py, source = [], [], [], [], ""
    for m in profile.models_by_capacity():
        mem = m.memory or {}
        if (mem.get("size_bytes") or 0) > 0:
            sx.append(float(estimate_size_bytes(m.params, target)))
            sy.append(float(mem["size_bytes"]))
        feat = memory_feature(profile, m.params, m.blocks, target)
        if (mem.get("peak_bytes") or 0) > 0 and feat is not None:
            px.append(feat)
            py.append(float(mem["peak_bytes"]))
            source = source or str(mem.get("peak_source", ""))
    out = {}
    if sx:
        out["size"] = _fit(sx, sy, SIZE_X)
    if px:
        out["peak"] = _fit(px, py, PEAK_X, source=source)
    return out


@dataclass(frozen=True)
class MemoryFigures:
    """A candidate's size and peak (bytes) and where each comes from: 'measured' (the profile's
    whole-model entry), 'predicted' (fit_memory), 'estimated' (the size rule; a profile without
    measured sizes); peak None: the profile measured none."""

    size_bytes: int
    size_from: str
    size_error: float
    peak_bytes: int | None = None
    peak_from: str = ""
    peak_error: float = 0.0


def candidate_memory(profile, fits: Mapping, spec: str, params: int, keys: Sequence[str], target) -> MemoryFigures:
    """The candidate's MemoryFigures; ``*_error`` is the fit's worst relative error for a
    predicted figure, 0 for a measured or rule-estimated one."""
    entry = profile.model(spec)
    mem = (entry.memory or {}) if entry is not None else {}
    rule = estimate_size_bytes(params, target)
    if (mem.get("size_bytes") or 0) > 0:
        size, size_from, size_err = int(mem["size_bytes"]), "measured", 0.0
    elif "size" in fits:
        f = fits["size"]
        size, size_from, size_err = int(round(f["a"] * rule + f["b"])), "predicted", float(f["max_rel_error"])
    else:
        size, size_from, size_err = rule, "estimated", 0.0
    peak, peak_from, peak_err = None, "", 0.0
    if (mem.get("peak_bytes") or 0) > 0:
        peak, peak_from = int(mem["peak_bytes"]), "measured"
    elif "peak" in fits:
        feat = memory_feature(profile, params, keys, target)
        if feat is not None:
            f = fits["peak"]
            peak, peak_from, peak_err = int(round(f["a"] * feat + f["b"])), "predicted", float(f["max_rel_error"])
    return MemoryFigures(size_bytes=size, size_from=size_from, size_error=size_err, peak_bytes=peak,
                         peak_from=peak_from, peak_error=peak_err)


def memory_summary(profile, target) -> dict:
    """What a profile stores under ``memory``: the fits, and per candidate of its grid measured
    whole the size and peak (KB, MB) with where each comes from ({} when nothing was measured)."""
    fits = fit_memory(profile, target)
    if not fits:
        return {}
    cands = {}
    for spec in profile.grid:
        m = profile.model(spec)
        if m is None:
            continue
        f = candidate_memory(profile, fits, spec, m.params, m.blocks, target)
        cands[spec] = {"size_kb": round(f.size_bytes / 1024, 2), "size": f.size_from,
                       "peak_mb": None if f.peak_bytes is None else round(f.peak_bytes / 2 ** 20, 3),
                       "peak": f.peak_from or None}
    return {**fits, "candidates": cands}


def memory_target(profile: Profile, target):
    """(the target judged, the profile whose measured figures apply to it, why they do not or ''):
    a target of another runtime, precision or batch than the profile's drops them (the size rule)."""
    from ..errors import BadInputError
    from ..targets import load_target, target_from_dict

    try:
        own = target_from_dict({k: v for k, v in profile.target.items() if k != "source"})
    except BadInputError:  # a profile that stores its target's name only
        own = None
    spec = own if target is None else load_target(target)
    if spec is None:
        spec = load_target(profile.target_name)
    if own is None or (own.runtime, own.precision, own.batch) == (spec.runtime, spec.precision, spec.batch):
        return spec, profile, ""
    bare = replace(profile, models=[replace(m, memory=None) for m in profile.models])
    return spec, bare, f"the profile's measurements are of {own.name}, not {spec.name}"


def block_keys(profile: Profile, spec: str) -> tuple:
    entry = profile.model(spec)
    if entry is not None:
        return tuple(entry.blocks)
    from ..errors import BadInputError
    from ..models import block_signatures

    try:
        return tuple(g["key"] for g in block_signatures(spec, profile.in_channels, num_classes=profile.num_classes))
    except BadInputError:
        return ()


def describe_figure(value: float, unit: str, source: str, err: float, digits: int) -> str:
    """'48.1 KB measured', '52.0 KB predicted (needs 55.1 KB with the fit's 6.0% worst error)'."""
    text = f"{value:.{digits}f} {unit} {source}"
    return text + (f" (needs {value * (1 + err):.{digits}f} {unit} with the fit's {err:.1%} worst error)"
                   if err else "")


_SOURCES = {"measured": "measured by the profile", "predicted": "predicted from the profile's fit",
            "estimated": "estimated from params"}


def memory_note(out: list, n_over: dict, max_size_kb, max_peak_mb, fits: dict, spec, why: str) -> str:
    """How many candidates the budgets excluded, and where each kind of figure came from."""
    if max_size_kb is None and max_peak_mb is None:
        return ""
    parts = []
    for v, unit, key, name in ((max_size_kb, "KB", "size_from", "size"), (max_peak_mb, "MB", "peak_from", "peak")):
        if v is None:
            continue
        froms = sorted({getattr(c, key) for c in out if getattr(c, key)})
        if not froms:
            parts.append("peak not judged here: " + (why or "the profile holds no peak memory (made before "
                                                      "profiles measured it)"))
            continue
        fit = fits.get(name)
        err = f" (worst error {fit['max_rel_error']:.1%}, {fit['error_of']}, added as margin)" if fit and \
            "predicted" in froms else ""
        parts.append(f"{name} over {v:g} {unit}: {n_over[name]}, "
                     + ", ".join(_SOURCES[f] + (f" ({why})" if f == "estimated" and why else
                                                " (the profile measured none)" if f == "estimated" else "")
                                 for f in froms) + err)
    excluded = sum(1 for c in out if c.over_memory)
    return (f"{excluded} of {len(out)} candidates excluded on {spec.name}: " + "; ".join(parts)
            + "; verify measures the artifact")
