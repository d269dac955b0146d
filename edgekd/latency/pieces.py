"""Measuring the pieces of a profile on a target: a module, an ONNX file, a block alone and as
replicated copies, and the runtime's per-inference overhead (docs/LATENCY.md "Profiles and prediction").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, NamedTuple

from .stats import LatencyStats


def measure_module(module, sample_shape: tuple, target, settings, work_dir: Path, name: str):
    """Open a torch module on ``target`` (_piece) and measure it (docs/LATENCY.md protocol).

    Returns (Measurement, environment fingerprint).
    """
    return measure_onnx(_piece(module, sample_shape, target, work_dir, name), sample_shape, target,
                        settings, work_dir / name)


def _piece(module, sample_shape: tuple, target, work_dir: Path, name: str):
    """What a piece is opened from on ``target``: its exported ONNX file, or the module itself
    where the target's runtime builds from torch (ExecuTorch: torch.export, not ONNX)."""
    from ..backends import require_backend

    if require_backend(target).builds_from == "torch":
        return module.eval()
    return _export(module, sample_shape, target, work_dir, name)


def _export(module, sample_shape: tuple, target, work_dir: Path, name: str) -> Path:
    import torch

    from ..export import export_onnx

    work_dir.mkdir(parents=True, exist_ok=True)
    sample = torch.zeros((target.batch, *sample_shape), dtype=torch.float32)
    return export_onnx(module.eval(), sample, work_dir / f"{name}.onnx")


def measure_onnx(onnx_path, sample_shape: tuple, target, settings, work_dir: Path):
    """Open an ONNX file (or a _piece module) on ``target`` and measure it: (Measurement,
    environment fingerprint)."""
    ms, env = measure_onnx_together([(onnx_path, sample_shape)], target, settings, work_dir)
    return ms[0], env


def measure_onnx_together(models, target, settings, work_dir: Path, held=()):
    """Open ONNX files (or _piece modules) ``[(path, sample_shape), ...]`` on ``target`` and measure them in
    alternation (measure.measure_interleaved), so that their differences are free of the
    machine's drift: (one Measurement per file, then one per ``held`` model (already open, kept
    open; measure.measure_opened_together), environment fingerprint of the first). A file's
    Measurement carries the artifact built for it (``artifact``; its files stay in ``work_dir``)."""
    from dataclasses import replace

    from ..deploy import open_model, open_module
    from .measure import close_session, measure_opened_together

    openeds = []
    try:
        for j, (piece, shape) in enumerate(models):
            wd = work_dir if j == 0 else work_dir / f"m{j}"
            if isinstance(piece, (str, Path)):
                openeds.append(open_model(piece, target, work_dir=wd, sample_shape=tuple(shape)))
            else:
                openeds.append(open_module(piece, target, wd, tuple(shape), name=f"piece{j}"))
    except BaseException:
        for o in openeds:
            close_session(o.session)
        raise
    ms, env = measure_opened_together(openeds, target, settings, held=held)
    return [replace(m, artifact=o.artifact) for m, o in zip(ms, openeds)] + ms[len(openeds):], env


def open_reference(module, sample_shape: tuple, target, work_dir: Path):
    """Export and open ``module`` on ``target`` to be held through a run as the reference that
    every whole model is measured in alternation with (measure_with_reference); the caller closes
    its ``session`` (measure.close_session)."""
    from ..deploy import open_model, open_module

    piece = _piece(module, sample_shape, target, work_dir, "reference")
    if isinstance(piece, Path):
        return open_model(piece, target, work_dir=work_dir / "reference", sample_shape=tuple(sample_shape))
    return open_module(piece, target, work_dir / "reference", tuple(sample_shape), name="reference")


def measure_with_reference(module, sample_shape: tuple, target, settings, work_dir: Path, reference):
    """A whole model measured in alternation with ``reference`` (open_reference), which stays
    loaded while the model is loaded ``settings.sessions`` times: (model Measurement, reference
    Measurement, environment). The machine's speed drifts by several percent over tens of
    seconds; the reference's reading says how fast it ran while this model was measured
    (predict.model_latency divides that out)."""
    path = _piece(module, sample_shape, target, work_dir, "model")
    (m, ref), env = measure_onnx_together([(path, sample_shape)], target, settings, work_dir / "model",
                                          held=[reference])
    return m, ref, env


def _overhead_module():
    import torch

    class _Trivial(torch.nn.Module):  # one elementwise op: what a run costs besides the work
        def forward(self, x):
            return torch.relu(x)

    return _Trivial()


def l2_bytes() -> int:
    """This CPU's per-core L2 cache size (2 MiB when it cannot be read)."""
    for idx in range(8):
        base = Path(f"/sys/devices/system/cpu/cpu0/cache/index{idx}")
        try:
            if (base / "level").read_text().strip() == "2":
                text = (base / "size").read_text().strip().upper()
                mult = {"K": 1 << 10, "M": 1 << 20}.get(text[-1], 1)
                return int(text.rstrip("KM")) * mult
        except (OSError, ValueError):
            continue
    return 2 << 20


MAX_COPIES = 16


def cold_copies(sig: Mapping) -> int:
    """How many copies of a block to run so that their weights together exceed twice the L2
    cache while their activations stay within half of it (in a whole model activations are
    reused, only weights are many); 0: no cold measurement (the block then counts hot)."""
    import math

    l2 = l2_bytes()
    weight_bytes = max(4 * int(sig.get("params", 0) or 0), 1)
    shape_in, shape_out = sig.get("in_shape") or (), sig.get("out_shape") or ()
    hw = math.prod(shape_in[1:]) if len(shape_in) > 1 else 1
    act_bytes = 4 * (math.prod(shape_in) + math.prod(shape_out) + int(sig.get("hidden", 0) or 0) * hw)
    n = min(MAX_COPIES, math.ceil(2 * l2 / weight_bytes), int(0.5 * l2 // max(act_bytes, 1)))
    return n if n >= 2 else 0


def replicate_onnx(src: Path, dst: Path, copies: int, seed: int = 0) -> Path:
    """``copies`` copies of a one-input graph, each with its own (slightly perturbed, so no
    runtime merges them) weights, all reading the same input; one output per copy."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    shared = {i.name for i in g.input} | {""}
    nodes, inits, outputs = list(g.node), list(g.initializer), list(g.output)
    rng = np.random.default_rng(seed)
    for r in range(1, copies):
        def ren(name: str) -> str:
            return name if name in shared else f"{name}__copy{r}"

        for init in inits:
            arr = numpy_helper.to_array(init)
            if arr.dtype.kind == "f" and arr.size > 1:
                arr = (arr * (1 + 1e-3 * rng.standard_normal(arr.shape))).astype(arr.dtype)
            g.initializer.append(numpy_helper.from_array(arr, ren(init.name)))
        for node in nodes:
            n2 = onnx.NodeProto()
            n2.CopyFrom(node)
            n2.name = ren(node.name) if node.name else ""
            del n2.input[:]
            n2.input.extend(ren(x) for x in node.input)
            del n2.output[:]
            n2.output.extend(ren(x) for x in node.output)
            g.node.append(n2)
        for out in outputs:
            o2 = onnx.ValueInfoProto()
            o2.CopyFrom(out)
            o2.name = ren(out.name)
            g.output.append(o2)
    onnx.save(model, str(dst))
    return dst


def replicate_module(module, copies: int, seed: int = 0):
    """replicate_onnx for a runtime that builds from torch: ``copies`` deep copies of a module,
    weights perturbed alike, all reading the same input; one output per copy."""
    import copy

    import torch

    gen = torch.Generator().manual_seed(seed)
    replicas = [module]
    for _ in range(1, copies):
        c = copy.deepcopy(module)
        with torch.no_grad():
            for p in c.parameters():
                if p.is_floating_point() and p.numel() > 1:
                    p.mul_(1 + 1e-3 * torch.randn(p.shape, generator=gen))
        replicas.append(c)

    class Replicas(torch.nn.Module):
        def __init__(self, parts):
            super().__init__()
            self.parts = torch.nn.ModuleList(parts)

        def forward(self, x):
            return tuple(part(x) for part in self.parts)

    return Replicas(replicas).eval()


class BlockReading(NamedTuple):
    """What measure_block reads of one block: ``hot`` (its Measurement, weights in cache),
    ``overhead`` (the trivial model in alternation with it), ``cold`` (per copy, weights from
    beyond L2; None: not measured), ``env`` (environment fingerprint) and ``probe`` (the held
    probe in alternation with the hot block; None: measured without one)."""

    hot: Any
    overhead: LatencyStats
    cold: LatencyStats | None
    env: dict
    probe: LatencyStats | None = None


def measure_block(module, sample_shape: tuple, target, settings, work_dir: Path, copies: int,
                  probe=None) -> BlockReading:
    """A block alone (weights stay in cache), in alternation with the trivial overhead model
    (what a run costs besides the work, measured at the same moments) and with ``probe`` (an
    open_reference piece held through the run, whose reading says how fast the machine ran
    meanwhile: cost.drift_factor), and as ``copies`` replicas run back to back (weights from
    beyond L2; in the same seconds, so the probe's factor applies to it too)."""
    path = _piece(module, sample_shape, target, work_dir, "block")
    trivial = _piece(_overhead_module(), sample_shape, target, work_dir, "overhead")
    ms, env = measure_onnx_together([(path, sample_shape), (trivial, sample_shape)], target, settings,
                                    work_dir / "hot", held=[probe] if probe is not None else [])
    hot, over = ms[0], ms[1]
    seen = ms[2].stats if probe is not None else None
    if copies < 2:
        return BlockReading(hot, over.stats, None, env, seen)
    rep = (replicate_onnx(path, work_dir / "cold.onnx", copies) if isinstance(path, Path)
           else replicate_module(path, copies))
    mc, _ = measure_onnx(rep, sample_shape, target, settings, work_dir / "cold")
    cold = LatencyStats.from_samples(mc.samples_ms / copies, warmup=mc.stats.warmup,
                                     confidence=settings.confidence, unstable_iqr=settings.unstable_iqr)
    return BlockReading(hot, over.stats, cold, env, seen)


def pair_module(first: Mapping, second: Mapping):
    """Two blocks run back to back, as they follow each other in a candidate."""
    import torch

    from ..models import build_block

    a, shape = build_block(dict(first))
    b, _ = build_block(dict(second))
    return torch.nn.Sequential(a, b).eval(), shape


class PairReading(NamedTuple):
    """What measure_pair reads: the pair's and its first block's Measurements, the environment,
    and the held probe's reading in alternation with them (None: no probe)."""

    pair: Any
    head: Any
    env: dict
    probe: LatencyStats | None = None


def measure_pair(first: Mapping, second: Mapping, target, settings, work_dir: Path, probe=None) -> PairReading:
    """Two adjacent blocks measured together, in alternation with the first block alone (and
    with ``probe``, as measure_block).

    The difference ``pair - first alone`` is what the second block costs after the first inside
    a model: the runtime's work at the boundary between them (layout changes, fusion) is counted
    once, as in the whole model, and not once per block. It is a few microseconds, the
    difference of two readings ten times larger: measured in alternation, both see the same
    drift of the machine."""
    from ..models import build_block

    module, shape = pair_module(first, second)
    alone, alone_shape = build_block(dict(first))
    pair_path = _piece(module, tuple(shape), target, work_dir, "pair")
    first_path = _piece(alone, tuple(alone_shape), target, work_dir, "first")
    ms, env = measure_onnx_together([(pair_path, tuple(shape)), (first_path, tuple(alone_shape))],
                                    target, settings, work_dir / "pair", held=[probe] if probe is not None else [])
    return PairReading(ms[0], ms[1], env, ms[2].stats if probe is not None else None)
