"""verify's memory budgets: the artifact's size and the peak memory of one inference, each a
check with its numbers; over a budget fails (exit 1 from the CLI)."""
import sys

import numpy as np
import pytest
import torch

from edgekd.errors import BadInputError
from edgekd.export import export_onnx
from edgekd.verify import verify_artifact


def _onnx(tmp_path):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    return export_onnx(m, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx")


def _npz(tmp_path, n=20):
    rng = np.random.default_rng(0)
    p = tmp_path / "d.npz"
    y = np.arange(n) % 10
    np.savez(p, x_train=rng.random((n, 1, 8, 8), dtype=np.float32), y_train=y,
             x_val=rng.random((n, 1, 8, 8), dtype=np.float32), y_val=y)
    return f"npz:{p}"


def _settings():
    from edgekd.targets import MeasureSettings

    return MeasureSettings(warmup_s=0.0, warmup_iters=2, min_iters=10, min_time_s=0.0)


def test_size_budget_fails_with_both_numbers_and_passes_above(tmp_path):
    onnx, data = _onnx(tmp_path), _npz(tmp_path)
    size_kb = onnx.stat().st_size / 1024
    rep = verify_artifact(onnx, "ort-cpu", data, max_size_kb=size_kb * 0.5, settings=_settings())
    c = next(c for c in rep.checks if c.name == "size")
    assert rep.verdict == "fail" and c.verdict == "fail" and c.value == pytest.approx(size_kb)
    assert f"{size_kb:.1f} KB (onnx) vs max" in c.detail
    ok = verify_artifact(onnx, "ort-cpu", data, max_size_kb=size_kb * 2, settings=_settings())
    assert ok.verdict == "pass" and [c.name for c in ok.checks] == ["size"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory reads Linux /proc")
def test_peak_budget_is_a_check_with_how_it_was_measured(tmp_path):
    rep = verify_artifact(_onnx(tmp_path), "ort-cpu", _npz(tmp_path), max_peak_mb=1e-6, settings=_settings())
    c = next(c for c in rep.checks if c.name == "peak_memory")
    assert c.verdict == "fail" and c.value > 1e-6 and "rss" in c.detail


def test_a_budget_that_is_not_positive_is_refused(tmp_path):
    with pytest.raises(BadInputError, match="--max-peak-mb 0"):
        verify_artifact(_onnx(tmp_path), "ort-cpu", _npz(tmp_path), max_peak_mb=0)
