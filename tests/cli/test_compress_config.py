"""`edgekd compress --config`: the file is validated by CompressConfig, only the flags given beside
it override it, --print-config writes a file that gives the same plan back, and the published
JSON schema is the one the model makes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from edgekd.cli.main import main

STUDENT = "convnet:width=8,depth=2,res=16"


def _run(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _flags(assets):
    return ["--teacher", assets / "teacher.pt", "--data", "digits", "--target", assets / "fast-cpu.yaml",
            "--budget-ms", "5", "--student", STUDENT, "--epochs", "3", "--loss", "dkd", "--loss-opt", "beta=2"]


def test_print_config_round_trips_to_the_same_plan(tiny_assets, tmp_path, capsys):
    code, printed, err = _run(capsys, "compress", *_flags(tiny_assets), "--out", tmp_path / "o", "--print-config")
    assert code == 0, err
    doc = yaml.safe_load(printed)
    assert doc["epochs"] == 3 and doc["loss_options"] == {"beta": 2} and doc["out"] == str(tmp_path / "o")
    assert doc["batch_size"] == 64 and doc["lr"] is None  # complete: defaults included
    (tmp_path / "run.yaml").write_text(printed)

    code, direct, err = _run(capsys, "compress", *_flags(tiny_assets), "--dry-run", "--json")
    assert code == 0, err
    code, again, err = _run(capsys, "compress", "--config", tmp_path / "run.yaml", "--dry-run", "--json")
    assert code == 0, err
    a, b = json.loads(direct), json.loads(again)
    assert a["plan"] == b["plan"] and a["config"] == b["config"]
    assert "dkd (beta=2) from" in {s["stage"]: s["what"] for s in b["plan"]["steps"]}["distill"]
    assert not (tmp_path / "o").exists()


def test_only_given_flags_override_the_file(tiny_assets, tmp_path, capsys):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "teacher": str(tiny_assets / "teacher.pt"), "data": "digits", "target": "ort-cpu", "budget_ms": 2,
        "student": STUDENT, "seed": 5, "epochs": 7, "lr": 0.01, "batch_size": 32, "loss": "kd",
        "loss_options": {"T": 2, "w_kd": 0.5}}))
    code, out, err = _run(capsys, "compress", "--config", tmp_path / "run.yaml", "--epochs", "4",
                          "--loss-opt", "w_kd=0.8", "--print-config")
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert doc["epochs"] == 4  # given: wins
    assert doc["seed"] == 5 and doc["metric"] == "p90"  # not given: the file's value, else the default
    assert doc["lr"] == 0.01 and doc["batch_size"] == 32
    assert doc["loss_options"] == {"T": 2, "w_kd": 0.8}  # merged by key


@pytest.mark.parametrize("text, needle", [
    ("budget_ms: 2\nbogus: 1\n", "unknown setting 'bogus'"),
    ("- a\n- b\n", "not a mapping"),
    ("budget_ms: -1\n", "budget_ms"),
    ("budget_ms: 2\nloss: kd\nloss_options: {beta: 2}\n", "unknown option 'beta' for loss 'kd'"),
])
def test_a_bad_file_is_one_line_naming_the_setting(tiny_assets, tmp_path, capsys, text, needle):
    head = f"teacher: {tiny_assets / 'teacher.pt'}\ndata: digits\ntarget: ort-cpu\n"
    (tmp_path / "run.yaml").write_text(text if text.startswith("-") else head + text)
    code, out, err = _run(capsys, "compress", "--config", tmp_path / "run.yaml", "--dry-run")
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_missing_settings_are_named(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("data: digits\n")
    code, out, err = _run(capsys, "compress", "--config", tmp_path / "run.yaml", "--print-config")
    assert code == 2 and "--teacher, --target, --budget-ms (or in the --config file)" in err, err


def test_published_schema_is_current():
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "tools"))
    try:
        from write_config_schema import SCHEMA_FILE, schema_text
    finally:
        sys.path.remove(str(root / "tools"))
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), \
        "docs/compress-config.schema.json is stale: run python tools/write_config_schema.py"
    schema = json.loads(schema_text())
    assert {"teacher", "lr", "batch_size", "loss_options", "out"} <= set(schema["properties"])
    assert set(schema["required"]) == {"teacher", "data", "target", "budget_ms"}


def test_every_setting_is_documented():
    from edgekd.pipeline.config import FILE_ONLY, CompressConfig

    text = (Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    missing = [k for k in (*CompressConfig.model_fields, *FILE_ONLY) if f"| `{k}` |" not in text]
    assert not missing, f"docs/CONFIG.md's table lacks {missing}"
