import json

import pytest

from edgekd.errors import BadInputError
from edgekd.targets import Precision, Runtime, load_target, target_names


def test_shipped_targets_load():
    names = set(target_names())
    assert {"torch-cpu", "ort-cpu", "ort-cpu-int8", "openvino-cpu", "openvino-cpu-int8",
            "tensorrt-fp16", "tensorrt-int8"} <= names
    t = load_target("openvino-cpu")
    assert t.runtime is Runtime.openvino and t.precision is Precision.fp32
    assert load_target("tensorrt-int8").precision is Precision.int8


def test_target_is_frozen():
    t = load_target("ort-cpu")
    with pytest.raises(Exception):
        t.threads = 4


def test_unknown_target_lists_known_and_suggests():
    with pytest.raises(BadInputError) as ei:
        load_target("ort-cpuu")
    msg = str(ei.value)
    assert "unknown target 'ort-cpuu'" in msg and "did you mean 'ort-cpu'" in msg
    assert "openvino-cpu" in msg


def test_target_from_user_yaml(tmp_path):
    p = tmp_path / "my-board.yaml"
    p.write_text("runtime: onnxruntime\nthreads: 2\ninput_shape: [3, 32, 32]\n")
    t = load_target(str(p))
    assert t.name == "my-board" and t.threads == 2 and t.input_shape == (3, 32, 32)


@pytest.mark.parametrize("text,needle", [
    ("runtime: tflite\n", "runtime"),
    ("runtime: onnxruntime\nthreads: 0\n", "threads"),
    ("runtime: onnxruntime\nbogus: 1\n", "bogus"),
    ("runtime: [onnxruntime\n", "not valid YAML"),
    ("- a\n- b\n", "mapping"),
])
def test_bad_target_files_say_what(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(BadInputError) as ei:
        load_target(str(p))
    assert needle in str(ei.value)
    assert "\n" not in str(ei.value)


def test_targets_cli_json(run_cli):
    res = run_cli("targets", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)["targets"]}
    assert rows["ort-cpu"]["available"] is True
    trt = rows["tensorrt-fp16"]
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert trt["available"] is False and "tensorrt" in trt["reason"]


def test_edgekd_measure_sets_the_keys_a_target_file_leaves_unset(monkeypatch, tmp_path):
    from edgekd.errors import BadInputError
    from edgekd.targets import load_target, load_target_file

    monkeypatch.setenv("EDGEKD_MEASURE", "warmup_s=0.02, min_time_s=0.3,min_iters=40")
    m = load_target("ort-cpu").measure  # the shipped file sets no measure: keys
    assert (m.warmup_s, m.min_time_s, m.min_iters) == (0.02, 0.3, 40)
    own = tmp_path / "own.yaml"
    own.write_text("runtime: onnxruntime\nmeasure: {min_time_s: 2.0}\n")
    m = load_target_file(own).measure  # the file's own key stays, the others come from the variable
    assert (m.min_time_s, m.warmup_s, m.min_iters) == (2.0, 0.02, 40)
    monkeypatch.delenv("EDGEKD_MEASURE")
    assert load_target("ort-cpu").measure.min_time_s == 1.0  # the protocol's default again
    for bad in ("min_time=1", "min_time_s", "min_iters=-3"):
        monkeypatch.setenv("EDGEKD_MEASURE", bad)
        with pytest.raises(BadInputError, match="EDGEKD_MEASURE"):
            load_target("ort-cpu")
