"""The machine's speed over a run (docs/LATENCY.md "Drift and the reference model").

A fixed **reference workload** (REFERENCE_SPEC, built from REFERENCE_SEED, exported once to
ONNX and cached by content) is measured in alternation with the model, in short slices
(REFERENCE_SLICE_S against the model's measure.SLICE_S). ``edgekd calibrate`` stores the
reference's median on this machine for a target (one JSON file per target and environment
fingerprint under the cache root). When a calibration exists, a measurement's **speed factor**
is ``reference p50 now / reference p50 at calibration``, and each sample of the model is divided
by the factor the reference showed in the same rounds of slices (this round, the one before and
the one after): a burst of load slows both and cancels out. Samples during which the process was
descheduled (measure.Measurement.disturbed) are left out of the corrected figures.

Nothing here opens a runtime: latency.bench opens the reference and measures it.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import BadInputError
from ..util_io import atomic_write_json, cache_root, sha256_file
from .environment import fingerprint
from .cost import QUIET_MIN
from .stats import LatencyStats

# The reference workload: a small edgekd CNN (tens of microseconds on the shipped CPU targets),
# weights from a fixed seed, one-channel 16x16 input.
REFERENCE_SPEC = "mobilenetv2:width=0.35,depth=0.5,res=16"
REFERENCE_SEED = 0
REFERENCE_IN_CHANNELS = 1
# Its slice, against the model's 5 ms (measure.SLICE_S): the reference takes about 1/6 of the
# timed time (REFERENCE_SHARE); bench lengthens min_time_s so the model keeps its own.
REFERENCE_SLICE_S = 0.001
REFERENCE_SHARE = REFERENCE_SLICE_S / (REFERENCE_SLICE_S + 0.005)
CALIBRATION_SCHEMA = "edgekd.calibration/v1"
# A correction needs at least this many undisturbed samples of the model, else all are kept.
MIN_KEPT = 20
# The speed factor a profile's predictions may be scaled by with --strict (select, gate
# --predict-only); outside it the machine is too far from the one the profile describes.
STRICT_RANGE = (0.67, 1.5)


@dataclass(frozen=True)
class DriftReading:
    """How fast the machine ran during a measurement, against a stored calibration.

    ``factor`` = reference_p50_ms / calibrated_p50_ms (> 1: slower than at calibration);
    ``source`` names the calibration (a calibration file, a profile); ``reference`` the
    reference model; ``share`` the reference's part of the timed time; ``kept``/``n`` the model
    samples the corrected figures rest on (disturbed ones left out)."""

    factor: float
    reference_p50_ms: float
    calibrated_p50_ms: float
    source: str
    reference: str = REFERENCE_SPEC
    share: float = 0.0
    kept: int = 0
    n: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def in_strict_range(factor: float, lo_hi: tuple[float, float] = STRICT_RANGE) -> bool:
    return lo_hi[0] <= factor <= lo_hi[1]


def _window_medians(ref_ms: np.ndarray, ref_rounds: np.ndarray, rounds: np.ndarray) -> np.ndarray:
    """For each round in ``rounds``, the median of the reference samples of that round and its
    two neighbours (NaN where there is none)."""
    out = np.full(rounds.shape, np.nan)
    if ref_ms.size == 0:
        return out
    order = np.argsort(ref_rounds, kind="stable")
    rr, rv = ref_rounds[order], ref_ms[order]
    cache: dict[int, float] = {}
    for i, r in enumerate(rounds.tolist()):
        if r not in cache:
            a, b = np.searchsorted(rr, r - 1, "left"), np.searchsorted(rr, r + 1, "right")
            cache[r] = float(np.median(rv[a:b])) if b > a else math.nan
        out[i] = cache[r]
    return out


def correct(model, reference, calibrated_p50_ms: float, *, source: str, reference_name: str = REFERENCE_SPEC,
            confidence: float = 0.95, unstable_iqr: float = 0.10
            ) -> tuple[DriftReading, LatencyStats, np.ndarray]:
    """Drift-correct a model's Measurement by a reference Measurement taken in alternation with
    it (same rounds): (DriftReading, corrected LatencyStats, the corrected samples in the order
    they were taken, disturbed ones left out). See the module docstring."""
    if not calibrated_p50_ms > 0:
        raise BadInputError(f"calibrated reference median {calibrated_p50_ms} ms must be positive",
                            hint="re-run `edgekd calibrate`")
    x = np.asarray(model.samples_ms, dtype=np.float64)
    rx = np.asarray(reference.samples_ms, dtype=np.float64)
    rd = reference.disturbed if reference.disturbed is not None else np.zeros(rx.size, bool)
    clean = ~rd if (~rd).sum() >= min(MIN_KEPT, rx.size) else np.ones(rx.size, bool)
    ref_p50 = float(np.median(rx[clean]))
    factor = ref_p50 / calibrated_p50_ms
    if model.rounds is not None and reference.rounds is not None:
        per = _window_medians(rx[clean], reference.rounds[clean], model.rounds) / calibrated_p50_ms
        per = np.where(np.isfinite(per) & (per > 0), per, factor)
    else:
        per = np.full(x.shape, factor)
    keep = ~model.disturbed if model.disturbed is not None else np.ones(x.size, bool)
    if keep.sum() < min(MIN_KEPT, x.size):
        keep = np.ones(x.size, bool)
    fixed = x[keep] / per[keep]
    stats = LatencyStats.from_samples(fixed, warmup=model.stats.warmup, confidence=confidence,
                                      unstable_iqr=unstable_iqr, environment=model.stats.environment,
                                      disturbed=0)
    ref_timed, all_timed = float(rx.sum()), float(rx.sum() + x.sum())
    reading = DriftReading(factor=factor, reference_p50_ms=ref_p50, calibrated_p50_ms=float(calibrated_p50_ms),
                           source=source, reference=reference_name,
                           share=ref_timed / all_timed if all_timed > 0 else 0.0,
                           kept=int(keep.sum()), n=int(x.size))
    return reading, stats, fixed


# ------------------------------------------------------------------ the reference workload file

def _reference_key() -> str:
    text = f"{REFERENCE_SPEC}|seed={REFERENCE_SEED}|in={REFERENCE_IN_CHANNELS}|v1"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reference_input_shape() -> tuple:
    from ..models import input_shape

    return tuple(input_shape(REFERENCE_SPEC, REFERENCE_IN_CHANNELS))


def reference_onnx(root: "Path | None" = None) -> Path:
    """The reference workload's ONNX file, exported once from REFERENCE_SPEC and REFERENCE_SEED
    and kept under the cache root (``reference/<key>.onnx``; its content hash is what a
    calibration records)."""
    path = Path(root or cache_root()) / "reference" / f"{_reference_key()}.onnx"
    if path.exists():
        return path
    import torch

    from ..export import export_onnx
    from ..models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(REFERENCE_SEED)
        module = build_model(REFERENCE_SPEC, num_classes=10, in_channels=REFERENCE_IN_CHANNELS).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.zeros((1, *reference_input_shape()), dtype=torch.float32)
    return export_onnx(module, sample, path, metadata={"edgekd.spec": REFERENCE_SPEC})


# ------------------------------------------------------------------ the calibration store

# What a calibration file is keyed by, besides the target's name (known before anything is
# loaded); the runtime and its version are checked against the file's fingerprint once loaded.
KEY_FIELDS = ("cpu", "logical_cores", "threads", "precision", "batch", "device")


def machine_key(target) -> dict:
    """This machine's fingerprint fields a calibration of ``target`` is filed under."""
    fp = fingerprint(runtime=target.runtime.value, runtime_version="", precision=target.precision.value,
                     threads=target.threads, batch=target.batch, input_shape=None, device=target.device.value,
                     target=target.name)
    return {k: fp[k] for k in KEY_FIELDS}


def runtime_mismatch(cal: "Calibration", env: Mapping[str, Any]) -> str | None:
    """Why ``cal`` does not apply to a session with fingerprint ``env`` (another runtime or
    version), or None."""
    diff = [k for k in ("runtime", "runtime_version") if cal.fingerprint.get(k) != env.get(k)]
    if not diff:
        return None
    return ("the calibration of " + cal.target + " was made with "
            + ", ".join(f"{k} {cal.fingerprint.get(k)!r} (now {env.get(k)!r})" for k in diff))


def _env_key(target_name: str, env: Mapping[str, Any]) -> str:
    text = json.dumps([target_name] + [env.get(k) for k in KEY_FIELDS], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def calibration_path(target_name: str, env: Mapping[str, Any], root: "Path | None" = None) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in target_name)
    return Path(root or cache_root()) / "calibration" / f"{safe}-{_env_key(target_name, env)}.json"


@dataclass(frozen=True)
class Calibration:
    """The reference workload's figures on one machine for one target (``edgekd calibrate``)."""

    target: str
    fingerprint: Mapping[str, Any]
    reference: str
    reference_sha256: str
    stats: LatencyStats
    measured_at: str
    path: str = ""

    @property
    def p50_ms(self) -> float:
        return self.stats.p50

    def to_dict(self) -> dict:
        return {"schema": CALIBRATION_SCHEMA, "target": self.target, "fingerprint": dict(self.fingerprint),
                "reference": self.reference, "reference_sha256": self.reference_sha256,
                "stats": self.stats.to_dict(), "measured_at": self.measured_at}


def save_calibration(cal: Calibration, root: "Path | None" = None) -> Path:
    path = calibration_path(cal.target, cal.fingerprint, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, cal.to_dict())
    return path


def load_calibration(target_name: str, env: Mapping[str, Any], reference_file: "Path | None" = None,
                     root: "Path | None" = None) -> Calibration | None:
    """The stored calibration for ``target_name`` in environment ``env``, or None when there is
    none, it cannot be read, or it was made with another reference file than ``reference_file``."""
    path = calibration_path(target_name, env, root)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("schema") != CALIBRATION_SCHEMA:
            return None
        cal = Calibration(target=str(d["target"]), fingerprint=dict(d["fingerprint"]), reference=str(d["reference"]),
                          reference_sha256=str(d["reference_sha256"]), stats=LatencyStats.from_dict(d["stats"]),
                          measured_at=str(d.get("measured_at", "")), path=str(path))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if reference_file is not None and sha256_file(reference_file) != cal.reference_sha256:
        return None
    return cal if cal.p50_ms > 0 else None


# ------------------------------------------------------------------ a speed map from several references

@dataclass(frozen=True)
class SpeedMap:
    """How latencies on one machine (``stored``) map to another (``here``), from reference models
    read on both: ``points`` = ((stored_ms, here_ms), ...) by stored time. Between two points
    the map is linear; beyond the ends a latency is scaled by the end point's ratio. One point is
    one factor for every latency. Load or another machine slows a short model more, in
    proportion, than a long one (per-call and per-operator costs weigh more in it), so one
    factor from one model cannot stand for every size; a map through a short, a middle and a
    long reference can."""

    points: tuple[tuple[float, float], ...]

    @classmethod
    def build(cls, points) -> "SpeedMap | None":
        """The map through ``points``, or None when it cannot be one: a point not positive, or
        the here-times not rising with the stored ones (the readings crossed: noise)."""
        pts = tuple(sorted((float(s), float(h)) for s, h in points))
        if not pts or any(not (s > 0 and h > 0 and math.isfinite(s) and math.isfinite(h)) for s, h in pts):
            return None
        if any(b[0] <= a[0] or b[1] <= a[1] for a, b in zip(pts, pts[1:])):
            return None
        return cls(pts)

    @staticmethod
    def _through(x, xs, ys):
        v = np.asarray(x, dtype=np.float64)
        out = np.where(v <= xs[0], v * ys[0] / xs[0],
                       np.where(v >= xs[-1], v * ys[-1] / xs[-1], np.interp(v, xs, ys)))
        return float(out) if out.ndim == 0 else out

    def apply(self, stored_ms):
        """A stored latency (or an array of them) as it reads here."""
        xs, ys = zip(*self.points)
        return self._through(stored_ms, xs, ys)

    def invert(self, here_ms):
        """A latency read here (or an array) as it would read on the stored machine."""
        xs, ys = zip(*self.points)
        return self._through(here_ms, ys, xs)


def correct_mapped(model, now: SpeedMap, then: SpeedMap, *, confidence: float = 0.95,
                   unstable_iqr: float = 0.10) -> tuple[LatencyStats, np.ndarray]:
    """A model's Measurement taken while the machine ran as ``now`` says (a SpeedMap from
    references measured in alternation with it), as it would read when it ran as ``then``
    (the map at re-calibration): each undisturbed sample x becomes then.apply(now.invert(x)).
    Disturbed samples are left out (all kept when fewer than MIN_KEPT remain). (corrected
    LatencyStats, the corrected samples in the order they were taken)."""
    x = np.asarray(model.samples_ms, dtype=np.float64)
    keep = ~model.disturbed if model.disturbed is not None else np.ones(x.size, bool)
    if keep.sum() < min(MIN_KEPT, x.size):
        keep = np.ones(x.size, bool)
    fixed = np.asarray(then.apply(now.invert(x[keep])), dtype=np.float64)
    stats = LatencyStats.from_samples(fixed, warmup=model.stats.warmup, confidence=confidence,
                                      unstable_iqr=unstable_iqr, environment=model.stats.environment,
                                      disturbed=0)
    return stats, fixed


# quiet_stats: at least QUIET_MIN (cost) undisturbed samples, else the fastest tenth of all
QUIET_FRACTION = 0.1


def quiet_stats(m) -> "LatencyStats | None":
    """The samples of a Measurement during which the process kept its CPU: those not disturbed
    when there are QUIET_MIN of them, else the fastest QUIET_FRACTION of all (a model longer
    than the scheduler's slice on a loaded machine is descheduled in nearly every run; waiting
    only adds time, so its fastest runs are the ones that waited least). None: not observed."""
    if m.disturbed is None or not len(m.samples_ms):
        return None
    x = np.asarray(m.samples_ms, dtype=np.float64)
    calm = x[~np.asarray(m.disturbed, dtype=bool)]
    if calm.size < QUIET_MIN:
        calm = np.sort(x)[:max(QUIET_MIN // 4, int(QUIET_FRACTION * x.size))]
    return LatencyStats.from_samples(calm, warmup=m.stats.warmup)


def steady_stats(m, ref) -> "LatencyStats | None":
    """The model's samples with the drift within its measurement taken out by rounds: each
    divided by the reference's median in the same rounds of slices (and the rounds either side)
    over the reference's median in the whole measurement (latency.drift.correct, disturbed samples
    left out). A slow phase that covers part of a model's seconds slows the reference in the same
    rounds; the ratio of two medians over the whole measurement misses that when the phase covers
    less than half of it. None: no rounds recorded."""
    if m.rounds is None or ref.rounds is None or not len(ref.samples_ms) or not len(m.samples_ms):
        return None
    # against a level of 1: each sample over its rounds' reference median; times the
    # reference's median over the measurement, back on its scale
    reading, _, fixed = correct(m, ref, 1.0, source="the reference in the same rounds")
    if not reading.reference_p50_ms > 0 or not len(fixed):
        return None
    return LatencyStats.from_samples(fixed * reading.reference_p50_ms, warmup=m.stats.warmup)
