"""Every command's --help carries an example that uses only options the command has, and the
command list shows each description whole (not cut mid-phrase)."""
from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from edgekd.cli.main import COMMANDS, cli


def _help(*args: str) -> str:
    r = CliRunner().invoke(cli, [*args, "--help"], prog_name="edgekd")
    assert r.exit_code == 0, r.output
    return r.output


def _examples(text: str, name: str) -> list[list[str]]:
    """The example command lines under "Example:" (a trailing backslash continues a line)."""
    assert "Example:" in text, f"`edgekd {name} --help` has no example"
    lines, cur = [], ""
    for ln in text.split("Example:", 1)[1].splitlines():
        if not ln.strip():
            continue
        if not ln.startswith("  "):
            break  # the Options: block
        cur += " " + ln.strip().rstrip("\\")
        if not ln.rstrip().endswith("\\"):
            lines.append(cur.split())
            cur = ""
    return lines


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_has_a_working_example(name):
    text = _help(name)
    examples = _examples(text, name)
    assert examples, text
    cmd = cli.get_command(click.Context(cli), name)
    opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
    for words in examples:
        assert words[:2] == ["edgekd", name], words
        used = {w.split("=", 1)[0] for w in words if w.startswith("-")}
        assert used <= opts, f"`edgekd {name}` example uses unknown options {sorted(used - opts)}"


def test_command_list_descriptions_are_whole():
    text = _help()
    listed = dict(re.findall(r"^  ([a-z]+)\s{2,}(.+)$", text.split("Commands:", 1)[1], re.M))
    assert set(listed) == set(COMMANDS)
    for name, desc in listed.items():
        cmd = cli.get_command(click.Context(cli), name)
        assert not desc.endswith("..."), f"{name}: '{desc}' is cut"
        assert desc == cmd.short_help and desc.endswith("."), (name, desc)


@pytest.mark.parametrize("args, incomplete, expect", [
    (["bench", "-t"], "ort", {"ort-cpu", "ort-cpu-int8"}),
    (["compress", "--target"], "openvino-cpu-", {"openvino-cpu-int8"}),
    (["profile", "--family"], "mobile", {"mobilenetv2"}),
])
def test_completion_names_targets_and_families(args, incomplete, expect):
    from click.shell_completion import ShellComplete

    got = {c.value for c in ShellComplete(cli, {}, "edgekd", "_EDGEKD_COMPLETE").get_completions(args, incomplete)}
    assert expect <= got and all(v.startswith(incomplete) for v in got), got
