"""OpenVINO models run at the target's batch: a dynamic batch dimension is fixed to it when edgekd
builds, quantizes or loads an OpenVINO model. OpenVINO 2026.4's CPU plugin computes some INT8
models with a dynamic batch differently at batch 1 than the same IR with a static batch of 1
(a trained digits student lost 17.5 points of top-1 that way); the checks below hold whatever
the plugin does, and the first fails on a plugin that does so when the batch is left dynamic."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.openvino

SPEC = "mobilenetv2:width=0.5,res=16"


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory):
    """A small MobileNetV2 with non-trivial BatchNorm statistics, exported with a dynamic batch."""
    import torch

    from edgekd.export import export_onnx
    from edgekd.models import build_model

    torch.manual_seed(0)
    m = build_model(SPEC, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("ovbatch") / "dyn.onnx"
    return export_onnx(m, torch.zeros(1, 1, 16, 16), path, dynamic_batch=True)


def _x(n=48):
    return np.random.default_rng(0).standard_normal((n, 1, 16, 16)).astype(np.float32)


def _static_outputs(xml, x):
    """The IR reshaped to a static batch of 1 by plain OpenVINO, one sample at a time."""
    import openvino as ov

    from edgekd.backends.openvino import compile_properties
    from edgekd.targets import load_target

    core = ov.Core()
    model = core.read_model(str(xml))
    model.reshape([1, 1, 16, 16])
    cm = core.compile_model(model, "CPU", compile_properties(load_target("openvino-cpu-int8")))
    return np.concatenate([cm(x[i:i + 1])[cm.outputs[0]] for i in range(len(x))])


def test_int8_ir_has_the_target_batch_and_runs_as_its_static_twin(dynamic_onnx, tmp_path):
    import openvino as ov

    from edgekd.backends import get_backend
    from edgekd.targets import load_target

    target = load_target("openvino-cpu-int8")
    x = _x()
    art = get_backend("openvino").quantize(dynamic_onnx, target, tmp_path, [x[:32], x[32:]])
    shape = ov.Core().read_model(str(art.path)).inputs[0].get_partial_shape()
    assert shape.is_static and list(shape.to_shape()) == [1, 1, 16, 16]
    session = get_backend("openvino").load(art, target)
    got = np.concatenate([np.asarray(session.run(x[i:i + 1])[0]) for i in range(len(x))])
    np.testing.assert_array_equal(got, _static_outputs(art.path, x))


def test_a_dynamic_ir_from_elsewhere_is_loaded_at_the_target_batch(dynamic_onnx, tmp_path):
    import openvino as ov

    from edgekd.backends import get_backend
    from edgekd.backends.base import Artifact, ArtifactFormat
    from edgekd.backends.openvino_quant import quantize_openvino
    from edgekd.export import run_batched
    from edgekd.targets import load_target

    x = _x()
    xml = quantize_openvino(dynamic_onnx, tmp_path / "q.xml", [x[:32], x[32:]])  # no batch: stays dynamic
    assert ov.Core().read_model(str(xml)).inputs[0].get_partial_shape()[0].is_dynamic
    target = load_target("openvino-cpu-int8")
    session = get_backend("openvino").load(
        Artifact.from_file(xml, ArtifactFormat.OPENVINO_IR, target=target.name, precision="int8",
                           extra_paths=(xml.with_suffix(".bin"),)), target)
    assert list(session.input_shapes[0]) == [1, 1, 16, 16]
    np.testing.assert_array_equal(run_batched(session, x), _static_outputs(xml, x))


def test_fp32_build_fixes_the_batch(dynamic_onnx, tmp_path):
    import openvino as ov

    from edgekd.backends import get_backend
    from edgekd.targets import load_target

    art = get_backend("openvino").build(dynamic_onnx, load_target("openvino-cpu"), tmp_path)
    assert list(ov.Core().read_model(str(art.path)).inputs[0].get_partial_shape().to_shape()) == [1, 1, 16, 16]
