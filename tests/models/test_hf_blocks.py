"""Block signatures of the hf- families, read from the transformers module tree: they cover the
model, chain, export and run, and profile like edgekd's own families (tiny configs)."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from edgekd.models import block_signatures, build_block, build_model, count_macs_params  # noqa: E402
from edgekd.models.hf_blocks import block_paths, submodule  # noqa: E402

TINY = {
    "hf-mobilenetv2": "hf-mobilenetv2:width=0.35,res=32",
    "hf-mobilevit": "hf-mobilevit:size=xxs,res=64",
    "hf-resnet": "hf-resnet:width=8,depths=1-2,res=32",
    "hf-resnet-bottleneck": "hf-resnet:width=16,depths=1-2,block=bottleneck,res=32",
    "hf-efficientnet": "hf-efficientnet:width=0.25,depth=0.25,res=32",
}


def _res(spec):
    return int(spec.rsplit("res=", 1)[1].split(",")[0])


@pytest.mark.parametrize("name", list(TINY))
def test_signatures_cover_the_model(name):
    spec = TINY[name]
    sigs = block_signatures(spec, 3, num_classes=7)
    model = build_model(spec, num_classes=7, in_channels=3)
    macs, params = count_macs_params(model, (3, _res(spec), _res(spec)))
    assert sum(s["macs"] for s in sigs) == macs
    assert sum(s["params"] for s in sigs) == params
    assert sigs[-1]["kind"] == "head" and sigs[-1]["classes"] == 7
    assert all(s["kind"] == "hf" for s in sigs[:-1]) and len(sigs) >= 4
    for a, b in zip(sigs, sigs[1:]):
        assert tuple(a["out_shape"]) == tuple(b["in_shape"])


@pytest.mark.parametrize("name", ["hf-mobilenetv2", "hf-resnet", "hf-efficientnet", "hf-mobilevit"])
def test_blocks_run_in_turn_give_the_model_output(name):
    """The model's own modules at the signatures' paths, run one after the other, compute the
    model's logits: the blocks are the model, cut where it runs one part after another."""
    spec = TINY[name]
    torch.manual_seed(0)
    model = build_model(spec, num_classes=5, in_channels=3).eval()
    x = torch.randn(2, 3, _res(spec), _res(spec))
    with torch.no_grad():
        want = model(x)
        y = x
        for sig in block_signatures(spec, 3, num_classes=5)[:-1]:
            for path in sig["path"]:
                y = submodule(model.features, path)(y)
        y = model.classifier(y.mean(dim=(-2, -1)))
    torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-5)


def test_residual_layers_are_not_cut_apart():
    """A ResNet layer adds its shortcut in place (+=): its convs do not chain on their own, so
    the layer stays one block."""
    model = build_model(TINY["hf-resnet"], num_classes=5, in_channels=3)
    paths = [p for p, _, _ in block_paths(model, (3, 32, 32))]
    assert paths == [("embedder",), ("encoder.stages.0.layers.0",), ("encoder.stages.1.layers.0",),
                     ("encoder.stages.1.layers.1",)]


def test_same_computation_same_key_across_models():
    a = block_signatures("hf-mobilenetv2:width=0.35,res=32", 3)
    b = block_signatures("hf-mobilenetv2:width=0.35,res=32,expansion=4", 3)
    c = block_signatures("hf-mobilenetv2:width=0.5,res=32", 3)
    assert a[0]["key"] == b[0]["key"]  # the stem does not depend on the expansion
    assert a[1]["key"] != b[1]["key"] != c[1]["key"]
    assert a[4]["key"] == a[5]["key"]  # layer.3 and layer.4: two identical layers of one model
    assert block_signatures("hf-mobilenetv2:width=0.35,res=32", 3) == a  # stable


@pytest.mark.parametrize("name", ["hf-mobilenetv2", "hf-efficientnet"])
def test_pieces_export_and_run(name, tmp_path):
    pytest.importorskip("onnxruntime")
    import numpy as np
    import onnxruntime as ort

    from edgekd.export import export_onnx
    from edgekd.latency.pieces import pair_module

    sigs = block_signatures(TINY[name], 3)
    for i, sig in enumerate([sigs[0], sigs[-2]]):
        module, shape = build_block(sig)
        x = torch.randn(1, *shape)
        path = export_onnx(module, x, tmp_path / f"b{i}.onnx")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, module(x).numpy(), rtol=1e-3, atol=1e-4)
    pair, shape = pair_module(sigs[1], sigs[2])
    with torch.no_grad():
        assert tuple(pair(torch.randn(1, *shape)).shape[1:]) == tuple(sigs[2]["out_shape"])


def test_bad_signature_is_one_line():
    from edgekd.errors import BadInputError

    sig = dict(block_signatures(TINY["hf-mobilenetv2"], 3)[1])
    del sig["spec"]
    with pytest.raises(BadInputError, match="lacks field 'spec'"):
        build_block(sig)
