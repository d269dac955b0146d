"""Every command's --json is one envelope: `schema` ("edgekd.<command>/vN"), `verdict` in one
spelling where the command has one, and the latency block under one name (`latency_ms`, its
interval `<metric>_ci`), with the command's own keys beside them. Each command runs once, in
this process, on tiny inputs."""
from __future__ import annotations

import json
import re

import pytest

from edgekd.cli.common import envelope
from edgekd.cli.main import COMMANDS, main

SPEC8 = "convnet:width=8,depth=2,res=8"
SPEC16 = "convnet:width=8,depth=2,res=16"
VERDICTS = {"PASS", "FAIL", "INCONCLUSIVE"}


@pytest.fixture(scope="module")
def outputs(tiny_assets, tmp_path_factory):
    """command -> its --json document (a module fixture: each command runs once)."""
    import contextlib
    import io

    root, tmp = tiny_assets, tmp_path_factory.mktemp("envelope")
    fast, teacher = root / "fast-cpu.yaml", root / "teacher.pt"
    (tmp / "grid.txt").write_text("convnet:width=4,depth=1,res=8\n")
    docs: dict[str, dict] = {}

    def run(name, *args, ok=(0,)):
        buf, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
            code = main([str(a) for a in (name, *args, "--json")])
        assert code in ok, (name, code, err.getvalue()[-2000:])
        docs[name] = json.loads(buf.getvalue())  # stdout is the one JSON object, nothing else
        return docs[name]

    run("targets")
    run("doctor", "-t", "ort-cpu")
    run("bench", SPEC8, "-t", fast)
    run("export", SPEC8, "-t", "ort-cpu", "--out", tmp / "exp")
    onnx = tmp / "exp" / "model.onnx"
    run("select", "--profile", "profiles/ort-cpu-mobilenetv2.json", "--budget-ms", "0.3")
    run("gate", onnx, "-t", fast, "--budget-ms", "1000")
    run("verify", onnx, "-t", fast, "--data", "digits", "--resolution", "8", "--budget-ms", "1000")
    run("quantize", onnx, "-t", "ort-cpu-int8", "--data", "digits", "--calib-size", "32",
        "--val-size", "40", "--rounds", "1", "--out", tmp / "q", ok=(0, 1))
    run("distill", "--teacher", teacher, "--student", SPEC16, "--data", "digits", "--epochs", "1",
        "--out", tmp / "dist")
    run("train", "--model", "convnet:width=4,depth=1,res=16", "--data", "digits", "--epochs", "1",
        "--out", tmp / "train")
    run("prune", tmp / "dist" / "student.pt", "--teacher", teacher, "--data", "digits", "--ratio", "0.3",
        "--epochs", "0", "--round-to", "4", "--out", tmp / "pruned")
    run("profile", "-t", fast, "--family", "convnet", "--grid", tmp / "grid.txt", "--out", tmp / "p.json",
        "--min-time", "0.02", "--block-min-time", "0.01")
    run("compress", "--teacher", teacher, "--data", "digits", "-t", fast, "--budget-ms", "50",
        "--student", SPEC16, "--epochs", "1", "--dry-run")
    # calibrate stores its figures in a cache of its own, so no other test sees a calibration
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEKD_CACHE_DIR", str(tmp / "cache"))
    try:
        run("calibrate", "-t", fast, "--min-time", "0.05")
    finally:
        mp.undo()
    import os
    if os.environ.get("EDGEKD_SHOW_ENVELOPES"):
        for k, d in docs.items():
            print(k, {kk: (vv if not isinstance(vv, (dict, list)) else type(vv).__name__) for kk, vv in d.items()})
    return docs


def test_every_json_command_is_covered(outputs):
    import click

    from edgekd.cli.main import cli

    ctx = click.Context(cli)
    with_json = {n for n in COMMANDS if any("--json" in p.opts for p in cli.get_command(ctx, n).params)}
    assert with_json == set(outputs), "a command with --json has no envelope check here"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_envelope(outputs, command):
    if command not in outputs:
        pytest.skip(f"{command} has no --json")
    doc = outputs[command]
    assert re.fullmatch(r"edgekd\.[a-z-]+/v\d+", doc["schema"]), doc["schema"]
    assert list(doc)[0] == "schema"
    if command not in ("profile", "calibrate"):  # their own schema names the file they write
        assert doc["schema"].startswith(f"edgekd.{command}")
    if "verdict" in doc:
        assert doc["verdict"] in VERDICTS
    for key in ("passed", "ok", "met"):  # a pass/fail flag always comes with the verdict
        assert key not in doc or doc["verdict"] == ("PASS" if doc[key] else "FAIL")
    if "latency" in doc or "decision" in doc or "stats" in doc:
        assert "latency_ms" in doc
    if "latency_ms" in doc:
        lat = doc["latency_ms"]
        assert any(k.endswith("_ci") and len(v) == 2 for k, v in lat.items()), lat


@pytest.mark.parametrize("command, verdict", [("verify", "PASS"), ("gate", "PASS"), ("doctor", "PASS"),
                                              ("prune", "PASS")])
def test_the_verdict_is_one_spelling(outputs, command, verdict):
    assert outputs[command]["verdict"] == verdict


def test_latency_has_one_name(outputs):
    for command in ("bench", "verify", "calibrate"):
        lat = outputs[command]["latency_ms"]
        assert lat["p90_ci"][0] <= lat["p90"] and lat["n"] > 0
    row = outputs["gate"]["results"][0]
    assert row["latency_ms"]["p90_ci"] == row["decision"]["ci"]
    assert outputs["verify"]["latency_ms"] == outputs["verify"]["latency"]  # the old key stays


def test_envelope_rules():
    assert envelope({"verdict": "inconclusive", "x": 1}, "verify") == {
        "schema": "edgekd.verify/v1", "verdict": "INCONCLUSIVE", "x": 1}
    assert envelope({"schema": "edgekd.gate/v1", "results": [{"status": "PASS"}, {"status": "FAIL"}]},
                    "gate")["verdict"] == "FAIL"
    assert envelope({"results": [{"status": "PASS"}, {"status": "ERROR"}]}, "gate")["verdict"] == "INCONCLUSIVE"
    assert envelope({"ok": False}, "doctor")["verdict"] == "FAIL"
    assert "verdict" not in envelope({"targets": []}, "targets")
    assert envelope([1, 2], "x") == {"schema": "edgekd.x/v1", "result": [1, 2]}
    d = envelope({"decision": {"metric": "p50", "value": 1.0, "ci": [0.9, 1.1], "n": 10}}, "gate")
    assert d["latency_ms"] == {"p50": 1.0, "p50_ci": [0.9, 1.1], "n": 10}
    assert envelope({"value": float("nan")}, "x")["value"] is None
    run = envelope({"verdict": "fail", "verify": {"latency": {"p90": 2.0, "p90_ci": [1.9, 2.1]}}}, "compress")
    assert run["verdict"] == "FAIL" and run["latency_ms"]["p90_ci"] == [1.9, 2.1]
