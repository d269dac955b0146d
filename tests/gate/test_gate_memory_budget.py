"""gate --max-size-kb / --max-peak-mb: a model over a memory budget fails with the numbers,
whatever its latency; the budgets are refused where nothing is measured."""
import pytest
import torch

from edgekd.errors import BadInputError
from edgekd.export import export_onnx
from edgekd.gate.check import check_models


def _onnx(tmp_path):
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    return str(export_onnx(m, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx"))


def _gate(model, **kw):
    return check_models([model], target_name="ort-cpu", budget_ms=1000.0, max_rounds=1, min_iters=10,
                        record_history=False, **kw)


def test_over_the_size_budget_fails_with_the_numbers_and_within_it_passes(tmp_path):
    model = _onnx(tmp_path)
    [r] = _gate(model, max_size_kb=0.1)
    assert r.status == "FAIL" and "over the memory budget" in r.message and "vs max 0.1 KB" in r.message
    assert r.memory["size_bytes"] > 100 and r.to_dict()["memory"] == r.memory
    [ok] = _gate(model, max_size_kb=10_000)
    assert ok.status == "PASS" and ok.error is None


def test_memory_budgets_are_refused_with_predict_only_and_when_not_positive(tmp_path):
    model = _onnx(tmp_path)
    with pytest.raises(BadInputError, match="--predict-only measures nothing"):
        _gate(model, max_peak_mb=10, predict_only=True, profile_path=str(tmp_path / "p.json"))
    with pytest.raises(BadInputError, match="--max-size-kb -1"):
        _gate(model, max_size_kb=-1)
