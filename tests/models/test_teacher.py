"""Model checkpoints and every kind of teacher."""
from __future__ import annotations

import textwrap
import types

import pytest
import torch

from edgekd.errors import BadInputError
from edgekd.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from edgekd.models.teacher import check_teacher_matches, load_teacher

_NETS = textwrap.dedent('''
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self, num_classes=10, in_channels=1):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.fc = nn.Linear(16, num_classes)
        def forward(self, x):
            return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    class Flat(nn.Module):
        """Needs exactly 1x16x16 inputs."""
        def __init__(self, num_classes=10):
            super().__init__()
            self.fc = nn.Linear(256, num_classes)
        def forward(self, x):
            return self.fc(x.reshape(x.shape[0], 256))

    def tiny(num_classes=10, in_channels=1):
        torch.manual_seed(0)
        return Tiny(num_classes, in_channels)

    def flat(num_classes=10):
        torch.manual_seed(0)
        return Flat(num_classes)
''')


@pytest.fixture
def nets(tmp_path, monkeypatch):
    (tmp_path / "edgekd_test_nets.py").write_text(_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import edgekd_test_nets

    return importlib.reload(edgekd_test_nets)


def _trained(nets, num_classes=10):
    torch.manual_seed(123)
    m = nets.Tiny(num_classes, 1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


X = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(0))


def _bundle(num_classes=10, shape=(1, 16, 16)):
    val = [(torch.randn(shape), torch.tensor(i % num_classes)) for i in range(4)]
    return types.SimpleNamespace(input_shape=shape, num_classes=num_classes, val=val)


# --------------------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip_py_spec(nets, tmp_path):
    m = _trained(nets)
    p = save_checkpoint(tmp_path / "m.pt", m, spec="py:edgekd_test_nets:tiny", num_classes=10,
                        in_channels=1, input_shape=(1, 16, 16), extra={"val_acc": 0.5})
    assert not list(tmp_path.glob(".m.pt.*"))  # no temp file left behind
    model, meta = load_checkpoint(p)
    assert torch.equal(model(X), m(X))
    assert meta["format"] == "edgekd.model/v1" and meta["spec"] == "py:edgekd_test_nets:tiny"
    assert meta["input_shape"] == (1, 16, 16) and meta["extra"] == {"val_acc": 0.5}
    assert "state_dict" not in meta and not model.training


def test_checkpoint_round_trip_family_spec(tmp_path):
    from edgekd.models import build_model

    spec = "resnet:width=16,res=16"
    torch.manual_seed(0)
    m = build_model(spec, num_classes=10, in_channels=1).eval()
    save_checkpoint(tmp_path / "r.pt", m, spec=spec, num_classes=10, in_channels=1,
                    input_shape=(1, 16, 16))
    model, _ = load_checkpoint(tmp_path / "r.pt")
    assert torch.equal(model(X), m(X))


def test_checkpoint_rejects_other_files(nets, tmp_path):
    m = _trained(nets)
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(BadInputError, match="holds a state_dict, not an edgekd checkpoint"):
        load_checkpoint(tmp_path / "sd.pt")
    torch.save(m, tmp_path / "whole.pt")
    with pytest.raises(BadInputError, match="pickled Python object"):
        read_checkpoint(tmp_path / "whole.pt")
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(BadInputError, match="not an edgekd checkpoint"):
        load_checkpoint(tmp_path / "t.txt")
    torch.jit.save(torch.jit.trace(m, X), str(tmp_path / "m.ts"))
    with pytest.raises(BadInputError, match="TorchScript"):
        load_checkpoint(tmp_path / "m.ts")
    with pytest.raises(BadInputError, match="extra"):
        save_checkpoint(tmp_path / "x.pt", m, spec="py:edgekd_test_nets:tiny", num_classes=10,
                        in_channels=1, input_shape=(1, 16, 16), extra={"bad": object()})


# --------------------------------------------------------------------------- teachers

def test_py_teacher_with_weights(nets, tmp_path):
    m = _trained(nets)
    torch.save(m.state_dict(), tmp_path / "w.pt")
    t = load_teacher("py:edgekd_test_nets:tiny", weights=str(tmp_path / "w.pt"))
    assert t.kind == "torch" and t.supports_features and t.module is not None
    assert t.num_classes == 10
    out = t(X)
    assert out.dtype == torch.float32 and not out.requires_grad
    assert torch.allclose(out, m(X))
    assert load_teacher("py:edgekd_test_nets:tiny", weights=str(tmp_path / "w.pt")).fingerprint \
        == t.fingerprint
    untrained = load_teacher("py:edgekd_test_nets:tiny")
    assert untrained.fingerprint != t.fingerprint
    other = nets.Tiny(3, 1)
    torch.save(other.state_dict(), tmp_path / "w3.pt")
    with pytest.raises(BadInputError, match="do not fit the model"):
        load_teacher("py:edgekd_test_nets:tiny", weights=str(tmp_path / "w3.pt"), num_classes=10)


def test_checkpoint_and_family_teachers(nets, tmp_path):
    m = _trained(nets)
    save_checkpoint(tmp_path / "c.pt", m, spec="py:edgekd_test_nets:tiny", num_classes=10,
                    in_channels=1, input_shape=(1, 16, 16))
    t = load_teacher(str(tmp_path / "c.pt"))
    assert t.kind == "torch" and t.num_classes == 10 and t.input_shape == (1, 16, 16)
    assert torch.allclose(t(X), m(X))

    from edgekd.models import build_model

    spec = "resnet:width=16,res=16"
    torch.manual_seed(1)
    r = build_model(spec, num_classes=10, in_channels=1).eval()
    torch.save(r.state_dict(), tmp_path / "r.pt")
    f = load_teacher(spec, weights=str(tmp_path / "r.pt"))  # classes/channels read off weights
    assert f.kind == "torch" and torch.allclose(f(X), r(X))
    with pytest.raises(BadInputError, match="without weights"):
        load_teacher(spec)
    with pytest.raises(BadInputError, match="bare state_dict"):
        load_teacher(str(tmp_path / "r.pt"))
    with pytest.raises(BadInputError, match="does not exist"):
        load_teacher(str(tmp_path / "missing.pt"))


def test_torchscript_teacher_detected_by_content(nets, tmp_path):
    m = _trained(nets)
    path = tmp_path / "scripted.pt"  # a .pt name: the kind comes from the file, not the name
    torch.jit.save(torch.jit.trace(m, X), str(path))
    with pytest.raises(BadInputError, match="TorchScript: running it runs the code"):
        load_teacher(str(path))  # it holds code: only with the opt-in
    t = load_teacher(str(path), trust_pickle=True)
    assert t.kind == "torchscript" and not t.supports_features
    assert torch.allclose(t(X), m(X))


def test_export_teacher_with_fixed_batch(nets, tmp_path):
    m = _trained(nets)
    ep = torch.export.export(m, (X[:2],))  # static batch of 2
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    t = load_teacher(str(tmp_path / "m.pt2"), trust_pickle=True)  # it holds code: the opt-in
    assert t.kind == "export" and t.fixed_batch == 2 and t.input_shape == (1, 16, 16)
    out = t(X)  # batch of 5: run as 2+2+1 (padded)
    assert out.shape == (5, 10) and torch.allclose(out, m(X), atol=1e-6)


def test_onnx_teacher_fixed_batch_of_one(nets, tmp_path):
    m = _trained(nets)
    path = tmp_path / "m.onnx"
    torch.onnx.export(m, (X[:1],), str(path), input_names=["x"], output_names=["logits"],
                      dynamo=False)
    t = load_teacher(str(path))
    assert t.kind == "onnx" and t.module is None and not t.supports_features
    assert t.num_classes == 10 and t.fixed_batch == 1 and t.input_shape == (1, 16, 16)
    out = t(X)
    assert out.shape == (5, 10) and out.dtype == torch.float32
    assert torch.allclose(out, m(X), atol=1e-5)
    dyn = tmp_path / "dyn.onnx"
    torch.onnx.export(m, (X[:1],), str(dyn), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    assert torch.allclose(load_teacher(str(dyn))(X), m(X), atol=1e-5)
    (tmp_path / "junk.onnx").write_bytes(b"garbage")
    with pytest.raises(BadInputError, match="not a model edgekd can load"):
        load_teacher(str(tmp_path / "junk.onnx"))


def test_pickled_module_refused_unless_trusted(nets, tmp_path):
    m = _trained(nets)
    torch.save(m, tmp_path / "whole.pt")
    with pytest.raises(BadInputError, match="--trust-pickle") as err:
        load_teacher(str(tmp_path / "whole.pt"))
    assert "arbitrary code" in str(err.value)
    t = load_teacher(str(tmp_path / "whole.pt"), trust_pickle=True)
    assert t.kind == "torch" and torch.allclose(t(X), m(X))


def test_check_teacher_matches(nets, tmp_path):
    m = _trained(nets)
    torch.save(m.state_dict(), tmp_path / "w.pt")
    t = load_teacher("py:edgekd_test_nets:tiny", weights=str(tmp_path / "w.pt"))
    check_teacher_matches(t, _bundle(10))
    with pytest.raises(BadInputError, match="predicts 10 classes but the data has 4"):
        check_teacher_matches(t, _bundle(4))
    t.num_classes = None  # also caught from the logits when the teacher doesn't declare it
    with pytest.raises(BadInputError, match="predicts 10 classes but the data has 4"):
        check_teacher_matches(t, _bundle(4))
    flat = load_teacher("py:edgekd_test_nets:flat")
    with pytest.raises(BadInputError, match=r"data sample of shape \(1, 8, 8\)"):
        check_teacher_matches(flat, _bundle(10, (1, 8, 8)))
    torch.onnx.export(m, (X[:1],), str(tmp_path / "m.onnx"), dynamo=False)
    onnx_t = load_teacher(str(tmp_path / "m.onnx"))
    with pytest.raises(BadInputError, match=r"shape \(1, 8, 8\).*expects \(1, 16, 16\)"):
        check_teacher_matches(onnx_t, _bundle(10, (1, 8, 8)))
    with pytest.raises(BadInputError, match="3 channel"):
        check_teacher_matches(onnx_t, _bundle(10, (3, 16, 16)))


# --------------------------------------------------------------------------- foreign ONNX teachers

def _foreign_teacher(path, head, *, ir=8, opset=13, classes=6, batch="N", softmax=False):
    """Conv-ReLU-GAP then ``head``: 'gemm' -> [N, C], 'conv' -> [N, C, 1, 1] (no flatten),
    'n1c' -> [N, 1, C]; ``softmax``: 'node' ends in a Softmax (before any reshape), 'math'
    computes the same probabilities with Exp/ReduceSum/Div. IR < 4 lists the initializers as
    inputs."""
    import numpy as np
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    w = {"w1": rng.standard_normal((4, 3, 3, 3)), "b1": rng.standard_normal(4) * 0.1,
         "w2": rng.standard_normal((classes, 4)) * 2, "b2": rng.standard_normal(classes)}
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c"], ["r"]), h.make_node("GlobalAveragePool", ["r"], ["p"])]
    if head == "conv":
        w["w2"] = w["w2"].reshape(classes, 4, 1, 1)
        nodes.append(h.make_node("Conv", ["p", "w2", "b2"], ["z"]))
        axis, shape = 1, [batch, classes, 1, 1]
    else:
        nodes += [h.make_node("Flatten", ["p"], ["f"]),
                  h.make_node("Gemm", ["f", "w2", "b2"], ["z"], transB=1)]
        axis, shape = 1, [batch, classes]
    if softmax == "node":
        nodes.append(h.make_node("Softmax", ["z"], ["s"], axis=axis))
    elif softmax == "math":
        nodes += [h.make_node("Exp", ["z"], ["e"]),
                  h.make_node("ReduceSum", ["e", "ax"], ["t"], keepdims=1),
                  h.make_node("Div", ["e", "t"], ["s"])]
        w["ax"] = np.array([axis], np.int64)
    last = "s" if softmax else "z"
    if head == "n1c":
        w["shape"] = np.array([-1, 1, classes], np.int64)
        nodes.append(h.make_node("Reshape", [last, "shape"], ["y"]))
        shape = [batch, 1, classes]
    else:
        nodes.append(h.make_node("Identity", [last], ["y"]))
    inits = [nh.from_array(v if v.dtype == np.int64 else v.astype(np.float32), k)
             for k, v in w.items()]
    inputs = [h.make_tensor_value_info("x", T.FLOAT, [batch, 3, 8, 8])]
    if ir < 4:
        inputs += [h.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = h.make_graph(nodes, "foreign", inputs, [h.make_tensor_value_info("y", T.FLOAT, shape)],
                         inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _raw_onnx(path, x):
    import numpy as np
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = [s.run(None, {"x": x[i:i + 1].numpy()})[0] for i in range(len(x))]  # batch 1 or N
    return torch.from_numpy(np.concatenate(out).reshape(len(x), -1))


XF = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("head", ["gemm", "conv", "n1c"])
@pytest.mark.parametrize("ir,opset", [(3, 13), (8, 17)])
def test_onnx_teacher_output_shapes_are_read_as_n_by_classes(tmp_path, head, ir, opset, caplog):
    path = _foreign_teacher(tmp_path / "t.onnx", head, ir=ir, opset=opset)
    with caplog.at_level("WARNING", logger="edgekd"):
        t = load_teacher(str(path))
        out = t(XF)
    assert t.num_classes == 6 and t.input_shape == (3, 8, 8) and t.fixed_batch is None
    assert out.shape == (5, 6) and torch.allclose(out, _raw_onnx(path, XF), atol=1e-6)
    check_teacher_matches(t, _bundle(6, (3, 8, 8)))
    assert not [r for r in caplog.records if "probabilit" in r.getMessage()]  # logits stay logits


@pytest.mark.parametrize("softmax,head,batch", [("node", "gemm", "N"), ("node", "conv", 1),
                                                ("node", "n1c", "N"), ("math", "gemm", 1)])
@pytest.mark.parametrize("ir", [3, 8])
def test_onnx_teacher_probabilities_become_log_probabilities(tmp_path, softmax, head, batch, ir,
                                                             caplog):
    path = _foreign_teacher(tmp_path / "t.onnx", head, ir=ir, softmax=softmax, batch=batch)
    with caplog.at_level("WARNING", logger="edgekd"):
        t = load_teacher(str(path))
        out = t(XF)
        t(XF[:2])
    probs = _raw_onnx(path, XF)
    assert t.num_classes == 6 and out.shape == (5, 6)
    assert torch.allclose(out, torch.log(probs), atol=1e-5)
    assert torch.allclose(torch.softmax(out, 1), probs, atol=1e-5)
    check_teacher_matches(t, _bundle(6, (3, 8, 8)))
    warned = [r.getMessage() for r in caplog.records if "probabilit" in r.getMessage()]
    assert len(warned) == 1 and "log" in warned[0]
    assert ("Softmax" in warned[0]) == (softmax == "node")


def test_onnx_teacher_with_a_dynamic_input_decides_on_its_first_batch(tmp_path, caplog):
    import onnx

    path = _foreign_teacher(tmp_path / "t.onnx", "gemm", softmax="math")
    m = onnx.load(str(path))
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"
    onnx.save(m, str(path))
    with caplog.at_level("WARNING", logger="edgekd"):
        t = load_teacher(str(path))
        assert t.input_shape is None and t.num_classes == 6
        assert not caplog.records
        out = t(XF)
        t(XF)
    assert torch.allclose(out, torch.log(_raw_onnx(path, XF)), atol=1e-5)
    assert len([r for r in caplog.records if "probabilit" in r.getMessage()]) == 1
