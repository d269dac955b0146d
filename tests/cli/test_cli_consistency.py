"""The CLI speaks one language: a long option has the same short option on every command, --metric
offers the same set everywhere it judges measured latency, and each metric offered is judged."""
from __future__ import annotations

import click
import pytest

from edgekd.cli.main import cli
from edgekd.verdict import METRICS, PREDICTED_METRICS

# The short option every command that has the long one must carry.
SHORTS = {"--target": "-t", "--out": "-o", "--data": "-d", "--family": "-f"}


def _commands():
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        assert cmd is not None, name
        yield name, cmd


def _options(cmd: click.Command):
    for p in cmd.params:
        if isinstance(p, click.Option):
            longs = [o for o in p.opts + p.secondary_opts if o.startswith("--")]
            shorts = [o for o in p.opts + p.secondary_opts if not o.startswith("--")]
            yield p, longs, shorts


def test_a_long_option_has_the_same_short_option_on_every_command():
    seen: dict[str, dict[str, tuple[str, ...]]] = {}
    for name, cmd in _commands():
        for _p, longs, shorts in _options(cmd):
            for lo in longs:
                seen.setdefault(lo, {})[name] = tuple(sorted(shorts))
    mismatched = {lo: by_cmd for lo, by_cmd in seen.items() if len(set(by_cmd.values())) > 1}
    assert not mismatched, f"long options with different short options by command: {mismatched}"
    for lo, short in SHORTS.items():
        assert seen.get(lo), f"no command has {lo}"
        assert all(short in s for s in seen[lo].values()), (lo, seen[lo])


def test_a_short_option_means_one_long_option():
    meaning: dict[str, set[str]] = {}
    for _name, cmd in _commands():
        for _p, longs, shorts in _options(cmd):
            for s in shorts:
                meaning.setdefault(s, set()).add(longs[0] if longs else s)
    assert all(len(v) == 1 for v in meaning.values()), meaning


def _metric_choices():
    out = {}
    for name, cmd in _commands():
        for p, longs, _ in _options(cmd):
            if "--metric" in longs:
                assert isinstance(p.type, click.Choice), name
                out[name] = tuple(p.type.choices)
    return out


def test_metric_sets():
    choices = _metric_choices()
    assert {"gate", "prune", "verify", "select", "compress"} <= set(choices)
    # measured latency (gate, prune, verify): every metric; predicted (select, compress): what a profile predicts
    for name in ("gate", "prune", "verify"):
        assert choices[name] == METRICS, (name, choices[name])
    for name in ("select", "compress"):
        assert choices[name] == PREDICTED_METRICS, (name, choices[name])


@pytest.mark.parametrize("metric", METRICS)
def test_verify_judges_every_metric_it_accepts(metric):
    from edgekd.latency.stats import LatencyStats
    from edgekd.verify.report import latency_verdict

    import numpy as np

    samples = np.linspace(1.0, 2.0, 400)
    stats = LatencyStats.from_samples(samples)
    value = stats.metric(metric)
    assert latency_verdict(stats, value * 3, metric).upper() == "PASS"
    assert latency_verdict(stats, value / 3, metric).upper() == "FAIL"



def test_profile_out_is_a_folder_and_the_old_file_form_still_works(tmp_path, capsys):
    from edgekd.cli.profile import profile_out

    assert profile_out(str(tmp_path / "profiles"), "mobilenetv2", "ort-cpu") == str(
        tmp_path / "profiles" / "ort-cpu-mobilenetv2.json")
    assert "deprecated" not in capsys.readouterr().err
    assert profile_out(str(tmp_path / "p.json"), "convnet", "ort-cpu") == str(tmp_path / "p.json")
    assert "deprecated" in capsys.readouterr().err
    existing = tmp_path / "old-profile"
    existing.write_text("{}")
    assert profile_out(str(existing), "convnet", "ort-cpu") == str(existing)
    assert "give a folder" in capsys.readouterr().err
    # several targets: remote.profile fills '{target}' in per target
    assert profile_out(str(tmp_path), "resnet", "{target}").endswith("{target}-resnet.json")


def test_resolution_is_spelled_the_same_on_bench_and_export():
    from edgekd.cli.common import sample_shape
    from edgekd.errors import BadInputError

    assert sample_shape(None, 16, 3) == (3, 16, 16)
    assert sample_shape("1,8,12", None, 3) == (1, 8, 12)
    assert sample_shape(None, None, 1) is None
    with pytest.raises(BadInputError, match="--resolution"):
        sample_shape("1,8,8", 8, 1)
    with_resolution = {name for name, cmd in _commands()
                       if any("--resolution" in longs for _p, longs, _s in _options(cmd))}
    assert {"bench", "export", "distill", "compress", "prune", "verify"} <= with_resolution


def test_shape_and_resolution_together_is_a_one_line_error(run_cli, tmp_path):
    r = run_cli("export", "convnet:width=4,depth=1,res=8", "-t", "ort-cpu", "-o", tmp_path / "e",
                "--shape", "1,8,8", "--resolution", "8")
    assert r.returncode == 2 and "--resolution" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("metric,budget,code", [("p99", 1000.0, 0), ("mean", 1e-6, 1)])
def test_verify_cli_holds_the_budget_to_the_metric_asked(tiny_assets, tmp_path, metric, budget, code):
    import contextlib
    import io
    import json

    from edgekd.cli.main import main

    fast = tiny_assets / "fast-cpu.yaml"

    def run(*args):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
            rc = main([str(a) for a in args])
        return rc, buf.getvalue()

    assert run("export", "convnet:width=4,depth=1,res=8", "-t", "ort-cpu", "-o", tmp_path / "e")[0] == 0
    rc, out = run("verify", tmp_path / "e" / "model.onnx", "-t", fast, "-d", "digits", "--resolution", "8",
                  "--budget-ms", budget, "--metric", metric, "--json")
    doc = json.loads(out)
    assert rc == code and doc["metric"] == metric, (rc, doc)
    lat = [c for c in doc["checks"] if c["name"] == "latency"]
    assert lat and lat[0]["value"] == pytest.approx(doc["latency_ms"][metric]), doc
