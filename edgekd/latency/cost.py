"""Block costs: the features the latency predictor sums (docs/LATENCY.md "Profiles and prediction").

A block's cost is read in one of two ways (the "method"):

- ``alone``: the block measured on its own, less the per-inference overhead.
- ``context``: the first block alone, then each next block as the smaller of its cost alone
  and ``pair(prev, block) - alone(prev)``, where the pair is the two blocks measured together.
  A runtime that changes the memory layout at a model's inputs and outputs, or fuses across
  blocks (OpenVINO's CPU plugin does both), pays those costs once per model, but once per block
  when blocks run alone; the pair difference removes them. A block inside a model never pays
  more than alone; a pair whose weights spill out of L2 pays weight traffic that the cold
  correction below adds again, so the smaller of the two readings is kept. These differences
  are a few microseconds taken from readings ten times larger, summed over ~20 blocks: the
  profiler measures each pair in alternation with its first block alone, and each block with
  the overhead model, so that the machine's drift between one entry and the next does not
  enter them (profiles made before keep the readings of the separate entries).

A block's cost depends on where its weights are when it runs. Measured alone, its weights stay
in the core's L2 cache between runs ("hot", less the runtime's per-inference overhead measured
on a trivial model); measured as several copies with their own weights, run back to back, its
weights come from beyond L2 ("cold", per copy). In a whole model the weights of all blocks
share L2 with each other and with the runtime's code and state: a model whose footprint
(its weights) is small runs its blocks hot; one well beyond L2 runs them cold (a
model's weights are read in the same order every inference, so once they overflow the cache
each block evicts the next one's); in between the cold extra is interpolated linearly. Where
the runtime starts and stops paying (the "cache model": footprint / L2 at which blocks start to
run cold, and at which they all do) depends on how it lays weights out and what else it keeps
in cache, so it is chosen per profile too, from CACHE_MODELS (latency.fit chooses).

Whole models are measured one after another over minutes while the machine's speed drifts by
several percent; each is measured in alternation with one reference model held loaded through
the run, and the value fitted and judged (model_latency) is its reading scaled by how fast the
reference ran at that moment against how fast it ran typically over the run.

Pure arithmetic on a Profile; nothing here measures or imports a runtime.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import BadInputError
from .profile_file import ModelEntry, Profile, model_pairs

METHODS = ("alone", "context")
# Blocks are summed by their medians for every metric: a whole model's p90 is not the sum of its
# blocks' p90s; its tail is fitted (a, b per metric) on the calibration set instead.
FEATURE = "p50"

# (hot below, all cold from): footprint / L2. The first is the default of profiles calibrated
# before the cache model was chosen per profile. The last two are the ramps real-size models
# follow: on 13 stored 96-224 px profiles (2-17 MB of weights, L2 2 MB) leave-one-out on the
# calibration models chose one of them every time, and held-out errors fell (OpenVINO's shipped
# hf-mobilenetv2 profile 90% -> 97% within ±10%); the 16-32 px profiles keep their earlier choice.
CACHE_MODELS = ((0.5, 1.5), (0.25, 1.0), (0.5, 1.0), (0.25, 1.5), (1.0, 4.0), (2.0, 8.0))
Cache = tuple  # (hot_below, cold_above)

DEFAULT_L2_BYTES = 2 << 20
BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


def model_latency(profile: Profile, model, metric: str, seen: frozenset = frozenset()) -> float:
    """A whole model's measured ``metric`` with the machine's drift taken out: its reading times
    ``typical / reference``, where ``reference`` is the profile's reference model measured in
    alternation with it (median) and ``typical`` the median of the reference's readings over
    every model measured with the same load of it (one per profiling process; a reference's
    level also moves with its load), times the load's scale against the first run's (load_scale:
    1.0 but in a resumed profile). The result is on the scale of the run's typical moment.
    Models measured without a reference (profiles made before) keep their reading. The reading
    is the model's ``steady`` statistics where the profile has them (each sample divided by the
    reference's speed in the same rounds of slices; profile.steady_stats), else its own.

    A profile measured on a loaded machine (quiet_readings) is read through its quiet samples,
    the model's and the reference's alike."""
    quiet = quiet_readings(profile)
    stats = model.quiet if quiet else (getattr(model, "steady", None) or model.latency)
    raw = stats.metric(metric)
    ref = model.reference_quiet if quiet else getattr(model, "reference", None)
    if ref is None or not ref.p50 > 0:
        return raw
    load = model.reference_load
    return raw * _typical_reference(profile, load, quiet) / ref.p50 * load_scale(profile, "model", load, seen)


def load_scale(profile: Profile, kind: str, load: str, seen: frozenset = frozenset()) -> float:
    """The factor that puts the readings of one load of the reference (``kind`` "model") or of
    the probe ("block": blocks and pairs) on the scale of the loads before it: 1.0 for the first
    load, or one without bridges. A resumed run measures a few stored models and blocks again
    (Profile.bridges); each load's own typical reading takes the drift out within that load, but
    the level between loads can move, and with it every reading of the resumed run: when the
    machine itself has moved between the two runs (the reference read 2.55 ms typically in a
    resumed OpenVINO run against 3.47 before, and its models as much faster), or when only the
    reference's placement has (a load alone can move it 5-10%). The stored value of each bridge
    over its value in this load, median over the bridges, is the factor either way."""
    if load in seen or not profile.bridges:
        return 1.0
    version = (len(profile.models), len(profile.blocks), len(profile.pairs), len(profile.bridges))
    cache = getattr(profile, "_load_scale_cache", None)
    if cache is None or cache[0] != version:
        cache = (version, {})
        object.__setattr__(profile, "_load_scale_cache", cache)
    key = (kind, load, seen)
    if key not in cache[1]:
        cache[1][key] = _load_scale(profile, kind, load, seen | {load})
    return cache[1][key]


def _load_scale(profile: Profile, kind: str, load: str, seen: frozenset) -> float:
    ratios = []
    for b in _bridges(profile, kind):
        if _load(b) != load:
            continue
        stored = profile.model(b.spec) if kind == "model" else profile.blocks.get(b.key)
        if stored is None or _load(stored) in seen:
            continue
        # this load's reading of the bridge, on this load's own scale (seen: not scaled again),
        # against the stored one on its load's full scale
        if kind == "model":
            now, then = model_latency(profile, b, FEATURE, seen), model_latency(profile, stored, FEATURE, seen)
        else:
            now = b.latency.p50 * drift_factor(profile, b, seen)
            then = stored.latency.p50 * drift_factor(profile, stored, seen)
        if now > 0 and then > 0:
            ratios.append(then / now)
    return float(np.median(ratios)) if ratios else 1.0


def _kind(entry) -> str:
    return "model" if isinstance(entry, ModelEntry) else "block"


def _bridges(profile: Profile, kind: str) -> list:
    """The profile's bridges of one kind: "model" (whole models) or "block"."""
    return [b for b in profile.bridges if _kind(b) == kind]


def _load(entry) -> str:
    return entry.reference_load if isinstance(entry, ModelEntry) else entry.probe_load


# A profile whose whole models were mostly descheduled while measured: at least this fraction
# of them had more than half of their samples disturbed.
LOADED = 0.5
# A whole model of such a profile with fewer undisturbed samples than this never ran alone on
# its CPU long enough to be read (readable).
QUIET_MIN = 20
MIN_READABLE = 5


def quiet_readings(profile: Profile) -> bool:
    """Whether whole models are read through their quiet samples (ModelEntry.quiet): every
    model has them, and on at least LOADED of the models more than half of the samples were
    descheduled. On 2 shared cores at load 20-26, an hf-mobilenetv2 at 128 px (1.4 ms of work)
    read p50 13.6 ms, its fastest run 1.36 ms; the sum of its blocks was 1.6 ms."""
    models = profile.models
    if not models or any(m.quiet is None or (m.reference is not None and m.reference_quiet is None)
                         for m in models):
        return False
    loaded = sum(m.latency.disturbed * 2 > m.latency.n for m in models)
    return loaded >= LOADED * len(models)


def readable(profile: Profile, model) -> bool:
    """Whether a whole model's reading says what it costs: always, unless the profile is read
    through quiet samples and this model had fewer than QUIET_MIN undisturbed ones (its fastest
    runs still waited: an hf-mobilenetv2 at 224 px whose fastest run took 3.9 ms read 12.6 ms
    over its fastest tenth). The fit neither calibrates on nor judges by such a model, unless
    fewer than MIN_READABLE models of the profile ran undisturbed at all (OpenVINO's worker
    threads are switched out in every sample on a loaded machine): then every model is read
    through its fastest tenth."""
    if not quiet_readings(profile):
        return True
    calm = [m.latency.n - m.latency.disturbed >= QUIET_MIN for m in profile.models]
    return sum(calm) < MIN_READABLE or model.latency.n - model.latency.disturbed >= QUIET_MIN


def _typical_reference(profile: Profile, load: str, quiet: bool = False) -> float:
    refs = [(m.reference_quiet if quiet else m.reference)
            for m in (*profile.models, *_bridges(profile, "model")) if m.reference_load == load]
    vals = [r.p50 for r in refs if r is not None and r.p50 > 0]
    return float(np.median(vals))


def drift_factor(profile: Profile, entry, seen: frozenset = frozenset()) -> float:
    """How much faster than typical the machine ran while a block or pair entry was measured:
    ``typical / probe``, where ``probe`` is the profile's probe (a fixed block held loaded
    through the run) measured in alternation with the entry, and ``typical`` the median of the
    probe's readings over every entry measured with the same load of it (one per profiling
    process). Multiplying an entry's reading by it puts it on the scale of the run's typical
    moment, as model_latency does for whole models. 1.0 for entries measured without a probe.

    Blocks are measured one after another over minutes; a VM's speed moves by 25-55% within
    them. On an idle 2-core VM, ort-cpu, the twelve blocks of one hf-mobilenetv2 candidate
    measured during a slow phase of ten seconds read 1.5-2x their neighbours' cost per MAC
    (that candidate's block sum came out above the next larger resolution's), and the
    predictor missed it by 16%."""
    probe = getattr(entry, "probe", None)
    if probe is None or not probe.p50 > 0:
        return 1.0
    typical = _typical_probes(profile).get(entry.probe_load)
    scale = load_scale(profile, "block", entry.probe_load, seen)
    return typical / probe.p50 * scale if typical else 1.0


def _typical_probes(profile: Profile) -> dict:
    """{probe load: median of its p50 readings} over the profile's blocks and pairs (cached on
    the profile while its entries stay the same)."""
    key = (len(profile.blocks), len(profile.pairs), len(profile.bridges))
    cached = getattr(profile, "_typical_probe_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    loads: dict = {}
    for e in (*profile.blocks.values(), *profile.pairs.values(), *_bridges(profile, "block")):
        if e.probe is not None and e.probe.p50 > 0:
            loads.setdefault(e.probe_load, []).append(e.probe.p50)
    typical = {k: float(np.median(v)) for k, v in loads.items()}
    object.__setattr__(profile, "_typical_probe_cache", (key, typical))
    return typical


def net_block_ms(profile: Profile, key: str, metric: str) -> float:
    """A block's latency alone (weights in cache) less the per-inference overhead (>= 0): the
    overhead measured in alternation with the block where the profile has it, else the
    profile's one overhead entry; times the block's drift_factor."""
    block = profile.blocks.get(key)
    if block is None:
        raise KeyError(key)
    overhead = block.overhead.metric(metric) if block.overhead is not None else profile.overhead_metric(metric)
    return max(block.latency.metric(metric) - overhead, 0.0) * drift_factor(profile, block)


def cold_block_ms(profile: Profile, key: str, metric: str) -> float | None:
    """A block's latency per copy with its weights from beyond L2 (None: not measured), times
    its drift_factor (the copies are measured right after the block alone)."""
    block = profile.blocks[key]
    if block.latency_cold is None:
        return None
    return block.latency_cold.metric(metric) * drift_factor(profile, block)


def in_pair_ms(profile: Profile, pair_key: str, metric: str) -> float:
    """What the pair's second block adds to its first: ``pair - first alone``, with the first
    alone measured in alternation with the pair where the profile has it (else its block entry),
    times the pair's drift_factor.
    May be negative: the pair drops the layout change after the first block that it paid alone."""
    pair = profile.pairs[pair_key]
    if pair.first_alone is None:
        return pair.latency.metric(metric) - profile.blocks[pair.first].latency.metric(metric)
    return (pair.latency.metric(metric) - pair.first_alone.metric(metric)) * drift_factor(profile, pair)


def footprint_bytes(profile: Profile, block_keys: Sequence[str]) -> float:
    """What a model has to keep in cache from one inference to the next: its weights (bytes at
    the target's precision). Activations are not counted: a block's are written and read again
    at once and stay near the core whatever the model's size; it is the weights, read once per
    inference in the same order, that the next inference finds evicted or not. (Counting twice
    the largest activation working set too, as before, put models with few wide blocks too far
    up the ramp: on 20 stored profiles of this machine, weights alone scored 88-100% held-out,
    mean 97.5%, against 71-100%, mean 93%.)"""
    per = BYTES_PER_WEIGHT.get(str(profile.target.get("precision", "fp32")), 4)
    return float(per * sum(int(profile.blocks[k].signature.get("params", 0) or 0) for k in block_keys))


def cold_fraction(profile: Profile, block_keys: Sequence[str], cache: Cache = CACHE_MODELS[0]) -> float:
    """0 while the model's footprint is at most cache[0] x L2, 1 from cache[1] x L2 up, linear
    in between."""
    hot_below, cold_above = cache
    l2 = float((profile.protocol or {}).get("l2_bytes") or DEFAULT_L2_BYTES)
    frac = (footprint_bytes(profile, block_keys) / l2 - hot_below) / (cold_above - hot_below)
    return min(max(frac, 0.0), 1.0)


def _require(profile: Profile, keys: Sequence[str], stored: Mapping, what: str) -> None:
    """BadInputError naming the first of ``keys`` the profile has no ``what`` measurement for."""
    missing = [k for k in keys if k not in stored]
    if missing:
        raise BadInputError(f"profile {profile.label} has no measurement for {what} '{missing[0]}' "
                            f"({len(missing)} missing)",
                            hint="re-run `edgekd profile --resume` with a grid that contains this candidate")


def _cold_shift(profile: Profile, block_keys: Sequence[str], metric: str, cache: Cache) -> float:
    """What the blocks add when their weights come from beyond L2 (cold_fraction of the way)."""
    f = cold_fraction(profile, block_keys, cache)
    if f == 0.0:
        return 0.0
    total = 0.0
    for k in block_keys:
        cold = cold_block_ms(profile, k, metric)
        if cold is not None:
            total += f * (cold - net_block_ms(profile, k, metric))
    return total


def block_sum_ms(profile: Profile, block_keys: Sequence[str], metric: str,
                 cache: Cache = CACHE_MODELS[0]) -> float:
    """Sum of the blocks' costs measured alone, for a model made of them (method ``alone``)."""
    block_keys = list(block_keys)
    _require(profile, block_keys, profile.blocks, "block")
    hot = sum(net_block_ms(profile, k, metric) for k in block_keys)
    return float(hot + _cold_shift(profile, block_keys, metric, cache))


def context_sum_ms(profile: Profile, block_keys: Sequence[str], metric: str,
                   cache: Cache = CACHE_MODELS[0]) -> float:
    """The blocks' costs in context (method ``context``): the first alone, each next one as
    min(alone, pair(prev, it) - alone(prev))."""
    block_keys = list(block_keys)
    _require(profile, block_keys, profile.blocks, "block")
    pairs = model_pairs(block_keys)
    _require(profile, pairs, profile.pairs, "block pair")
    total = net_block_ms(profile, block_keys[0], metric) if block_keys else 0.0
    for key, pk in zip(block_keys[1:], pairs):
        total += min(in_pair_ms(profile, pk, metric), net_block_ms(profile, key, metric))
    return float(total + _cold_shift(profile, block_keys, metric, cache))


def has_feature(profile: Profile, block_keys: Sequence[str], method: str) -> bool:
    if not all(k in profile.blocks for k in block_keys):
        return False
    return method == "alone" or all(k in profile.pairs for k in model_pairs(block_keys))


def feature_ms(profile: Profile, block_keys: Sequence[str], method: str = "alone",
               cache: Cache = CACHE_MODELS[0]) -> float:
    """The block-cost sum a calibration of ``method`` and ``cache`` applies to (by medians: FEATURE)."""
    if method == "context":
        return context_sum_ms(profile, block_keys, FEATURE, cache)
    if method == "alone":
        return block_sum_ms(profile, block_keys, FEATURE, cache)
    raise BadInputError(f"unknown predictor method '{method}'", hint=f"use one of {', '.join(METHODS)}")


def cache_label(cache: Sequence[float]) -> str:
    """A cache model as text, e.g. 0.25-1: footprint / L2 where blocks start to run cold, and
    where they all do."""
    return "-".join(f"{float(v):g}" for v in cache)


def reading_label(method: str, cache: Cache) -> str:
    return f"{method} {cache_label(cache)}"
