"""What a hostile checkout, file or cache entry must not be able to do (docs/SECURITY.md)."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest


# ---------------------------------------------------------------------- the umask is only read


def test_umask_is_read_without_being_set(tmp_path, monkeypatch):
    from edgekd import util_io

    old = os.umask(0o027)
    try:
        def no_set(mask):
            raise AssertionError("os.umask called: it sets the mask for every thread")

        monkeypatch.setattr(util_io.os, "umask", no_set)
        assert util_io._umask() == 0o027
        util_io.atomic_write_text(tmp_path / "f.txt", "x")
        assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o640
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_umask_without_proc_is_the_one_read_at_import(monkeypatch, tmp_path):
    from edgekd import util_io

    monkeypatch.setattr(util_io, "_PROC_STATUS", str(tmp_path / "absent"))
    monkeypatch.setattr(util_io, "_IMPORT_UMASK", 0o077)
    monkeypatch.setattr(util_io.os, "umask", lambda m: pytest.fail("os.umask called"))
    assert util_io._umask() == 0o077


# ---------------------------------------------------------------------- a hostile ./targets

HOSTILE_TARGET = """\
name: ort-cpu
runtime: onnxruntime
remote:
  host: 127.0.0.1
  port: 9
  connect_timeout_s: 2
  known_hosts_file: {root}/known_hosts
  ssh_options: {{ProxyCommand: "touch {marker}"}}
"""


def _hostile_checkout(tmp_path):
    (tmp_path / "targets").mkdir()
    marker = tmp_path / "proxycommand-ran"
    (tmp_path / "targets" / "ort-cpu.yaml").write_text(HOSTILE_TARGET.format(root=tmp_path, marker=marker))
    return marker


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("edgekd: ")]


def test_hostile_local_target_cannot_run_a_proxycommand(tmp_path, run_cli):
    marker = _hostile_checkout(tmp_path)
    env = {"EDGEKD_SSH_ALLOW": ""}
    r = run_cli("bench", "mobilenetv2:width=0.25,res=16", "--target", "ort-cpu", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 2, r.stderr
    assert not marker.exists()
    errors = _error_lines(r.stderr)
    assert len(errors) == 1 and "ProxyCommand" in errors[0] and "EDGEKD_SSH_ALLOW" in errors[0], r.stderr
    # ... and it is said that ./targets/ort-cpu.yaml stands in for the shipped ort-cpu
    shadow = [ln for ln in r.stderr.splitlines() if "shadows the shipped" in ln]
    assert len(shadow) == 1 and str(tmp_path / "targets" / "ort-cpu.yaml") in shadow[0]


def test_gate_with_a_hostile_local_target_exits_2_without_running_it(tmp_path, run_cli):
    marker = _hostile_checkout(tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    from edgekd.remote.doctor import tiny_onnx

    tiny_onnx(models / "m.onnx")
    r = run_cli("gate", str(models), "--target", "ort-cpu", "--budget-ms", "5", cwd=tmp_path,
                env={"EDGEKD_SSH_ALLOW": ""})
    assert r.returncode == 2, r.stderr
    assert not marker.exists()
    assert "ProxyCommand" in _error_lines(r.stderr)[-1]


@pytest.mark.skipif(not __import__("shutil").which("ssh"), reason="needs the OpenSSH client")
def test_the_opt_in_is_what_lets_it_run(tmp_path, run_cli):
    """The control: with EDGEKD_SSH_ALLOW=ProxyCommand ssh does run it (so the test above would
    see a regression), and the device is then unreachable (exit 4)."""
    marker = _hostile_checkout(tmp_path)
    r = run_cli("bench", "mobilenetv2:width=0.25,res=16", "--target", "ort-cpu", "--json", cwd=tmp_path,
                env={"EDGEKD_SSH_ALLOW": "ProxyCommand"})
    assert r.returncode == 4, r.stderr
    assert marker.exists()


def test_shipped_names_resolve_to_shipped_files_elsewhere(tmp_path, monkeypatch, caplog):
    from edgekd import targets

    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="edgekd.targets"):  # whatever an earlier test left
        assert targets.load_target("ort-cpu").remote is None
    assert not [r for r in caplog.records if "shadows" in r.getMessage()]


# ---------------------------------------------------------------------- ssh options


@pytest.mark.parametrize("option", ["ProxyCommand", "proxycommand", "LocalCommand", "PermitLocalCommand",
                                    "KnownHostsCommand", "ProxyJump", "Include", "Match", "ControlPath",
                                    "ForwardAgent", "SendEnv", "SetEnv", "PKCS11Provider",
                                    "SecurityKeyProvider", "LocalForward", "RemoteForward", "XAuthLocation"])
def test_ssh_options_outside_the_allow_list_are_refused(option, monkeypatch):
    from edgekd.errors import BadInputError
    from edgekd.remote.ssh import SSHTarget
    from edgekd.targets import RemoteSpec

    monkeypatch.delenv("EDGEKD_SSH_ALLOW", raising=False)
    s = SSHTarget(RemoteSpec(host="dev", ssh_options={option: "x"}), "t", "t.yaml")
    with pytest.raises(BadInputError) as ei:
        s.ssh_argv()
    msg = ei.value.one_line()
    assert option in msg and "EDGEKD_SSH_ALLOW" in msg and "t.yaml" in msg and "\n" not in msg


def test_ssh_opt_in_names_each_option(monkeypatch):
    from edgekd.errors import BadInputError
    from edgekd.remote.ssh import SSHTarget
    from edgekd.targets import RemoteSpec

    spec = RemoteSpec(host="dev", ssh_options={"ProxyJump": "gw", "ControlPath": "~/.ssh/cm-%C"})
    monkeypatch.setenv("EDGEKD_SSH_ALLOW", "proxyjump")
    with pytest.raises(BadInputError, match="ControlPath"):
        SSHTarget(spec, "t").ssh_argv()
    monkeypatch.setenv("EDGEKD_SSH_ALLOW", "ProxyJump, ControlPath")
    argv = SSHTarget(spec, "t").ssh_argv()
    assert "ProxyJump=gw" in argv and "ControlPath=~/.ssh/cm-%C" in argv


def test_connection_settings_pass_and_fields_are_not_overridden(monkeypatch):
    from edgekd.errors import BadInputError
    from edgekd.remote.ssh import SSHTarget
    from edgekd.targets import RemoteSpec

    monkeypatch.delenv("EDGEKD_SSH_ALLOW", raising=False)
    ok = SSHTarget(RemoteSpec(host="dev", ssh_options={"ServerAliveInterval": "5", "Ciphers": "aes128-ctr",
                                                       "Compression": "yes"}), "t")
    argv = ok.ssh_argv()
    assert "ServerAliveInterval=5" in argv and "Ciphers=aes128-ctr" in argv
    for key, field in (("Port", "remote.port"), ("Hostname", "remote.host"), ("BatchMode", "BatchMode=yes"),
                       ("UserKnownHostsFile", "remote.known_hosts_file"), ("RemoteCommand", "remote.command")):
        with pytest.raises(BadInputError, match=field.replace(".", r"\.")):
            SSHTarget(RemoteSpec(host="dev", ssh_options={key: "x"}), "t").ssh_argv()
    # a safe option cannot smuggle a second one in its value
    with pytest.raises(BadInputError, match="spaces, quotes"):
        SSHTarget(RemoteSpec(host="dev", ssh_options={"Compression": "yes ProxyCommand=touch x"}),
                  "t").ssh_argv()


@pytest.mark.parametrize("remote", [
    {"host": "h$(touch x)"}, {"host": "h;id"}, {"host": "`id`"}, {"host": "h", "user": "u$(id)"},
    {"host": "h", "ssh_options": {"Compression": "yes\nProxyCommand touch x"}},
    {"host": "h", "known_hosts_file": "~/.bashrc"},
])
def test_remote_fields_refuse_shell_characters(remote):
    from edgekd.errors import BadInputError
    from edgekd.targets import target_from_dict

    with pytest.raises(BadInputError) as ei:
        target_from_dict({"name": "x", "runtime": "onnxruntime", "remote": remote})
    assert "remote." in str(ei.value) and "\n" not in str(ei.value)


# ---------------------------------------------------------------------- target names are slugs


@pytest.mark.parametrize("name", ["../../x", "a/b", "a\\b", ".hidden", "UPPER", "-x", "", "a b", "x" * 101])
def test_target_names_must_be_slugs(tmp_path, name):
    import yaml

    from edgekd.errors import BadInputError
    from edgekd.targets import load_target

    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump({"name": name, "runtime": "onnxruntime"}))
    with pytest.raises(BadInputError) as ei:
        load_target(str(p))
    msg = str(ei.value)
    assert msg.startswith(f"invalid target {p}: name: ") and "lowercase letters" in msg and "\n" not in msg


def test_a_file_name_that_is_no_slug_says_to_set_name(tmp_path):
    from edgekd.errors import BadInputError
    from edgekd.targets import load_target

    p = tmp_path / "My Board.yaml"
    p.write_text("runtime: onnxruntime\n")
    with pytest.raises(BadInputError, match="set name:"):
        load_target(str(p))
    p.write_text("name: my-board\nruntime: onnxruntime\n")
    assert load_target(str(p)).name == "my-board"


def test_compress_with_a_traversing_target_name_writes_nothing_outside_out(tmp_path, run_cli):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: ../../escaped\nruntime: onnxruntime\nthreads: 1\n")
    out = tmp_path / "a" / "b" / "out"
    r = run_cli("compress", "--teacher", "resnet:width=0.25", "--data", "digits", "--target", str(evil),
                "--budget-ms", "1", "--out", str(out))
    assert r.returncode == 2, r.stderr
    assert "name: " in _error_lines(r.stderr)[-1]
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "a" / "escaped").exists()


# ---------------------------------------------------------------------- manifests wherever a file is used

QUICK = ("--min-iters", "10", "--min-time", "0", "--warmup", "0")


@pytest.fixture
def compress_out(tmp_path):
    """A compress output as compress leaves it: state.json, a model under <target>/, the torch
    student, and a manifest.json listing them."""
    import json

    from edgekd.manifest import write_manifest
    from edgekd.pipeline.state import STATE_SCHEMA
    from edgekd.remote.doctor import tiny_onnx

    out = tmp_path / "out"
    (out / "ort-cpu").mkdir(parents=True)
    (out / "state.json").write_text(json.dumps({"schema": STATE_SCHEMA}))
    model = tiny_onnx(out / "ort-cpu" / "model.onnx")
    student = out / "student.pt"
    student.write_bytes(b"not really a checkpoint")
    write_manifest(out, [(model, "export artifact (ort-cpu)"), (student, "torch student")], config={},
                   target={}, data_fingerprint=None, created="now")
    return out


def _tamper(p):
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))


def test_state_schema_is_the_one_the_manifest_check_knows():
    from edgekd.manifest import STATE_NAME, STATE_SCHEMA_PREFIX
    from edgekd.pipeline.state import STATE, STATE_SCHEMA

    assert STATE == STATE_NAME and STATE_SCHEMA.startswith(STATE_SCHEMA_PREFIX)


def test_bench_refuses_a_changed_file_from_a_compress_output(compress_out, run_cli):
    model = compress_out / "ort-cpu" / "model.onnx"
    assert run_cli("bench", model, "--json", *QUICK).returncode == 0
    _tamper(model)
    r = run_cli("bench", model, "--json", *QUICK)
    assert r.returncode == 2 and "does not match" in r.stderr and "manifest.json" in r.stderr
    assert len(_error_lines(r.stderr)) == 1


def test_python_bench_refuses_it_too(compress_out):
    from edgekd.errors import BadInputError
    from edgekd.latency.bench import bench

    _tamper(compress_out / "ort-cpu" / "model.onnx")
    with pytest.raises(BadInputError, match="does not match"):
        bench(compress_out / "ort-cpu" / "model.onnx", "ort-cpu")


def test_gate_refuses_it_before_measuring(compress_out, run_cli, tmp_path):
    model = compress_out / "ort-cpu" / "model.onnx"
    _tamper(model)
    r = run_cli("gate", model, "--target", "ort-cpu", "--budget-ms", "5")
    assert r.returncode == 2 and "does not match" in _error_lines(r.stderr)[-1]
    prof = tmp_path / "p.json"
    prof.write_text("{}")
    r = run_cli("gate", model, "--target", "ort-cpu", "--budget-ms", "5", "--predict-only", "--profile", prof)
    assert r.returncode == 2 and "does not match" in _error_lines(r.stderr)[-1]


def test_export_refuses_it(compress_out, tmp_path):
    from edgekd.deploy import export_ref
    from edgekd.errors import BadInputError
    from edgekd.targets import load_target

    _tamper(compress_out / "ort-cpu" / "model.onnx")
    with pytest.raises(BadInputError, match="does not match"):
        export_ref(str(compress_out / "ort-cpu" / "model.onnx"), load_target("ort-cpu"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_quantize_refuses_it(compress_out, tmp_path):
    from edgekd.errors import BadInputError
    from edgekd.quantize import quantize_ref

    _tamper(compress_out / "ort-cpu" / "model.onnx")
    with pytest.raises(BadInputError, match="does not match"):
        quantize_ref(compress_out / "ort-cpu" / "model.onnx", "ort-cpu-int8", "digits", tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_verify_checks_the_reference_against_the_manifest(compress_out):
    from edgekd.errors import BadInputError
    from edgekd.verify import verify_artifact

    _tamper(compress_out / "student.pt")
    with pytest.raises(BadInputError, match="student.pt does not match"):
        verify_artifact(compress_out / "ort-cpu" / "model.onnx", "ort-cpu", "digits",
                        reference=compress_out / "student.pt")


def test_a_deleted_manifest_is_said_once(compress_out, run_cli):
    model = compress_out / "ort-cpu" / "model.onnx"
    (compress_out / "manifest.json").unlink()
    r = run_cli("bench", model, "--json", *QUICK)
    assert r.returncode == 0, r.stderr
    said = [ln for ln in r.stderr.splitlines() if "has no manifest.json" in ln]
    assert len(said) == 1 and str(compress_out / "state.json") in said[0]


def test_said_once_per_file_and_unlisted_files_too(compress_out, caplog):
    import logging

    from edgekd.manifest import check_against_manifest
    from edgekd.remote.doctor import tiny_onnx

    stray = tiny_onnx(compress_out / "ort-cpu" / "stray.onnx")
    with caplog.at_level(logging.WARNING, logger="edgekd.manifest"):
        assert check_against_manifest(stray) is None
        assert check_against_manifest(stray) is None
    said = [r.getMessage() for r in caplog.records if "not listed" in r.getMessage()]
    assert len(said) == 1


def test_a_state_json_of_someone_else_is_no_compress_output(tmp_path, caplog):
    import logging

    from edgekd.manifest import check_against_manifest
    from edgekd.remote.doctor import tiny_onnx

    (tmp_path / "state.json").write_text('{"schema": "other/v1"}')
    m = tiny_onnx(tmp_path / "m.onnx")
    with caplog.at_level(logging.WARNING, logger="edgekd.manifest"):
        assert check_against_manifest(m) is None
    assert not caplog.records


# ---------------------------------------------------------------------- caches and ./profiles


class _Teacher:
    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        import torch

        self.calls += 1
        return torch.stack([x.mean(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))], dim=1)


def _dataset(n=12):
    import torch

    g = torch.Generator().manual_seed(0)
    return [(torch.rand(1, 4, 4, generator=g), i % 2) for i in range(n)]


def test_a_cache_entry_whose_bytes_changed_is_recomputed(tmp_path, caplog):
    import numpy as np
    import torch

    from edgekd.distill.cache import teacher_logit_cache

    data, teacher = _dataset(), _Teacher()
    kw = dict(teacher_fingerprint="t", data_fingerprint="d", root=tmp_path)
    first = teacher_logit_cache(teacher, data, **kw)
    rec = first.path.with_suffix(".json").read_text()
    assert '"sha256"' in rec and teacher_logit_cache(teacher, data, **kw).hit
    # a well-formed array of the right shape, other numbers: planted, not computed from this teacher
    with open(first.path, "wb") as f:
        np.save(f, np.zeros(tuple(first.logits.shape), np.float32), allow_pickle=False)
    with caplog.at_level(logging.WARNING, logger="edgekd.distill.cache"):  # whatever an earlier test left
        again = teacher_logit_cache(teacher, data, **kw)
    assert not again.hit and torch.equal(again.logits, first.logits)
    assert any("does not match the sha256" in r.getMessage() for r in caplog.records)
    assert teacher_logit_cache(teacher, data, **kw).hit  # the recomputed entry is good again


def test_a_cache_entry_without_its_record_or_with_another_is_recomputed(tmp_path):
    import json

    from edgekd.distill.cache import teacher_logit_cache

    data, teacher = _dataset(), _Teacher()
    kw = dict(teacher_fingerprint="t", data_fingerprint="d", root=tmp_path)
    first = teacher_logit_cache(teacher, data, **kw)
    first.path.with_suffix(".json").unlink()
    assert not teacher_logit_cache(teacher, data, **kw).hit
    rec = json.loads(first.path.with_suffix(".json").read_text())
    first.path.with_suffix(".json").write_text(json.dumps({**rec, "teacher": "someone else"}))
    assert not teacher_logit_cache(teacher, data, **kw).hit
    assert teacher_logit_cache(teacher, data, **kw).hit


def test_a_local_profile_that_shadows_a_shipped_one_is_said_once(tmp_path, monkeypatch, caplog):
    import logging

    from edgekd.pipeline import plan

    shipped = plan.locate_profile("ort-cpu", "mobilenetv2")
    assert shipped is not None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").mkdir()
    local = tmp_path / "profiles" / "ort-cpu-mobilenetv2.json"
    local.write_text("{}")
    with caplog.at_level(logging.WARNING, logger="edgekd.pipeline.plan"):
        assert plan.locate_profile("ort-cpu", "mobilenetv2").resolve() == local.resolve()
        plan.locate_profile("ort-cpu", "mobilenetv2")
    said = [r.getMessage() for r in caplog.records if "shadows the shipped" in r.getMessage()]
    assert len(said) == 1 and str(shipped.resolve()) in said[0]
    # a local profile of a name edgekd does not ship is just used
    (tmp_path / "profiles" / "my-board-convnet.json").write_text("{}")
    caplog.clear()
    assert plan.locate_profile("my-board", "convnet") is not None and not caplog.records


# ---------------------------------------------------------------------- files that hold code


def _scripted_writer(path, victim):
    """A TorchScript model that, when run, overwrites VICTIM through a shared mapping: what any
    TorchScript (or .pt2) file can do to the files of whoever runs it."""
    import torch

    class Writer(torch.nn.Module):
        def __init__(self, target: str):
            super().__init__()
            self.target = target

        def forward(self, x):
            t = torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8)
            t.fill_(65)
            return x.flatten(1)[:, :2] + t.sum().float()

    torch.jit.save(torch.jit.script(Writer(str(victim))), str(path))
    return path


def test_torchscript_can_write_files_so_bench_needs_the_opt_in(tmp_path, run_cli):
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"zzzz")
    model = _scripted_writer(tmp_path / "m.ts", victim)
    args = ("bench", model, "--target", "torch-cpu", "--shape", "1,2,2", "--json", *QUICK)
    r = run_cli(*args)
    assert r.returncode == 2 and victim.read_bytes() == b"zzzz"
    errors = _error_lines(r.stderr)
    assert len(errors) == 1 and "TorchScript" in errors[0] and "--trust-code" in errors[0]
    assert run_cli(*args, "--trust-code").returncode == 0
    assert victim.read_bytes() == b"AAAA"  # the proof that it runs code: only with the opt-in


def test_pt2_and_export_take_the_opt_in_and_its_alias(tmp_path, run_cli):
    import torch

    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    ep = torch.export.export(m, (torch.zeros(1, 1, 2, 2),))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    args = ("bench", tmp_path / "m.pt2", "--target", "torch-cpu", "--shape", "1,2,2", "--json", *QUICK)
    r = run_cli(*args)
    assert r.returncode == 2 and "torch.export program" in _error_lines(r.stderr)[0]
    r = run_cli(*args, "--trust-pickle")  # the alias: past the refusal (what torch then says is its own)
    assert "running it runs the code" not in r.stderr
    r = run_cli("export", tmp_path / "m.pt2", "--target", "ort-cpu", "--out", tmp_path / "o", "--shape", "1,2,2")
    assert r.returncode == 2 and "--trust-code" in r.stderr and not (tmp_path / "o").exists()
    from edgekd.models.ref import load_torch_file

    assert load_torch_file(tmp_path / "m.pt2", trust=True)[1] == "torch-export"


def test_library_loads_take_the_same_opt_in(tmp_path):
    import torch

    from edgekd.errors import BadInputError
    from edgekd.models.ref import load_module, load_torch_file, trust_code
    from edgekd.models.teacher import load_teacher

    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    ts = tmp_path / "m.pt"  # the kind comes from the contents, not the name
    torch.jit.save(torch.jit.trace(m, torch.zeros(1, 1, 2, 2)), str(ts))
    for load in (lambda: load_torch_file(ts), lambda: load_module(str(ts), (1, 2, 2)),
                 lambda: load_teacher(str(ts))):
        with pytest.raises(BadInputError, match="--trust-code"):
            load()
    with trust_code():
        assert load_torch_file(ts)[1] == "torchscript"
        assert load_teacher(str(ts)).kind == "torchscript"
    assert load_torch_file(ts, trust=True)[1] == "torchscript"
    with pytest.raises(BadInputError):  # the block is over: refused again
        load_torch_file(ts)


def test_files_this_process_wrote_load_back_without_the_opt_in(tmp_path):
    import torch

    from edgekd.backends.torch import save_torchscript
    from edgekd.errors import BadInputError
    from edgekd.models.ref import load_torch_file
    from edgekd.targets import load_target

    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    art = save_torchscript(m, torch.zeros(1, 1, 2, 2), tmp_path / "model.ts", load_target("torch-cpu"))
    assert load_torch_file(art.path)[1] == "torchscript"
    other = tmp_path / "other.ts"
    torch.jit.save(torch.jit.trace(torch.nn.Flatten(), torch.zeros(1, 1, 2, 2)), str(other))
    with pytest.raises(BadInputError, match="--trust-code"):
        load_torch_file(other)  # not ours: other bytes


def test_pickled_teachers_say_torchscript_needs_the_opt_in_too(tmp_path):
    import torch

    from edgekd.errors import BadInputError
    from edgekd.models.teacher import load_teacher

    torch.save(torch.nn.Linear(4, 3), tmp_path / "whole.pt")
    with pytest.raises(BadInputError) as ei:
        load_teacher(str(tmp_path / "whole.pt"))
    msg = str(ei.value)
    assert "--trust-code" in msg and "TorchScript and .pt2 files hold code too" in msg


def test_remote_runs_get_the_opt_in_only_for_files_allowed_here(tmp_path):
    import torch

    from edgekd.models.ref import trust_code
    from edgekd.remote.doctor import tiny_onnx
    from edgekd.remote.ops import trust_args

    ts = tmp_path / "m.ts"
    torch.jit.save(torch.jit.trace(torch.nn.Flatten(), torch.zeros(1, 1, 2, 2)), str(ts))
    onnx = tiny_onnx(tmp_path / "m.onnx")
    assert trust_args(ts) == [] and trust_args(onnx) == [] and trust_args("mobilenetv2:width=0.5") == []
    with trust_code():
        assert trust_args(ts) == ["--trust-code"] and trust_args(onnx) == []
