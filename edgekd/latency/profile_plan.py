"""What a profile run measures besides its grid's entries (docs/LATENCY.md "Profiles and
prediction"): which candidates calibrate the predictor, the reference model every whole model is
measured beside, and the probe block every block and pair is measured beside. Arithmetic on
specs and block signatures; nothing here measures.
"""
from __future__ import annotations

from typing import Mapping

from .fit import calibration_indices
from .profile_file import Profile


def calibration_specs(grid, sigs, prof: Profile, in_channels: int, num_classes: int) -> set[str]:
    """The specs of ``grid`` the predictor will calibrate on: calibration_indices over the grid in
    capacity order (params, MACs, spec; as Profile.models_by_capacity)."""
    ranked = by_capacity(grid, sigs, prof, in_channels, num_classes)
    return {ranked[i] for i in calibration_indices(len(ranked))}


def reference_spec(grid, sigs, prof: Profile, in_channels: int, num_classes: int) -> str | None:
    """The reference model of a profile run (REFERENCE): the grid's middle candidate by capacity."""
    ranked = by_capacity(grid, sigs, prof, in_channels, num_classes)
    return ranked[len(ranked) // 2] if ranked else None


def probe_signature(prof: Profile, sigs: Mapping, ref_spec: str | None, in_channels: int,
                     num_classes: int) -> dict | None:
    """The signature of the profile's probe (protocol "probe"): kept from the profile being
    resumed where its signature is known, else the middle block of the reference model (a
    fixed piece of the family's own work, short enough to run many times in each slice), which is
    then recorded in the protocol. None: no grid to take it from."""
    from ..models import block_signatures

    key = prof.protocol.get("probe")
    if key:
        known = prof.blocks.get(key)
        if known is not None:
            return dict(known.signature)
        for g in sigs.values():
            for sig in g:
                if sig["key"] == key:
                    return sig
    if ref_spec is None:
        return None
    g = sigs.get(ref_spec) or block_signatures(ref_spec, in_channels, num_classes=num_classes)
    if not g:
        return None
    sig = g[len(g) // 2]
    prof.protocol["probe"] = sig["key"]
    return sig


def by_capacity(grid, sigs, prof: Profile, in_channels: int, num_classes: int) -> list[str]:
    from ..models import block_signatures

    def capacity(spec: str) -> tuple:
        entry = prof.model(spec)
        if entry is not None:
            return entry.params, entry.macs, spec
        g = sigs.get(spec) or block_signatures(spec, in_channels, num_classes=num_classes)
        return sum(int(x["params"]) for x in g), sum(int(x["macs"]) for x in g), spec

    return sorted(grid, key=capacity)


# stored whole models and blocks a resumed run measures again (each kind) before its own
BRIDGES = 2


def bridge_plan(prof: Profile, plan: list) -> list:
    """``plan`` with BRIDGES stored blocks measured again before the first block or pair it
    measures, and BRIDGES stored whole models before its first model (the middle ones, by
    latency and by capacity): a resumed run's readings are put on the stored ones' scale by
    them (cost.load_scale). A plan that measures no block, or no model, bridges none of that kind."""
    out = list(plan)
    blocks = sorted((b for b in prof.blocks.values() if b.probe is not None and b.probe.p50 > 0),
                    key=lambda b: b.latency.p50)
    at = next((i for i, step in enumerate(out) if step[0] in ("block", "pair")), None)
    if blocks and at is not None:
        out[at:at] = [("bridge-block", b.key, dict(b.signature)) for b in _middle(blocks)]
    models = [m for m in prof.models_by_capacity() if m.reference is not None and m.reference.p50 > 0]
    at = next((i for i, step in enumerate(out) if step[0] == "model"), None)
    if models and at is not None:
        out[at:at] = [("bridge-model", m.spec, None) for m in _middle(models)]
    return out


def _middle(items: list) -> list:
    start = max(0, (len(items) - BRIDGES) // 2)
    return items[start:start + BRIDGES]
