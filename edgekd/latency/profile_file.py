"""The latency profile file (docs/LATENCY.md "Profiles and prediction"): its entries, and reading
and writing it. A profile is versioned JSON (``"schema": "edgekd.profile/v1"``) for one family on
one target; latency.profile measures one, latency.fit fits its predictor (and its save_profile and
load_profile are the ones to use: they keep the fit current).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from ..errors import BadInputError
from ..util_io import atomic_write_json, read_versioned_json
from .stats import LatencyStats

SCHEMA = "edgekd.profile/v1"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _stats_dict(stats: LatencyStats) -> dict:
    d = stats.to_dict()
    d["environment"] = {}  # the profile's fingerprint applies to every entry
    return d


@dataclass
class ModelEntry:
    """One whole candidate measured on the target."""

    family: str
    spec: str
    params: int
    macs: int
    blocks: tuple[str, ...]
    latency: LatencyStats
    input_shape: tuple[int, ...] = ()
    first_inference_ms: float | None = None
    measured_at: str = ""
    # the profile's reference model, measured in alternation with this one (None: profiled
    # before), and which load of it (one per profiling process): predict.model_latency
    reference: LatencyStats | None = None
    reference_load: str = ""
    # the samples of each during which the process kept its CPU (cost.model_latency reads them on
    # a loaded machine, where most samples of a long model wait for a CPU); None: not recorded
    quiet: LatencyStats | None = None
    reference_quiet: LatencyStats | None = None
    # the model's samples, each divided by how fast the reference ran in the same rounds of
    # slices against its median over this measurement (latency.drift.correct): the drift within
    # the measurement taken out by rounds; cost.model_latency scales it as it scales ``latency``.
    # None: not recorded
    steady: LatencyStats | None = None
    # the artifact's size and the peak memory of one inference (latency.memory.MemoryUse.to_dict);
    # None: profiled before memory was measured
    memory: dict | None = None

    def to_dict(self) -> dict:
        return {"kind": "model", "family": self.family, "spec": self.spec, "params": int(self.params),
                "macs": int(self.macs), "blocks": list(self.blocks), "input_shape": list(self.input_shape),
                "latency": _stats_dict(self.latency), "first_inference_ms": self.first_inference_ms,
                "reference": _stats_dict(self.reference) if self.reference else None,
                "reference_load": self.reference_load, "measured_at": self.measured_at,
                **({"quiet": _stats_dict(self.quiet)} if self.quiet else {}),
                **({"reference_quiet": _stats_dict(self.reference_quiet)} if self.reference_quiet else {}),
                **({"steady": _stats_dict(self.steady)} if self.steady else {}),
                **({"memory": dict(self.memory)} if self.memory else {})}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ModelEntry":
        ref = d.get("reference")
        return cls(family=str(d["family"]), spec=str(d["spec"]), params=int(d["params"]),
                   macs=int(d["macs"]), blocks=tuple(d.get("blocks", ())),
                   latency=LatencyStats.from_dict(d["latency"]),
                   input_shape=tuple(d.get("input_shape", ())),
                   first_inference_ms=d.get("first_inference_ms"), measured_at=d.get("measured_at", ""),
                   reference=LatencyStats.from_dict(ref) if ref else None,
                   reference_load=str(d.get("reference_load") or ""),
                   quiet=LatencyStats.from_dict(d["quiet"]) if d.get("quiet") else None,
                   reference_quiet=LatencyStats.from_dict(d["reference_quiet"]) if d.get("reference_quiet") else None,
                   steady=LatencyStats.from_dict(d["steady"]) if d.get("steady") else None,
                   memory=dict(d["memory"]) if d.get("memory") else None)


@dataclass
class BlockEntry:
    """One block (the unit the runtime executes), measured on its own."""

    key: str
    signature: dict
    latency: LatencyStats  # alone: weights stay in cache between runs
    input_shape: tuple[int, ...] = ()
    measured_at: str = ""
    # per copy, run as `copies` copies with their own weights: weights come from beyond L2
    latency_cold: LatencyStats | None = None
    copies: int = 0
    # the trivial overhead model on the block's input, measured in alternation with the block
    # (None: profiled before)
    overhead: LatencyStats | None = None
    # the profile's probe (protocol "probe") measured in alternation with the block, and which
    # load of it (one per profiling process): cost.drift_factor (None: profiled before)
    probe: LatencyStats | None = None
    probe_load: str = ""

    def to_dict(self) -> dict:
        return {"kind": "block", "key": self.key, "signature": dict(self.signature),
                "input_shape": list(self.input_shape), "latency": _stats_dict(self.latency),
                "latency_cold": _stats_dict(self.latency_cold) if self.latency_cold else None,
                "copies": self.copies, "overhead": _stats_dict(self.overhead) if self.overhead else None,
                **_probe_dict(self), "measured_at": self.measured_at}

    @classmethod
    def from_dict(cls, d: Mapping) -> "BlockEntry":
        cold, over = d.get("latency_cold"), d.get("overhead")
        return cls(key=str(d["key"]), signature=dict(d.get("signature") or {}),
                   latency=LatencyStats.from_dict(d["latency"]), input_shape=tuple(d.get("input_shape", ())),
                   measured_at=d.get("measured_at", ""),
                   latency_cold=LatencyStats.from_dict(cold) if cold else None, copies=int(d.get("copies", 0)),
                   overhead=LatencyStats.from_dict(over) if over else None, **_probe_from(d))


def _probe_dict(entry) -> dict:
    return {"probe": _stats_dict(entry.probe), "probe_load": entry.probe_load} if entry.probe else {}


def _probe_from(d: Mapping) -> dict:
    return {"probe": LatencyStats.from_dict(d["probe"]) if d.get("probe") else None,
            "probe_load": str(d.get("probe_load") or "")}


PAIR_SEP = " -> "


def pair_key(first: str, second: str) -> str:
    return f"{first}{PAIR_SEP}{second}"


def model_pairs(block_keys) -> list[str]:
    """The pair keys of a model's adjacent blocks, in order."""
    keys = list(block_keys)
    return [pair_key(a, b) for a, b in zip(keys, keys[1:])]


@dataclass
class PairEntry:
    """Two adjacent blocks (``first`` then ``second``) run together on their own."""

    first: str
    second: str
    latency: LatencyStats
    measured_at: str = ""
    # the first block alone, measured in alternation with the pair (None: profiled before)
    first_alone: LatencyStats | None = None
    # the profile's probe in alternation with both, and its load (as BlockEntry)
    probe: LatencyStats | None = None
    probe_load: str = ""

    @property
    def key(self) -> str:
        return pair_key(self.first, self.second)

    def to_dict(self) -> dict:
        return {"kind": "pair", "key": self.key, "first": self.first, "second": self.second,
                "latency": _stats_dict(self.latency),
                "first_alone": _stats_dict(self.first_alone) if self.first_alone else None,
                **_probe_dict(self), "measured_at": self.measured_at}

    @classmethod
    def from_dict(cls, d: Mapping) -> "PairEntry":
        head = d.get("first_alone")
        return cls(first=str(d["first"]), second=str(d["second"]), latency=LatencyStats.from_dict(d["latency"]),
                   measured_at=d.get("measured_at", ""), first_alone=LatencyStats.from_dict(head) if head else None,
                   **_probe_from(d))


@dataclass
class Profile:
    target: dict
    family: str
    in_channels: int = 1
    num_classes: int = 10
    fingerprint: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)
    grid: list[str] = field(default_factory=list)
    models: list[ModelEntry] = field(default_factory=list)
    blocks: dict[str, BlockEntry] = field(default_factory=dict)
    pairs: dict[str, PairEntry] = field(default_factory=dict)
    overhead: LatencyStats | None = None
    calibration: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    # sizes and peaks fitted to the models' measured ones, per candidate (size_estimate.memory_summary)
    memory: dict = field(default_factory=dict)
    # stored whole models and blocks measured again by a resumed run, with that run's load of the
    # reference or probe: they put each load on the first one's scale (cost.load_scale)
    bridges: list = field(default_factory=list)
    created: str = ""
    updated: str = ""
    elapsed_s: float = 0.0
    path: Path | None = None

    @property
    def target_name(self) -> str:
        return str(self.target.get("name", "?"))

    @property
    def label(self) -> str:
        return str(self.path) if self.path else f"{self.family}@{self.target_name}"

    @property
    def overhead_ms(self) -> float:
        return self.overhead.p50 if self.overhead is not None else 0.0

    def overhead_metric(self, metric: str) -> float:
        return self.overhead.metric(metric) if self.overhead is not None else 0.0

    def model(self, spec: str) -> ModelEntry | None:
        for m in self.models:
            if m.spec == spec:
                return m
        return None

    def models_by_capacity(self) -> list[ModelEntry]:
        return sorted(self.models, key=lambda m: (m.params, m.macs, m.spec))

    @property
    def complete(self) -> bool:
        have = {m.spec for m in self.models}
        latest = (self.protocol.get("resumed_with") or [self.protocol])[-1]  # profile --no-pairs: none wanted
        return bool(self.grid) and all(s in have for s in self.grid) and all(
            k in self.blocks for m in self.models for k in m.blocks) and ("pairs" in latest or all(
                k in self.pairs for m in self.models for k in model_pairs(m.blocks)))

    def to_dict(self) -> dict:
        entries = ([m.to_dict() for m in self.models] + [b.to_dict() for b in self.blocks.values()]
                   + [q.to_dict() for q in self.pairs.values()])
        return {
            "schema": SCHEMA, "target": self.target, "family": self.family,
            "in_channels": self.in_channels, "num_classes": self.num_classes,
            "fingerprint": self.fingerprint, "protocol": self.protocol, "grid": list(self.grid),
            "complete": self.complete,
            "overhead_ms": self.overhead_ms if self.overhead is not None else None,
            "overhead_latency": _stats_dict(self.overhead) if self.overhead is not None else None,
            "calibration": self.calibration, "validation": self.validation,
            **({"memory": self.memory} if self.memory else {}),
            **({"bridges": [e.to_dict() for e in self.bridges]} if self.bridges else {}),
            "created": self.created, "updated": self.updated, "elapsed_s": round(self.elapsed_s, 2),
            "entries": entries,
        }

    @classmethod
    def from_dict(cls, d: Mapping, path: Path | None = None) -> "Profile":
        models, blocks, pairs = [], {}, {}
        for e in d.get("entries", []):
            if e.get("kind") == "model":
                models.append(ModelEntry.from_dict(e))
            elif e.get("kind") == "block":
                b = BlockEntry.from_dict(e)
                blocks[b.key] = b
            elif e.get("kind") == "pair":
                q = PairEntry.from_dict(e)
                pairs[q.key] = q
            else:
                raise ValueError(f"entry of unknown kind {e.get('kind')!r}")
        bridges = [ModelEntry.from_dict(e) if e.get("kind") == "model" else BlockEntry.from_dict(e)
                   for e in d.get("bridges") or []]
        ov = d.get("overhead_latency")
        return cls(target=dict(d["target"]), family=str(d["family"]), in_channels=int(d.get("in_channels", 1)),
                   num_classes=int(d.get("num_classes", 10)), fingerprint=dict(d.get("fingerprint") or {}),
                   protocol=dict(d.get("protocol") or {}), grid=list(d.get("grid") or []),
                   models=models, blocks=blocks, pairs=pairs, overhead=LatencyStats.from_dict(ov) if ov else None,
                   calibration=dict(d.get("calibration") or {}), validation=dict(d.get("validation") or {}),
                   memory=dict(d.get("memory") or {}), bridges=bridges,
                   created=d.get("created", ""), updated=d.get("updated", ""),
                   elapsed_s=float(d.get("elapsed_s", 0.0)), path=path)


def write_profile_file(profile: Profile, path: "str | Path") -> Path:
    """Write the whole profile atomically (never half-written), as it is (fit.save_profile fits
    the predictor first)."""
    profile.updated = _now()
    p = Path(path)
    atomic_write_json(p, profile.to_dict())
    profile.path = p
    return p


def read_profile_file(path: "str | Path") -> Profile:
    """Read a profile as stored; BadInputError for a missing, truncated, corrupt or foreign file
    (fit.load_profile also fits again a calibration of another predictor version)."""
    p = Path(path)
    data = read_versioned_json(p, SCHEMA, what="profile",
                               hint="write one with `edgekd profile --target T --family F --out FILE`; "
                                    "--resume recovers what a truncated one held")
    try:
        prof = Profile.from_dict(data, path=p)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"profile {p} is damaged: {type(exc).__name__}: {exc}",
                            hint="re-run `edgekd profile` into a new file") from exc
    return prof


def salvage_profile(path: "str | Path") -> "tuple[Profile, int] | None":
    """What a truncated profile still holds: its header and every entry written whole before the
    cut, with the number of entries kept (None when not even the header can be read).

    The profiler writes atomically, so a file is only cut short by something else (a copy
    interrupted, a full disk); ``profile_family(resume=True)`` then measures what was lost."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    mark = text.find('"entries": [')
    if mark < 0:
        return None
    try:
        head = json.loads(text[:mark] + '"entries": []}')
    except json.JSONDecodeError:
        return None
    if not isinstance(head, dict) or head.get("schema") != SCHEMA:
        return None
    decoder, pos, entries = json.JSONDecoder(), mark + len('"entries": ['), []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        try:
            entry, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        if not isinstance(entry, dict):
            break
        entries.append(entry)
    try:
        prof = Profile.from_dict({**head, "entries": entries}, path=p)
    except (KeyError, TypeError, ValueError):
        return None
    return prof, len(entries)
