"""Profiling and pruning on a runtime that builds from torch (ExecuTorch): the pieces of a profile
are opened from the modules themselves, not from ONNX files that runtime refuses."""
import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.latency import pieces
from edgekd.targets import MeasureSettings, load_target

needs_et = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                              reason="executorch is not installed (pip install 'edgekd[executorch]')")
QUICK = MeasureSettings(warmup_s=0.02, warmup_iters=3, min_iters=20, min_time_s=0.02)


def _block():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval()


def test_replicate_module_runs_each_copy_on_the_same_input_with_its_own_weights():
    block = _block()
    rep = pieces.replicate_module(block, 3)
    x = torch.randn(1, 3, 8, 8)
    outs = rep(x)
    assert len(outs) == 3 and torch.equal(outs[0], block(x))
    w = [part[0].weight for part in rep.parts]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    assert torch.allclose(w[0], w[1], rtol=1e-2)  # perturbed, not re-drawn


def test_a_piece_is_an_onnx_file_for_onnx_runtimes_and_the_module_for_torch_ones(tmp_path):
    block = _block()
    onnx_piece = pieces._piece(block, (3, 8, 8), load_target("ort-cpu"), tmp_path, "block")
    assert onnx_piece.suffix == ".onnx" and onnx_piece.exists()
    if importlib.util.find_spec("executorch") is not None:
        assert pieces._piece(block, (3, 8, 8), load_target("executorch-xnnpack"), tmp_path, "b2") is block


@needs_et
def test_a_block_is_measured_hot_and_cold_on_executorch(tmp_path):
    # an nn.Sequential with batch norm: its parameters are named '0.weight', which ExecuTorch's
    # batch-norm fusion could not find again before the module was put under a named attribute
    from edgekd.latency.measure import close_session

    target = load_target("executorch-xnnpack")
    probe = pieces.open_reference(_block(), (3, 8, 8), target, tmp_path / "probe")  # held, as the profiler does
    try:
        hot, over, cold, env, seen = pieces.measure_block(_block(), (3, 8, 8), target, QUICK, tmp_path / "b",
                                                          copies=3, probe=probe)
    finally:
        close_session(probe.session)
    assert hot.stats.n >= QUICK.min_iters and np.isfinite(hot.stats.p50) and hot.stats.p50 > 0
    assert over.p50 > 0 and cold is not None and cold.p50 > 0 and seen is not None and seen.p50 > 0
    assert env["runtime"] == "executorch"


@needs_et
def test_prune_measures_a_model_on_executorch():
    from edgekd.prune.measure import measure_model

    stats = measure_model(_block(), (3, 8, 8), "executorch-xnnpack", QUICK)
    assert stats.n >= QUICK.min_iters and stats.p50 > 0
