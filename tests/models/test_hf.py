"""Hugging Face models: the hf- student families and the hf:DIR teacher, with tiny configs
built here (nothing is downloaded)."""
from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from edgekd.errors import BadInputError, RuntimeMissingError  # noqa: E402
from edgekd.models import (block_signatures, build_model, count_macs_params, family_grid,  # noqa: E402
                           input_shape, parse_spec)
from edgekd.models.ref import build_spec_model  # noqa: E402
from edgekd.models.teacher import load_teacher  # noqa: E402

HF_FAMILIES = ["hf-mobilenetv2", "hf-mobilevit", "hf-resnet", "hf-efficientnet"]
TINY = {
    "hf-mobilenetv2": "hf-mobilenetv2:width=0.35,res=32",
    "hf-mobilevit": "hf-mobilevit:size=xxs,res=64",
    "hf-resnet": "hf-resnet:width=8,depths=1-1,res=32",
    "hf-efficientnet": "hf-efficientnet:width=0.25,depth=0.25,res=32",
}
CANONICAL = {
    "hf-mobilenetv2": "hf-mobilenetv2:width=1,res=224,expansion=6,finegrained=true",
    "hf-mobilevit": "hf-mobilevit:size=xxs,res=224",
    "hf-resnet": "hf-resnet:width=64,depths=2-2-2-2,block=basic,stem=64,res=224",
    "hf-efficientnet": "hf-efficientnet:width=1,depth=1,res=224",
}


# ------------------------------------------------------------------ spec strings and grids

@pytest.mark.parametrize("family", HF_FAMILIES)
def test_spec_round_trips(family):
    cfg = parse_spec(family)
    assert cfg.spec == CANONICAL[family]
    assert parse_spec(cfg.spec) == cfg
    tiny = parse_spec(TINY[family])
    assert parse_spec(tiny.spec).spec == tiny.spec
    assert input_shape(tiny, 3) == (3, tiny.res, tiny.res)


def test_resnet_knobs():
    cfg = parse_spec("hf-resnet:width=256,depths=3-4-6-3,block=bottleneck")
    assert cfg.spec == "hf-resnet:width=256,depths=3-4-6-3,block=bottleneck,stem=64,res=224"
    assert parse_spec("hf-resnet:width=16,depths=2").knobs["depths"] == (2,)


@pytest.mark.parametrize("spec, message", [
    ("hf-mobilevit:size=m", "bad value for hf-mobilevit knob 'size': 'm'; allowed: xxs, xs or s"),
    ("hf-resnet:depths=2-x", "bad value for hf-resnet knob 'depths': '2-x' (not integers separated "
                             "by '-'); allowed: N-N-... (1 to 6 stages), each 1 <= N <= 16"),
    ("hf-resnet:block=wide", "bad value for hf-resnet knob 'block': 'wide'; allowed: basic or "
                             "bottleneck"),
    ("hf-mobilenetv2:width=0", "bad value for hf-mobilenetv2 knob 'width': '0'; allowed: a number, "
                               "0 < width <= 4"),
    ("hf-efficientnet:res=16", "bad value for hf-efficientnet knob 'res': '16'; allowed: an "
                               "integer, 32 <= res <= 1024"),
])
def test_bad_knobs(spec, message):
    with pytest.raises(BadInputError) as info:
        parse_spec(spec)
    assert str(info.value) == message


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_grids(family):
    default = family_grid(family, "default")
    small = family_grid(family, "small")
    assert len(default) >= 24 and 4 <= len(small) <= 8
    assert len(set(default)) == len(default)
    assert max(parse_spec(s).res for s in default + small) == 224
    assert all(parse_spec(s).spec == s for s in default)


def test_mobilenetv2_default_grid_steps_resolution_finely_at_every_width():
    # steps of 32 px left neighbours in capacity order 1.4-1.5x apart in latency: budgets in
    # those gaps got a student using under 0.8 of them
    by_width: dict = {}
    for s in family_grid("hf-mobilenetv2", "default"):
        c = parse_spec(s).config
        by_width.setdefault(c.width, []).append(c.res)
    assert len(by_width) >= 5
    for width, res in by_width.items():
        res = sorted(res)
        assert res[0] <= 128 and res[-1] == 224, width
        assert max(b - a for a, b in zip(res, res[1:])) <= 16, (width, res)


def test_grid_is_ordered_by_capacity():
    grid = family_grid("hf-resnet", "default")
    sizes = []
    for spec in grid[:: len(grid) // 4]:
        model = build_model(spec, num_classes=10, in_channels=3)
        macs, params = count_macs_params(model, input_shape(spec, 3))
        sizes.append((params, macs))
    assert sizes == sorted(sizes)


# ------------------------------------------------------------------ building

@pytest.mark.parametrize("family", HF_FAMILIES)
@pytest.mark.parametrize("in_channels", [3, 1])
def test_builds_and_returns_logits(family, in_channels):
    spec = TINY[family]
    model = build_model(spec, num_classes=7, in_channels=in_channels)
    assert model.edgekd_spec == parse_spec(spec).spec
    assert isinstance(model.classifier, torch.nn.Linear) and model.classifier.out_features == 7
    assert isinstance(model.features, torch.nn.Module)
    shape = input_shape(spec, in_channels)
    with torch.no_grad():
        out = model.eval()(torch.randn(2, *shape))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)
    assert bool(torch.isfinite(out).all()) and float(out.abs().max()) > 1e-12
    macs, params = count_macs_params(model, shape)
    assert macs > 0 and params > 0


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_random_init_is_seeded(family):
    a = build_spec_model(TINY[family], num_classes=5, in_channels=3)
    b = build_spec_model(TINY[family], num_classes=5, in_channels=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_real_size_counts():
    """The default configs are the published architectures (MACs and params at 1000 classes)."""
    expected = {"hf-mobilenetv2": (300.8e6, 3.50e6), "hf-resnet": (1814e6, 11.69e6),
                "hf-efficientnet": (385.8e6, 5.29e6)}
    for family, (macs_ref, params_ref) in expected.items():
        model = build_model(family, num_classes=1000, in_channels=3)
        macs, params = count_macs_params(model, (3, 224, 224))
        assert macs == pytest.approx(macs_ref, rel=0.01), family
        assert params == pytest.approx(params_ref, rel=0.01), family


def test_student_checkpoint_round_trip(tmp_path):
    from edgekd.models.checkpoint import load_checkpoint, save_checkpoint

    spec = TINY["hf-mobilenetv2"]
    model = build_spec_model(spec, num_classes=4, in_channels=3)
    save_checkpoint(tmp_path / "s.pt", model, spec=spec, num_classes=4, in_channels=3,
                    input_shape=input_shape(spec, 3))
    loaded, meta = load_checkpoint(tmp_path / "s.pt")
    x = torch.randn(3, *input_shape(spec, 3))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert meta["spec"] == spec


# ------------------------------------------------------------------ export and bench

@pytest.mark.parametrize("family", HF_FAMILIES)
def test_export_parity_ort(family, tmp_path):
    from edgekd.deploy import export_ref
    from edgekd.targets import load_target

    result = export_ref(TINY[family], load_target("ort-cpu"), tmp_path / "out", in_channels=3)
    assert result.parity.passed


@pytest.mark.openvino
@pytest.mark.parametrize("family", HF_FAMILIES)
def test_export_parity_openvino(family, tmp_path):
    from edgekd.deploy import export_ref
    from edgekd.targets import load_target

    result = export_ref(TINY[family], load_target("openvino-cpu"), tmp_path / "out", in_channels=3)
    assert result.parity.passed


def test_cli_export_hf_mobilenetv2(run_cli, tmp_path):
    r = run_cli("export", "hf-mobilenetv2:width=0.5,res=96", "--target", "ort-cpu",
                "--in-channels", "3", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "parity vs torch" in r.stdout and (tmp_path / "out" / "model.onnx").is_file()


def test_cli_bench_at_224(run_cli):
    r = run_cli("bench", "hf-mobilenetv2:width=0.35,res=224", "--target", "ort-cpu",
                "--min-time", "0.1", "--warmup", "0.05", "--min-iters", "10", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["latency_ms"]["p50"] > 0


# ------------------------------------------------------------------ hf:DIR teachers

def _tiny_hf(kind: str = "mobilenet_v2", num_labels: int = 5):
    import transformers as tf

    configs = {
        "mobilenet_v2": lambda: tf.MobileNetV2Config(depth_multiplier=0.35, image_size=32),
        "resnet": lambda: tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                          layer_type="basic"),
    }
    cfg = configs[kind]()
    cfg.num_labels = num_labels
    torch.manual_seed(1)
    return tf.AutoModelForImageClassification.from_config(cfg).eval()


def test_hf_teacher_round_trip(tmp_path):
    model = _tiny_hf()
    model.save_pretrained(tmp_path / "m")
    teacher = load_teacher(f"hf:{tmp_path / 'm'}")
    assert teacher.kind == "torch" and teacher.supports_features
    assert teacher.num_classes == 5 and teacher.input_shape == (3, 32, 32)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = model(pixel_values=x).logits
    got = teacher(x)
    assert isinstance(got, torch.Tensor) and got.shape == (4, 5)
    assert torch.equal(got, want)
    again = load_teacher(f"hf:{tmp_path / 'm'}")
    assert again.fingerprint == teacher.fingerprint


def test_hf_teacher_bin_weights_and_shards(tmp_path):
    model = _tiny_hf("resnet", num_labels=3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(pixel_values=x).logits
    model.config.save_pretrained(tmp_path / "bin")
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    model.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    assert (tmp_path / "shards" / "model.safetensors.index.json").is_file()
    fps = set()
    for d in ("bin", "shards"):
        teacher = load_teacher(f"hf:{tmp_path / d}")
        assert teacher.num_classes == 3 and teacher.input_shape is None  # ResNetConfig: no size
        assert torch.equal(teacher(x), want)
        fps.add(teacher.fingerprint)
    assert len(fps) == 2


def test_hf_teacher_fingerprint_follows_weights(tmp_path):
    model = _tiny_hf()
    model.save_pretrained(tmp_path / "m")
    first = load_teacher(f"hf:{tmp_path / 'm'}").fingerprint
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(tmp_path / "m")
    assert load_teacher(f"hf:{tmp_path / 'm'}").fingerprint != first


def test_hf_teacher_bad_inputs(tmp_path):
    with pytest.raises(BadInputError, match=r"model directory '.*nope' does not exist"):
        load_teacher(f"hf:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError) as info:
        load_teacher(f"hf:{tmp_path / 'empty'}")
    assert str(info.value).endswith("is not a save_pretrained model directory (no config.json); "
                                    "save the model with model.save_pretrained(DIR)")
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(BadInputError, match="is a file, not a save_pretrained directory"):
        load_teacher(f"hf:{tmp_path / 'f.bin'}")
    nw = tmp_path / "noweights"
    nw.mkdir()
    (nw / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    with pytest.raises(BadInputError, match="has config.json but no weights"):
        load_teacher(f"hf:{nw}")
    for model_type in ("bert", "not-a-model"):
        d = tmp_path / model_type
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model_type": model_type}))
        (d / "model.safetensors").write_bytes(b"")
        with pytest.raises(BadInputError) as info:
            load_teacher(f"hf:{d}")
        text = str(info.value)
        assert f"holds a '{model_type}' model, not an architecture AutoModelForImageClassification " \
               f"knows; known ones include mobilenet_v2, mobilevit, resnet, efficientnet" in text
        assert "\n" not in text
    model = _tiny_hf()
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(BadInputError, match="--teacher-weights does not apply"):
        load_teacher(f"hf:{tmp_path / 'm'}", weights=str(tmp_path / "f.bin"))
    other = _tiny_hf(num_labels=9)
    other.save_pretrained(tmp_path / "m2")
    (tmp_path / "m2" / "config.json").write_text((tmp_path / "m" / "config.json").read_text())
    with pytest.raises(BadInputError, match="do not fit the model"):
        load_teacher(f"hf:{tmp_path / 'm2'}")


def test_transformers_missing_is_exit_4(monkeypatch, tmp_path):
    model = _tiny_hf()
    model.save_pretrained(tmp_path / "m")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(RuntimeMissingError) as info:
        load_teacher(f"hf:{tmp_path / 'm'}")
    assert info.value.exit_code == 4
    assert "pip install 'edgekd[hf]'" in str(info.value)
    with pytest.raises(RuntimeMissingError, match=r"edgekd\[hf\]"):
        build_model("hf-resnet:width=8,depths=1,res=32", num_classes=2, in_channels=3)
    assert parse_spec("hf-resnet:width=8").family == "hf-resnet"  # specs parse without it


def test_cli_transformers_missing_exit_code(run_cli, tmp_path):
    fake = tmp_path / "site" / "transformers"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    r = run_cli("export", "hf-resnet:width=8,depths=1,res=32", "--target", "ort-cpu",
                "--in-channels", "3", "--out", tmp_path / "out",
                env={"PYTHONPATH": str(tmp_path / "site")})
    assert r.returncode == 4, r.stderr
    assert "pip install 'edgekd[hf]'" in r.stderr


@pytest.mark.skipif(__import__("importlib").util.find_spec("torchao") is None,
                    reason="the warnings come from torchao, which transformers imports when installed")
def test_building_an_hf_student_prints_no_torchao_warnings():
    """transformers imports torchao as it builds a model; its 'Failed to load ... .so' lines and
    torch's Enum-registration warnings are noise on every hf- run, shown only with EDGEKD_DEBUG."""
    import os
    import subprocess

    code = ("from edgekd.models import build_model\n"
            "build_model('hf-resnet:width=8,depths=1-1-1-1,res=32', num_classes=3, in_channels=3)\n")

    def stderr(**extra):
        env = {k: v for k, v in os.environ.items() if k != "EDGEKD_DEBUG"}
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**env, **extra}, check=True).stderr

    def noisy(text):
        return "Failed to load" in text or "is an Enum subclass" in text

    if not noisy(stderr(EDGEKD_DEBUG="1")):
        pytest.skip("this torchao build warns of nothing: no noise to keep out")
    quiet = stderr()
    assert not noisy(quiet), quiet[-2000:]
