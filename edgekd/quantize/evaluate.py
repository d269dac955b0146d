"""Did quantizing pay? Accuracy and latency of the INT8 artifact against the fp32 model, both run
through the target's runtime, the fp32 one on the target's fp32 twin (ort-cpu for ort-cpu-int8).

Latency is measured with the one protocol (latency.measure) in interleaved rounds (fp32, int8,
then int8, fp32, ...) so machine drift hits both alike; each side's samples are pooled and
summarised with LatencyStats.from_samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..accuracy import top1
from ..latency.measure import environment_fingerprint, make_inputs, measure_session
from ..latency.stats import LatencyStats
from ..targets import MeasureSettings, TargetSpec, fp32_twin


@dataclass(frozen=True)
class SideResult:
    """One model (fp32 or int8) on its target."""

    target: str
    accuracy: float | None
    stats: LatencyStats | None
    size_bytes: int
    params: int | None = None

    @property
    def p50(self) -> float:
        return self.stats.p50 if self.stats else math.nan

    @property
    def p90(self) -> float:
        return self.stats.p90 if self.stats else math.nan

    def to_dict(self) -> dict:
        return {"target": self.target, "accuracy": self.accuracy, "p50_ms": self.p50,
                "p90_ms": self.p90, "size_bytes": self.size_bytes, "params": self.params,
                "latency": self.stats.to_dict() if self.stats else None}


@dataclass
class QuantReport:
    """fp32 vs int8 on one target: accuracy, p50, p90, size, speed-up, and whether it was kept."""

    target: str
    method: str
    calib_samples: int
    fp32: SideResult
    int8: SideResult
    kept: bool = False
    forced: bool = False
    artifact: Any = None  # backends.base.Artifact once kept
    val_samples: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def speedup_p50(self) -> float:
        return _ratio(self.fp32.p50, self.int8.p50)

    @property
    def speedup_p90(self) -> float:
        return _ratio(self.fp32.p90, self.int8.p90)

    @property
    def p50_ratio(self) -> float:
        """int8 p50 / fp32 p50: below 1.0 means INT8 is faster."""
        return _ratio(self.int8.p50, self.fp32.p50)

    @property
    def accuracy_drop(self) -> float | None:
        if self.fp32.accuracy is None or self.int8.accuracy is None:
            return None
        return self.fp32.accuracy - self.int8.accuracy

    @property
    def size_ratio(self) -> float:
        return _ratio(self.int8.size_bytes, self.fp32.size_bytes)

    def to_dict(self) -> dict:
        return {
            "target": self.target, "method": self.method, "calib_samples": self.calib_samples,
            "val_samples": self.val_samples, "fp32": self.fp32.to_dict(), "int8": self.int8.to_dict(),
            "speedup_p50": self.speedup_p50, "speedup_p90": self.speedup_p90,
            "p50_ratio": self.p50_ratio, "accuracy_drop": self.accuracy_drop,
            "size_ratio": self.size_ratio, "kept": self.kept, "forced": self.forced,
            "artifact": self.artifact.to_dict() if self.artifact is not None else None,
            "notes": list(self.notes),
        }


def _ratio(a: float, b: float) -> float:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return float(a) / float(b)


def load_session(artifact, target: TargetSpec):
    """A runnable Session for an artifact, through the target's backend."""
    from ..backends import require_backend

    return require_backend(target).load(artifact, target)


def build_fp32(onnx_path: Path, twin: TargetSpec, out_dir: Path):
    """The fp32 artifact for the twin target (OpenVINO: the IR; ONNX Runtime: the ONNX file)."""
    from ..backends import require_backend

    return require_backend(twin).build(Path(onnx_path), twin, Path(out_dir))


def _static_batch(session, default: int) -> int:
    shapes = list(getattr(session, "input_shapes", ()) or [])
    if shapes and shapes[0] and isinstance(shapes[0][0], int) and shapes[0][0] > 0:
        return int(shapes[0][0])
    return default


def top1_accuracy(session, x: np.ndarray, y: np.ndarray, *, batch: int = 1) -> float:
    """Top-1 accuracy of a classifier session on (x, y); a fixed-batch model's last partial
    batch is run padded."""
    b = _static_batch(session, batch)
    return top1(lambda xb: np.asarray(session.run(xb)[0]), x, y, batch=b, fixed_batch=True)


def measure_pair(sessions: Mapping[str, Any], inputs: Mapping[str, Any], settings: MeasureSettings,
                 *, rounds: int = 3, environments: Mapping[str, Mapping] | None = None
                 ) -> dict[str, LatencyStats]:
    """Interleaved rounds over the sessions; pooled samples per session -> LatencyStats.

    Whole rounds (fp32, int8, then int8, fp32, ...), not the few-ms slices of
    latency.measure.measure_interleaved that the profiler uses for blocks: models of this size
    (megabytes of weights each) evict each other from the caches at every switch. Measured with
    tools/bench_quant.py (four sessions, mobilenetv2 width 1 at 32 px): in 5 ms slices three of
    them came out unstable (IQR > 10% of the median) and the p90s rose by up to 16%; in 25 ms slices two
    stayed unstable; in rounds, none."""
    names = list(sessions)
    pooled: dict[str, list[np.ndarray]] = {n: [] for n in names}
    warm: dict[str, int] = {n: 0 for n in names}
    for r in range(max(1, rounds)):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            m = measure_session(sessions[n], inputs[n], settings,
                                environment=(environments or {}).get(n))
            pooled[n].append(np.asarray(m.samples_ms, dtype=np.float64))
            warm[n] += int(m.warmup_iters)
    return {n: LatencyStats.from_samples(np.concatenate(pooled[n]), warmup=warm[n],
                                         confidence=settings.confidence,
                                         unstable_iqr=settings.unstable_iqr,
                                         environment=(environments or {}).get(n))
            for n in names}


def files_size(paths: Sequence[Path]) -> int:
    return int(sum(Path(p).stat().st_size for p in paths if Path(p).is_file()))


_FLOATS = (1, 10, 11, 16)  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def onnx_param_count(onnx_path: "str | Path") -> int | None:
    """Number of float weights in an fp32 ONNX model (quantization keeps the count): its
    initializers and the weights it builds in-graph (Constant nodes' tensors, ConstantOfShape
    from a constant shape), in subgraphs too, each name once; an initializer the graph also
    lists as an input (IR < 4 style) is still a weight, counted once."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    try:
        m = onnx.load(str(onnx_path), load_external_data=False)
    except (OSError, DecodeError, ValueError):
        return None
    seen: dict[str, int] = {}
    graphs = [m.graph]
    while graphs:
        g = graphs.pop()
        tensors = {t.name: t for t in g.initializer}
        for n in g.node:
            for a in n.attribute:
                graphs += ([a.g] if a.HasField("g") else []) + list(a.graphs)
            if n.op_type == "Constant" and n.output and n.attribute:
                a = n.attribute[0]
                if a.name == "value":
                    tensors[n.output[0]] = a.t
                elif a.name in ("value_float", "value_floats"):
                    seen.setdefault(n.output[0], max(1, len(a.floats)))
        for name, t in tensors.items():
            if t.data_type in _FLOATS:
                seen.setdefault(name, int(np.prod(t.dims)) if len(t.dims) else 1)
        for n in g.node:  # ConstantOfShape: float unless its value says otherwise
            shape = tensors.get(n.input[0]) if n.op_type == "ConstantOfShape" and n.input else None
            value = next((a.t for a in n.attribute if a.name == "value"), None)
            if shape is not None and shape.data_location != 1 and (
                    value is None or value.data_type in _FLOATS):
                seen.setdefault(n.output[0], int(np.prod(numpy_helper.to_array(shape))))
    return int(sum(seen.values()))


def compare(fp32_onnx: "str | Path", artifact, target: TargetSpec, x_val: np.ndarray,
            y_val: np.ndarray, work_dir: "str | Path", *, settings: MeasureSettings | None = None,
            rounds: int = 3) -> tuple[SideResult, SideResult]:
    """Accuracy and latency of the fp32 model (on the fp32 twin) and the int8 artifact."""
    twin = fp32_twin(target)
    fp32_art = build_fp32(Path(fp32_onnx), twin, Path(work_dir))
    settings = settings or target.measure
    sessions = {"fp32": load_session(fp32_art, twin), "int8": load_session(artifact, target)}
    specs = {"fp32": twin, "int8": target}
    try:
        acc = {k: top1_accuracy(s, x_val, y_val, batch=specs[k].batch) for k, s in sessions.items()}
        shape = (specs["int8"].batch, *tuple(x_val.shape[1:]))
        inputs = {k: make_inputs(s, shape) for k, s in sessions.items()}
        envs = {k: environment_fingerprint(specs[k], s, shape) for k, s in sessions.items()}
        stats = measure_pair(sessions, inputs, settings, rounds=rounds, environments=envs)
    finally:
        for s in sessions.values():
            close = getattr(s, "close", None)
            if close:
                close()
    params = onnx_param_count(fp32_onnx)
    fp32 = SideResult(twin.name, acc["fp32"], stats["fp32"], files_size(_paths(fp32_art)), params)
    int8 = SideResult(target.name, acc["int8"], stats["int8"], files_size(_paths(artifact)), params)
    return fp32, int8


def _paths(artifact) -> Sequence[Path]:
    return tuple(getattr(artifact, "paths", None) or (artifact.path,))
