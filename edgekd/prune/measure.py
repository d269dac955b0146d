"""What the pruning loop reads off a candidate: top-1 accuracy, BatchNorm statistics
re-estimated after pruning, latency on a target (a short protocol, or the target's own) and
cost (MACs, params)."""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

from ..models.cost import cost  # noqa: F401  (re-exported: prune's cost is the models' one)
from ..verdict import METRICS


def evaluate(model, dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (samples labelled -1 are skipped)."""
    import torch

    from ..accuracy import count_correct, ratio
    from ..distill.cache import take

    model.eval()
    correct = total = 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(dataset)))
            x, y = take(dataset, idx)
            c, k = count_correct(model(x), y)
            correct += c
            total += k
    return ratio(correct, total)


def recalibrate_bn(model, dataset, samples: int = 512, batch_size: int = 128):
    """Re-estimate every BatchNorm's running statistics on ``samples`` samples of ``dataset``
    (a fixed random subset; labels unused, no gradient) and return ``model`` in eval mode.
    Pruning changes what each BN sees, so the statistics learnt before are stale; without this,
    a pruned deep net can fall to chance before any fine-tuning (adaptive BN, as in EagleEye,
    Li et al. 2020)."""
    import torch
    from torch import nn

    from ..distill.cache import take

    n = min(int(samples), len(dataset))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    if n < 2 or not bns:
        return model.eval()
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                x, _ = take(dataset, order[start:start + batch_size])
                if len(x) > 1:
                    model(x)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.eval()
    return model


def quick_settings():
    """A short measurement protocol for the pruning loop (the final check uses the target's)."""
    from ..targets import MeasureSettings

    return MeasureSettings(warmup_s=0.2, warmup_iters=10, min_iters=100, min_time_s=0.3)


def measure_model(model, sample_shape, target, settings=None):
    """LatencyStats of ``model`` on ``target``: export to ONNX in a temp dir, then time it as
    ``edgekd bench`` does (on the device itself for a target with ``remote:``)."""
    import torch

    from ..backends import require_backend
    from ..deploy import open_module
    from ..export import export_onnx
    from ..latency.bench import bench
    from ..latency.measure import measure_opened
    from ..targets import load_target

    target = load_target(target)
    with tempfile.TemporaryDirectory(prefix="edgekd-prune-") as tmp:
        if require_backend(target).builds_from == "torch" and target.remote is None:
            # a runtime that builds from torch (ExecuTorch) takes the module, not an ONNX file
            opened = open_module(copy.deepcopy(model), target, Path(tmp), tuple(sample_shape))
            return measure_opened(opened, target, settings or quick_settings())[0].stats
        sample = torch.zeros(1, *tuple(sample_shape))
        path = export_onnx(copy.deepcopy(model).eval(), sample, Path(tmp) / "model.onnx",
                           opset=17)
        return bench(path, target, work_dir=Path(tmp), settings=settings or quick_settings(),
                     sample_shape=tuple(sample_shape)).stats


def lat_dict(stats) -> dict:
    """The budget metrics (p50, p90, p99, mean) of a LatencyStats as plain floats."""
    return {m: float(getattr(stats, m)) for m in METRICS}
