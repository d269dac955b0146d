"""Student families, spec strings, block signatures and the MACs/params counter."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata

import pytest
import torch
from torch import nn

from edgekd.errors import BadInputError
from edgekd.models import (FAMILIES, block_signatures, build_block, build_model,
                           count_macs_params, family_grid, family_names, input_shape, parse_spec)
from edgekd.models.plan import ir_sig

SMALL = {
    "mobilenetv2": "mobilenetv2:width=0.25,depth=0.5",
    "resnet": "resnet:width=8,blocks=1",
    "convnet": "convnet:width=8,depth=4",
}


# ------------------------------------------------------------------ spec strings

def test_builtin_families():
    assert family_names() == ["convnet", "hf-efficientnet", "hf-mobilenetv2", "hf-mobilevit", "hf-resnet",
                              "mobilenetv2", "resnet"]


def test_canonical_spec_round_trip():
    cfg = parse_spec("mobilenetv2:width=0.5,res=32")
    assert cfg.spec == "mobilenetv2:width=0.5,depth=1,res=32,expansion=6,stem_stride=1"
    assert cfg.family == "mobilenetv2"
    assert cfg.knobs == {"width": 0.5, "depth": 1.0, "res": 32, "expansion": 6.0,
                         "stem_stride": 1}
    assert parse_spec(cfg.spec).spec == cfg.spec
    assert parse_spec(" mobilenetv2 : res = 32 , width=0.50 ") == cfg
    assert parse_spec(cfg) is cfg
    assert str(cfg) == cfg.spec and hash(cfg) == hash(parse_spec(cfg.spec))


@pytest.mark.parametrize("spec, canonical", [
    ("resnet", "resnet:width=16,blocks=2-2-2,res=32,stem_stride=1"),
    ("resnet:blocks=3", "resnet:width=16,blocks=3-3-3,res=32,stem_stride=1"),
    ("resnet:blocks=2,stages=4", "resnet:width=16,blocks=2-2-2-2,res=32,stem_stride=1"),
    ("resnet:stages=2", "resnet:width=16,blocks=2-2,res=32,stem_stride=1"),
    ("resnet:blocks=1-2-3,res=16", "resnet:width=16,blocks=1-2-3,res=16,stem_stride=1"),
    ("convnet", "convnet:width=16,depth=4,res=32"),
    ("mobilenetv2:res=64", "mobilenetv2:width=1,depth=1,res=64,expansion=6,stem_stride=1"),
    ("mobilenetv2:res=96", "mobilenetv2:width=1,depth=1,res=96,expansion=6,stem_stride=2"),
    ("mobilenetv2:res=96,stem_stride=1",
     "mobilenetv2:width=1,depth=1,res=96,expansion=6,stem_stride=1"),
])
def test_canonical_forms(spec, canonical):
    assert parse_spec(spec).spec == canonical
    assert parse_spec(canonical).spec == canonical


@pytest.mark.parametrize("spec, message", [
    ("mobilenet:width=0.5",
     "unknown student family 'mobilenet' (did you mean 'mobilenetv2'?); "
     "known: convnet, hf-efficientnet, hf-mobilenetv2, hf-mobilevit, hf-resnet, mobilenetv2, resnet"),
    ("mobilenetv2:widht=0.5",
     "unknown knob 'widht' for student family 'mobilenetv2' (did you mean 'width'?); "
     "valid knobs: width, depth, res, expansion, stem_stride"),
    ("resnet:bloks=2",
     "unknown knob 'bloks' for student family 'resnet' (did you mean 'blocks'?); "
     "valid knobs: width, blocks, res, stem_stride, stages"),
    ("mobilenetv2:width=-1",
     "bad value for mobilenetv2 knob 'width': '-1'; allowed: a number, 0 < width <= 4"),
    ("mobilenetv2:width=wide",
     "bad value for mobilenetv2 knob 'width': 'wide'; allowed: a number, 0 < width <= 4"),
    ("resnet:blocks=x",
     "bad value for resnet knob 'blocks': 'x' (not integers separated by '-'); "
     "allowed: N or N-N-... (1 to 6 stages), each 1 <= N <= 16"),
    ("resnet:blocks=2-0-2",
     "bad value for resnet knob 'blocks': '2-0-2' (out of range); "
     "allowed: N or N-N-... (1 to 6 stages), each 1 <= N <= 16"),
    ("resnet:blocks=2-2-2,stages=4",
     "bad value for resnet knob 'blocks': '2-2-2' (it has 3 stages but stages=4); "
     "allowed: N or N-N-... (1 to 6 stages), each 1 <= N <= 16"),
    ("convnet:depth=2.5",
     "bad value for convnet knob 'depth': '2.5'; allowed: an integer, 1 <= depth <= 16"),
    ("convnet:res=2",
     "bad value for convnet knob 'res': '2'; allowed: an integer, 4 <= res <= 1024"),
    ("resnet:stem_stride=3",
     "bad value for resnet knob 'stem_stride': '3'; allowed: an integer, 1 <= stem_stride <= 2"),
    ("mobilenetv2:width",
     "bad knob 'width' in student spec 'mobilenetv2:width'; write key=value pairs separated "
     "by commas, e.g. mobilenetv2:width=0.5,res=32"),
    ("convnet:res=32,res=16",
     "knob 'res' is given twice in student spec 'convnet:res=32,res=16'; give each knob once"),
    ("", "empty student spec ''; write family:key=value,..., e.g. mobilenetv2:width=0.5,res=32"),
    (":width=1", "student spec ':width=1' has no family before ':'; write family:key=value,..., "
                 "e.g. mobilenetv2:width=0.5,res=32"),
])
def test_spec_errors(spec, message):
    with pytest.raises(BadInputError) as info:
        parse_spec(spec)
    assert str(info.value) == message


def test_bad_data_arguments():
    with pytest.raises(BadInputError, match="num_classes must be a positive integer, got 0"):
        build_model("convnet", num_classes=0, in_channels=1)
    with pytest.raises(BadInputError, match="in_channels must be a positive integer"):
        input_shape("convnet", in_channels=-3)
    with pytest.raises(BadInputError, match="unknown grid 'huge' for student family 'convnet'"):
        family_grid("convnet", "huge")


def test_input_shape():
    assert input_shape("mobilenetv2:res=24", 1) == (1, 24, 24)
    assert input_shape(parse_spec("resnet:res=16"), 3) == (3, 16, 16)


def test_import_does_not_load_torch():
    code = ("import sys, edgekd.models as m; m.parse_spec('resnet:blocks=2'); "
            "m.block_signatures('mobilenetv2', 1); m.family_grid('convnet'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ models

@pytest.mark.parametrize("family", sorted(SMALL))
@pytest.mark.parametrize("res", [8, 16, 32])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_every_family_builds_and_forwards(family, res, in_channels):
    spec = f"{SMALL[family]},res={res}"
    model = build_model(spec, num_classes=7, in_channels=in_channels)
    assert isinstance(model.features, nn.Module)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 7
    assert model.edgekd_spec == parse_spec(spec).spec
    shape = input_shape(spec, in_channels)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    # the blocks cover the model: their MACs and params add up to the hook count
    sigs = block_signatures(spec, in_channels, num_classes=7)
    macs, params = count_macs_params(model, shape)
    assert macs == sum(s["macs"] for s in sigs)
    assert params == sum(s["params"] for s in sigs) == sum(p.numel() for p in model.parameters())
    # each signature names the module that runs it
    assert sigs[-1]["kind"] == "head" and sigs[-1]["name"] == "classifier"
    assert len(sigs) - 1 == len(model.features)
    for i, sig in enumerate(sigs[:-1]):
        assert sig["name"] == f"features.{i}"
        assert sig["family"] == family


def test_mobilenetv2_knobs_change_the_model():
    base = block_signatures("mobilenetv2:width=0.5", 3)
    deeper = block_signatures("mobilenetv2:width=0.5,depth=2", 3)
    assert len(deeper) > len(base)
    wide = block_signatures("mobilenetv2:width=1", 3)
    assert all(s["cout"] % 8 == 0 for s in wide if "cout" in s)
    assert block_signatures("mobilenetv2:width=0.35", 3)[0]["cout"] == 16  # 11.2 -> 16
    exp4 = block_signatures("mobilenetv2:expansion=4", 3)
    assert exp4[1]["expansion"] == 1 and exp4[2]["expansion"] == 4
    assert block_signatures("mobilenetv2:res=96", 3)[0]["s"] == 2
    assert block_signatures("mobilenetv2:res=32", 3)[0]["s"] == 1


def test_resnet_stages_double_width():
    sigs = block_signatures("resnet:width=8,blocks=1-2-1", 3)
    kinds = [s["kind"] for s in sigs]
    assert kinds == ["conv", "basic", "basic", "basic", "basic", "head"]
    assert [s["cout"] for s in sigs[1:-1]] == [8, 16, 16, 32]
    assert [s["s"] for s in sigs[1:-1]] == [1, 2, 1, 2]


# ------------------------------------------------------------------ MACs by hand

def test_macs_tiny_convnet_by_hand():
    # convnet width=4 depth=2 res=8, 1 channel in, 3 classes:
    #   conv 1->4 3x3 s1 on 8x8: 4*1*9*64 = 2304 MACs, 36 + 8 (BN) params
    #   conv 4->8 3x3 s2 -> 4x4: 8*4*9*16 = 4608 MACs, 288 + 16 params
    #   linear 8->3: 24 MACs, 24 + 3 params
    model = build_model("convnet:width=4,depth=2,res=8", num_classes=3, in_channels=1)
    assert count_macs_params(model, (1, 8, 8)) == (2304 + 4608 + 24, 44 + 304 + 27)


def test_macs_inverted_residual_by_hand():
    # cin=8 cout=8 expansion 6 (hidden 48) 3x3 stride 1 on 4x4:
    #   expand 48*8*16 = 6144, depthwise 48*9*16 = 6912, project 8*48*16 = 6144
    #   params 48*8+96 = 480, 48*9+96 = 528, 8*48+16 = 400
    sig = ir_sig(8, 8, 4, 4, expansion=6, kernel=3, stride=1)
    assert (sig["macs"], sig["params"]) == (19200, 1408) and sig["residual"]
    block, shape = build_block(sig)
    assert shape == (8, 4, 4)
    assert count_macs_params(block, shape) == (19200, 1408)
    # stride 2, expansion 1: no expand conv; 2x2 output
    sig = ir_sig(8, 16, 4, 4, expansion=1, kernel=3, stride=2)
    block, shape = build_block(sig)
    assert count_macs_params(block, shape) == (8 * 9 * 4 + 16 * 8 * 4, 72 + 16 + 128 + 32)


def test_counter_linear_and_groups():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.Flatten(1),
                          nn.Linear(8 * 5 * 5, 10))
    macs, params = count_macs_params(model, (4, 5, 5))
    assert macs == 8 * 2 * 9 * 25 + 200 * 10
    assert params == sum(p.numel() for p in model.parameters())
    model.train()
    count_macs_params(model, (4, 5, 5))
    assert model.training  # the counter restores the mode
    with pytest.raises(BadInputError, match="input shape"):
        count_macs_params(model, (4, 0, 5))


# ------------------------------------------------------------------ grids and blocks

@pytest.mark.parametrize("family", ["mobilenetv2", "resnet", "convnet"])
def test_grids_ordered_unique_canonical(family):
    small, default = family_grid(family, "small"), family_grid(family, "default")
    assert 4 <= len(small) <= 8 and 16 <= len(default) <= 36
    for grid in (small, default):
        assert len(set(grid)) == len(grid)
        assert all(parse_spec(s).spec == s and s.startswith(family + ":") for s in grid)
        caps = []
        for s in grid:
            sigs = block_signatures(s, 3)
            caps.append((sum(x["params"] for x in sigs), sum(x["macs"] for x in sigs)))
        assert caps == sorted(caps)
        assert all(16 <= parse_spec(s).res <= 32 for s in grid)


@pytest.mark.parametrize("family", ["mobilenetv2", "resnet", "convnet"])
def test_build_block_runs_on_its_input_shape(family):
    seen = {}
    grid = family_grid(family, "small")
    for spec in (grid[0], grid[-1]):
        for sig in block_signatures(spec, 1):
            seen.setdefault(sig["key"], sig)
    for key, sig in seen.items():
        block, shape = build_block(sig)
        with torch.no_grad():
            out = block(torch.randn(1, *shape))
        assert tuple(out.shape[1:]) == tuple(sig["out_shape"]), key
        assert count_macs_params(block, shape) == (sig["macs"], sig["params"]), key


def test_block_keys_are_stable_and_shared():
    a = block_signatures("mobilenetv2:width=0.5,res=32", 3)
    b = block_signatures("mobilenetv2:width=0.5,depth=2,res=32", 3)
    assert a[0]["key"] == b[0]["key"] == "conv:cin=3,cout=16,k=3,s=1,hw=32x32,act=relu6"
    assert a[1]["key"] == "ir:cin=16,cout=8,e=1,k=3,s=1,hw=32x32"
    assert a[-1]["key"] == "head:cin=640,classes=10,hw=2x2"
    assert {s["key"] for s in a} <= {s["key"] for s in b}


def test_build_block_rejects_unknown_kind():
    with pytest.raises(BadInputError, match="unknown block kind 'lstm'"):
        build_block({"kind": "lstm", "in_shape": (1, 2, 2)})
    with pytest.raises(BadInputError, match="not a block signature"):
        build_block({"key": "x"})


# ------------------------------------------------------------------ third-party families

THIRD_PARTY = textwrap.dedent('''
    from pydantic import Field
    from edgekd.models.spec import Family, KnobConfig
    from edgekd.models.plan import conv_sig, head_sig, out_size

    class TinyConfig(KnobConfig):
        width: int = Field(4, ge=1, le=64)
        res: int = Field(8, ge=4, le=64)

    def tiny_plan(cfg, in_channels, num_classes):
        h = cfg.res
        sigs = [conv_sig(in_channels, cfg.width, h, h, kernel=3, stride=2)]
        h = out_size(h, 3, 2)
        return sigs + [head_sig(cfg.width, num_classes, h, h)]

    TINY = Family(config=TinyConfig, plan=tiny_plan,
                  grids={"small": ["width=2", "width=4"], "default": ["width=8", "width=4"]})
''')


def test_third_party_family_from_entry_point(tmp_path, monkeypatch):
    (tmp_path / "edgekd_tiny_family.py").write_text(THIRD_PARTY)
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [metadata.EntryPoint(name="tiny", value="edgekd_tiny_family:TINY",
                               group="edgekd.families")]
    real = metadata.entry_points

    def fake_entry_points(**kw):
        if kw.get("group") == "edgekd.families":
            return eps
        return real(**kw)

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(FAMILIES, "_items", dict(FAMILIES._items))
    monkeypatch.setattr(FAMILIES, "_lazy", dict(FAMILIES._lazy))
    monkeypatch.setattr(FAMILIES, "_entry_points_loaded", False)

    assert "tiny" in family_names()
    assert parse_spec("tiny:width=3").spec == "tiny:width=3,res=8"
    model = build_model("tiny:width=3", num_classes=2, in_channels=1)
    assert count_macs_params(model, input_shape("tiny:width=3", 1)) == (
        3 * 9 * 16 + 6, 27 + 6 + 6 + 2)
    assert family_grid("tiny", "default") == ["tiny:width=4,res=8", "tiny:width=8,res=8"]
    with pytest.raises(BadInputError, match="bad value for tiny knob 'width': '0'"):
        parse_spec("tiny:width=0")
