"""verify scores a model only on data it fits: its class count, its input shape, two classes at
least, a positive --resolution; an OpenVINO IR's input size is read through the runtime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.accuracy import check_fits_data
from edgekd.errors import BadInputError
from edgekd.export import export_onnx
from edgekd.verify import verify_artifact


def _onnx(tmp_path, classes=10, res=8, name="m.onnx", dynamic=False):
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(4, classes)).eval()
    return export_onnx(m, torch.randn(1, 1, res, res), tmp_path / name, dynamic_batch=dynamic)


def _npz(tmp_path, classes, res=8, n=40):
    rng = np.random.default_rng(0)
    p = tmp_path / f"d{classes}.npz"
    y = np.arange(n) % classes
    np.savez(p, x_train=rng.random((n, 1, res, res), dtype=np.float32), y_train=y,
             x_val=rng.random((n, 1, res, res), dtype=np.float32), y_val=y)
    return f"npz:{p}"


def test_ten_class_model_does_not_pass_on_two_class_data(tmp_path):
    with pytest.raises(BadInputError, match="predicts 10 classes but data .* has 2"):
        verify_artifact(_onnx(tmp_path), "ort-cpu", _npz(tmp_path, 2), min_accuracy=0.0)


def test_one_class_data_is_refused(tmp_path):
    with pytest.raises(BadInputError, match="has 1 class"):
        verify_artifact(_onnx(tmp_path, classes=1), "ort-cpu", _npz(tmp_path, 1))


def test_resolution_zero_is_refused(tmp_path):
    with pytest.raises(BadInputError, match="--resolution 0 must be a positive"):
        verify_artifact(_onnx(tmp_path), "ort-cpu", "digits", resolution=0)


def test_check_fits_data_shapes():
    check_fits_data("m", "d", 10, sample_shape=(1, 8, 8), model_shape=(1, None, None), outputs=10)
    with pytest.raises(BadInputError, match=r"takes samples of shape \(3, 8, 8\).*channels"):
        check_fits_data("m", "d", 10, sample_shape=(1, 8, 8), model_shape=(3, 8, 8))
    with pytest.raises(BadInputError, match="--resolution"):
        check_fits_data("m", "d", 10, sample_shape=(1, 16, 16), model_shape=(1, 8, 8))


@pytest.mark.openvino
def test_ir_input_size_is_read_through_the_runtime(tmp_path):
    """A dynamic batch ('?') in an IR made elsewhere (edgekd's own IRs take the target's batch):
    the size is the input's, not the first conv kernel's."""
    import openvino as ov

    from edgekd.verify import _artifact_resolution, ir_input_shape

    onnx_path = _onnx(tmp_path, dynamic=True)
    xml = tmp_path / "ir" / "model.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml))
    assert ir_input_shape(xml) == (None, 1, 8, 8)
    assert _artifact_resolution(xml) == 8


@pytest.mark.openvino
def test_train_then_quantize_openvino_int8_then_verify(tmp_path):
    """`train -> quantize openvino-cpu-int8 -> verify` through the CLI, in this process."""
    from edgekd.cli.main import main

    out, q = tmp_path / "train", tmp_path / "q"
    assert main(["train", "--model", "convnet:width=8,depth=2,res=8", "--data", "digits", "--resolution", "8",
                 "--epochs", "1", "--out", str(out)]) == 0
    assert main(["quantize", str(out / "model.onnx"), "-t", "openvino-cpu-int8", "--data", "digits",
                 "--calib-size", "32", "--rounds", "1", "--force", "--out", str(q), "--json"]) == 0
    xml = next(q.glob("*.xml"))
    assert main(["verify", str(xml), "-t", "openvino-cpu-int8", "--data", "digits", "--min-accuracy", "0",
                 "--json"]) == 0


def test_quantize_refuses_a_ten_class_model_on_two_class_data(tmp_path):
    from edgekd.quantize import quantize_ref
    from edgekd.targets import load_target

    with pytest.raises(BadInputError, match="predicts 10 classes"):
        quantize_ref(_onnx(tmp_path), load_target("ort-cpu-int8"), _npz(tmp_path, 2), tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_quantize_that_is_refused_leaves_no_empty_out(tmp_path, monkeypatch):
    import edgekd.quantize as q
    from edgekd.errors import VerdictError
    from edgekd.targets import load_target

    def refuse(onnx_path, spec, out_dir, *a, **kw):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        raise VerdictError("INT8 is not faster; the INT8 model was not kept")

    monkeypatch.setattr(q, "quantize_model", refuse)
    with pytest.raises(VerdictError):
        q.quantize_ref(_onnx(tmp_path), load_target("ort-cpu-int8"), _npz(tmp_path, 10), tmp_path / "q")
    assert not (tmp_path / "q").exists()
