"""Remote targets over SSH, against real sshd instances on 127.0.0.1.

Each "device" is an sshd with a throw-away host key and user key made here; its edgekd is this
same venv's `python -m edgekd`. A sitecustomize sent through remote.env makes the device report
its own host name, so a result carrying that name proves the device ran it.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

SSHD = "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("ssh-keygen")),
                                reason="needs OpenSSH: /usr/sbin/sshd, ssh and ssh-keygen "
                                       "(apt-get install openssh-server)")

SITE = """\
import os
import socket

_name = os.environ.get("EDGEKD_TEST_DEVICE_NAME")
if _name:
    socket.gethostname = lambda: _name
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class Lab:
    """Keys, sshd instances and target YAMLs, all under one temp directory."""

    def __init__(self, root: Path):
        self.root = root
        self.host_key = _keygen(root / "host_key")
        self.user_key = _keygen(root / "user_key")
        self.other_key = _keygen(root / "other_key")  # never authorized
        (root / "authorized_keys").write_text((root / "user_key.pub").read_text())
        (root / "site").mkdir()
        (root / "site" / "sitecustomize.py").write_text(SITE)
        self.procs: list[subprocess.Popen] = []
        self.user = os.environ.get("USER") or __import__("getpass").getuser()

    def start(self, name: str) -> int:
        # SHLVL=1: bash, the login shell of most users, then skips ~/.bashrc for ssh commands
        # (which it sources when run by sshd at level 1), so each session costs what sshd and
        # edgekd do, not what this machine's interactive shell setup does (pyenv init: ~0.3 s).
        port = _free_port()
        cfg = self.root / f"sshd_{name}.conf"
        cfg.write_text(textwrap.dedent(f"""\
            Port {port}
            ListenAddress 127.0.0.1
            HostKey {self.host_key}
            PidFile {self.root}/sshd_{name}.pid
            AuthorizedKeysFile {self.root}/authorized_keys
            UsePAM no
            StrictModes no
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PubkeyAuthentication yes
            PermitRootLogin prohibit-password
            LogLevel ERROR
            SetEnv SHLVL=1
            """))
        p = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        while True:  # until it listens (or dies)
            if p.poll() is not None:
                pytest.skip(f"sshd did not start: {p.stderr.read().strip()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return port
            except OSError:
                time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def target(self, name: str, port: int, *, device: str | None = None, runtime: str = "onnxruntime",
               key: Path | None = None, command: str | None = None, env: dict | None = None,
               **remote) -> Path:
        e = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(self.root / "site"),
             "EDGEKD_TEST_DEVICE_NAME": device or f"device-{name}"}
        e.update(env or {})
        data = {
            "name": name, "runtime": runtime, "threads": 1,
            "measure": {"warmup_s": 0.0, "warmup_iters": 1, "min_iters": 10, "min_time_s": 0.0},
            "remote": {"host": "127.0.0.1", "port": port, "user": self.user,
                       "identity_file": str(key or self.user_key),
                       "command": command or f"{sys.executable} -m edgekd",
                       "workdir": str(self.root / f"wd-{name}"),
                       "known_hosts_file": str(self.root / "known_hosts"),
                       "connect_timeout_s": 5, "command_timeout_s": 300, "env": e, **remote},
        }
        p = self.root / f"{name}.yaml"
        p.write_text(yaml.safe_dump(data))
        return p


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        try:  # sshd run as root wants its privilege-separation directory (the service makes it)
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        except OSError as exc:
            pytest.skip(f"sshd needs /run/sshd: {exc}")
    lab = Lab(tmp_path_factory.mktemp("sshlab"))
    lab.port_a = lab.start("a")
    lab.port_b = lab.start("b")
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def tiny(lab) -> Path:
    from edgekd.remote.doctor import tiny_onnx

    return tiny_onnx(lab.root / "tiny.onnx")


@pytest.fixture(scope="module")
def digits_onnx(lab) -> Path:
    """A linear digits classifier (1x1x16x16 -> 10 logits), ridge regression on the train split,
    written with onnx.helper: about 0.9 top-1 on the validation split."""
    import onnx
    from onnx import helper, numpy_helper

    from edgekd.data import load_data
    from edgekd.data import dataset_arrays

    x, y = dataset_arrays(load_data("digits", resolution=16).train)
    a = np.c_[x.reshape(len(x), -1), np.ones(len(x))]
    w = np.linalg.solve(a.T @ a + 0.01 * np.eye(a.shape[1]), a.T @ np.eye(10)[y]).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["xw"]),
         helper.make_node("Add", ["xw", "b"], ["logits"])], "digits_linear",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 1, 16, 16])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 10])],
        initializer=[numpy_helper.from_array(w[:-1], "w"), numpy_helper.from_array(w[-1], "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path = lab.root / "digits_linear.onnx"
    onnx.save(model, str(path))
    return path


def _measure(path: Path, **settings) -> Path:
    """The same target with other measure: settings. Verify wants enough samples for a finite
    p90 bound; the gate a wide instability threshold, since microsecond models jitter on a
    shared machine and these tests are about where things are measured, not how steady it is."""
    d = yaml.safe_load(path.read_text())
    d["measure"].update(settings)
    path.write_text(yaml.safe_dump(d))
    return path


# ---------------------------------------------------------------------- no sshd needed


def test_remote_lines_quote_every_piece(tmp_path):
    from edgekd.remote.ssh import Remote, SSHTarget, rquote
    from edgekd.targets import RemoteSpec

    assert rquote("~/x y") == '"$HOME"/\'x y\''
    assert rquote("/a/$(reboot)") == "'/a/$(reboot)'"
    spec = RemoteSpec(host="dev", command="~/venv/bin/edgekd --x", env={"A": "1; rm -rf /"})
    s = SSHTarget(spec, "t")
    line = s.edgekd_line(["bench", "m;reboot", Remote("~/f g.onnx")])
    assert line == ("env 'A=1; rm -rf /' \"$HOME\"/venv/bin/edgekd --x bench 'm;reboot' \"$HOME\"/'f g.onnx'")
    argv = s.ssh_argv()
    assert "BatchMode=yes" in argv and "StrictHostKeyChecking=accept-new" in argv
    assert any(a.startswith("ConnectTimeout=") for a in argv)
    kh = next(a for a in argv if a.startswith("UserKnownHostsFile="))
    assert kh.endswith(os.path.join("ssh", "known_hosts"))
    assert argv[-2:] == ["--", "dev"]


def test_remote_spec_refuses_option_lookalikes():
    from edgekd.errors import BadInputError
    from edgekd.targets import target_from_dict

    for bad in ({"host": "-oProxyCommand=x"}, {"host": "a b"}, {"host": "h", "user": "-x"},
                {"host": "h", "env": {"A-B": "1"}}, {"host": "h", "strict_host_key_checking": "maybe"}):
        with pytest.raises(BadInputError):
            target_from_dict({"name": "x", "runtime": "onnxruntime", "remote": bad})


def test_profile_out_paths():
    from edgekd.remote.profile import out_path_for

    assert str(out_path_for("p.json", "a", 1)) == "p.json"
    assert str(out_path_for("p.json", "a", 2)) == "p.a.json"
    assert str(out_path_for("profiles/{target}.json", "b", 2)) == os.path.join("profiles", "b.json")


def test_doctor_local_target(run_cli):
    r = run_cli("doctor", "--target", "ort-cpu", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["ok"] and [c["name"] for c in d["checks"]] == ["runtime", "round trip"]


# ---------------------------------------------------------------------- through sshd


def test_bench_runs_on_the_device_and_reuses_the_copy(lab, tiny, run_cli):
    t = lab.target("a", lab.port_a)
    r = run_cli("-v", "bench", tiny, "--target", t, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    env = d["environment"]
    assert env["host"] == "device-a"  # the device's own fingerprint came back
    assert env["remote"]["host"] == "127.0.0.1" and env["remote"]["port"] == lab.port_a
    assert d["latency_ms"]["n"] >= 10 and d["latency_ms"]["p50"] > 0
    files = list((lab.root / "wd-a" / "files").glob("*/tiny.onnx"))
    assert len(files) == 1 and files[0].read_bytes() == tiny.read_bytes()
    assert not list((lab.root / "wd-a").rglob("*.part"))
    mtime = files[0].stat().st_mtime_ns
    tmp = lab.root / "cli-tmp"  # where this run's ssh master puts its socket
    tmp.mkdir()
    r2 = run_cli("-vv", "bench", tiny, "--target", t, "--json", env={"TMPDIR": str(tmp)})
    assert r2.returncode == 0, r2.stderr
    assert "tiny.onnx already on" in r2.stderr and files[0].stat().st_mtime_ns == mtime
    # its sessions shared one connection, which the CLI ended at exit, removing the socket's folder
    assert "one shared connection" in r2.stderr and str(tmp) in r2.stderr
    assert not list(tmp.iterdir())
    if os.path.isdir("/proc"):  # and no master that listened there is left
        assert not [c for c in Path("/proc").glob("[0-9]*/cmdline") if str(tmp) in _read(c)]


def _read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def python_benches(lab, tiny):
    """Two Python `bench` calls in a row on one target whose device name is shell syntax, with
    the ssh sessions they opened (what each was for) and the ssh argv of each."""
    from edgekd import bench, load_target
    from edgekd.remote import ops
    from edgekd.remote.ssh import SSHTarget

    name = "dev $(touch PWNED); x'y"
    t = load_target(lab.target("q", lab.port_a, device=name))
    sessions: list[list] = [[], []]
    argvs: list[list[str]] = []
    run, shared = SSHTarget.run, SSHTarget.shared_argv
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ops, "_probe_cache", {})
        mp.setattr(SSHTarget, "shared_argv", lambda self: argvs.append(shared(self)) or argvs[-1])
        results = []
        for i in range(2):
            mp.setattr(SSHTarget, "run", lambda self, line, _i=i, **kw: sessions[_i].append(kw.get("what"))
                       or run(self, line, **kw))
            results.append(bench(str(tiny), t))
    return name, results, sessions, argvs


def test_a_command_shares_one_connection_and_checks_files_with_the_probe(python_benches):
    from edgekd.remote import share

    name, results, sessions, argvs = python_benches
    assert [r.environment["host"] for r in results] == [name, name]
    # the probe also asked whether the model was there; the target's YAML went with the run
    assert sessions[0] == ["probing the device", "copying tiny.onnx", "bench of tiny.onnx"]
    assert sessions[1] == ["checking files", "bench of tiny.onnx"]  # the probe is kept; the model is there
    paths = {a for argv in argvs for a in argv if a.startswith("ControlPath=")}
    assert len(argvs) == 5 and all("ControlMaster=no" in argv for argv in argvs) and len(paths) == 1
    sock = paths.pop().split("=", 1)[1]
    assert sock in share.masters().values() and os.path.exists(sock)
    assert (os.stat(os.path.dirname(sock)).st_mode & 0o777) == 0o700
    share.close_shared()
    assert not os.path.exists(sock) and sock not in share.masters().values()


def test_users_own_connection_sharing_is_left_alone(lab, tiny, tmp_path, monkeypatch):
    from edgekd import bench, load_target
    from edgekd.remote import share
    from edgekd.remote.ssh import SSHTarget

    argvs = []
    shared = SSHTarget.shared_argv
    monkeypatch.setattr(SSHTarget, "shared_argv", lambda self: argvs.append(shared(self)) or argvs[-1])
    own = tmp_path / "own-cm"
    monkeypatch.setenv("EDGEKD_SSH_ALLOW", "ControlMaster,ControlPath")
    t = load_target(lab.target("own", lab.port_a, ssh_options={"ControlMaster": "auto", "ControlPath": str(own)}))
    assert bench(str(tiny), t).environment["host"] == "device-own"
    assert argvs and all(f"ControlPath={own}" in argv and "ControlMaster=no" not in argv for argv in argvs)
    argvs.clear()
    monkeypatch.setenv("EDGEKD_SSH_SHARE", "0")  # off: every session connects by itself
    assert bench(str(tiny), load_target(lab.target("off", lab.port_a))).environment["host"] == "device-off"
    assert argvs and not any(a.startswith("ControlPath=") for argv in argvs for a in argv)
    # a ControlPath from the user's ssh config (as `ssh -G` reports it) is theirs too
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host dev\n  ControlPath {tmp_path}/%C\n")
    assert share._users_own_path(["ssh", "-F", str(cfg), "--", "dev"]) is True
    assert share._users_own_path(["ssh", "-F", str(cfg), "--", "other"]) is False


def test_python_bench_routes_remote_and_passes_strings_literally(lab, python_benches):
    name, (r, _), _, _ = python_benches
    assert r.environment["host"] == name
    assert len(r.samples_ms) == r.stats.n >= 10
    assert not list(lab.root.rglob("PWNED")) and not Path.home().joinpath("PWNED").exists()


def test_doctor_over_ssh(lab, run_cli):
    t = lab.target("a", lab.port_a)
    r = run_cli("doctor", "--target", t, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    assert [c["name"] for c in d["checks"]] == ["ssh", "edgekd", "runtime", "copy", "round trip"]
    assert all(c["status"] == "ok" for c in d["checks"])
    assert "device-a" in d["checks"][-1]["detail"]


def test_ssh_options_connection_settings_pass_and_commands_never_run(lab, tiny, run_cli):
    ok = lab.target("so", lab.port_a, ssh_options={"ServerAliveInterval": "5", "Compression": "yes"})
    r = run_cli("bench", tiny, "--target", ok, "--json", env={"EDGEKD_SSH_ALLOW": ""})
    assert r.returncode == 0, r.stderr
    marker = lab.root / "local-command-ran"
    for opts in ({"ProxyCommand": f"sh -c 'touch {marker}; exec nc 127.0.0.1 {lab.port_a}'"},
                 {"PermitLocalCommand": "yes", "LocalCommand": f"touch {marker}"},
                 {"KnownHostsCommand": f"/bin/sh -c 'touch {marker}'"}):
        t = lab.target("sx", lab.port_a, ssh_options=opts)
        r = run_cli("bench", tiny, "--target", t, env={"EDGEKD_SSH_ALLOW": ""})
        assert r.returncode == 2, r.stderr
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("edgekd: error:")]
        assert len(err) == 1 and "EDGEKD_SSH_ALLOW" in err[0] and str(t) in err[0]
        assert not marker.exists()


def test_refused_key_exits_4_naming_the_host(lab, tiny, run_cli):
    t = lab.target("k", lab.port_a, key=lab.other_key)
    r = run_cli("bench", tiny, "--target", t)
    assert r.returncode == 4
    assert "127.0.0.1" in r.stderr and "refused" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("doctor", "--target", t)
    assert r.returncode == 4 and "authorized_keys" in r.stdout


def test_closed_port_exits_4(lab, tiny, run_cli):
    t = lab.target("c", _free_port())
    r = run_cli("bench", tiny, "--target", t)
    assert r.returncode == 4 and "connection refused" in r.stderr and "127.0.0.1" in r.stderr


def test_other_edgekd_version_names_both(lab, tiny, run_cli):
    from edgekd import __version__

    fake = lab.root / "old-edgekd"
    fake.write_text("#!/bin/sh\necho 'edgekd, version 0.0.1'\n")
    fake.chmod(0o755)
    r = run_cli("bench", tiny, "--target", lab.target("v", lab.port_a, command=str(fake)))
    assert r.returncode == 4 and "0.0.1" in r.stderr and __version__ in r.stderr


def test_missing_remote_edgekd_and_runtime(lab, tiny, run_cli):
    r = run_cli("bench", tiny, "--target", lab.target("m", lab.port_a, command="/nonexistent/edgekd"))
    assert r.returncode == 4 and "not installed on" in r.stderr
    t = lab.target("trt", lab.port_a, runtime="tensorrt")
    r = run_cli("bench", tiny, "--target", t)
    assert r.returncode == 4 and "tensorrt" in r.stderr and "127.0.0.1" in r.stderr
    r = run_cli("doctor", "--target", t, "--json")
    d = json.loads(r.stdout)
    assert r.returncode == 4
    assert [c["status"] for c in d["checks"]][:3] == ["ok", "ok", "fail"]


def test_interrupted_copy_is_retried_and_never_used_half_written(lab, tiny, tmp_path, monkeypatch):
    from edgekd.errors import RuntimeMissingError
    from edgekd.remote.ops import ssh_for
    from edgekd.remote.ssh import SSHTarget
    from edgekd.targets import load_target

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(300_000))
    ssh = ssh_for(load_target(lab.target("i", lab.port_a)))
    real = SSHTarget._send
    calls = []

    def cut_short(self, local, line, timeout_s):  # the connection drops after half of the bytes
        calls.append(1)
        if len(calls) == 1:
            half = tmp_path / "half"
            half.write_bytes(local.read_bytes()[: local.stat().st_size // 2])
            return real(self, half, line, timeout_s)
        return real(self, local, line, timeout_s)

    monkeypatch.setattr(SSHTarget, "_send", cut_short)
    dest = ssh.push(big)
    assert len(calls) == 2
    assert Path(dest).read_bytes() == big.read_bytes()
    assert not list(Path(dest).parent.glob(".*.part"))

    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(1000))
    calls.clear()
    with pytest.raises(RuntimeMissingError, match="failed 1 times"):
        ssh.push(other, attempts=1)
    assert not list((lab.root / "wd-i" / "files").glob("*/other.bin"))


def test_profile_two_devices_in_parallel(lab, tmp_path, capsys):
    from edgekd.cli.profile import profile_cli
    from edgekd.remote.profile import profile_targets

    grid = tmp_path / "grid.txt"
    grid.write_text("convnet:width=8,depth=2,res=16\n")
    ta, tb = lab.target("pa", lab.port_a, device="dev-a"), lab.target("pb", lab.port_b, device="dev-b")
    # Each device's thread waits at a barrier on its first measured entry: only runs that are
    # really concurrent both get through (a sequential run would break the barrier).
    barrier, met = threading.Barrier(2), {}

    def on_event(name, ev):
        if ev.kind == "measured" and name not in met:
            try:
                barrier.wait(timeout=120)
                met[name] = True
            except threading.BrokenBarrierError:
                met[name] = False

    out = tmp_path / "prof-{target}.json"
    runs = profile_targets([ta, tb], "convnet", out=out, grid=str(grid), min_time_s=0.02,
                           block_min_time_s=0.01, on_event=on_event)
    assert [r.error for r in runs] == [None, None]
    for r, host in zip(runs, ("dev-a", "dev-b")):
        d = json.loads(r.out.read_text())
        assert d["fingerprint"]["host"] == host and d["complete"]
        assert r.run.measured and r.run.measured[-1] == "convnet:width=8,depth=2,res=16"
    assert met == {"pa": True, "pb": True}  # both devices were busy at the same time

    # the CLI helper, resuming both: nothing left to measure, JSON summary, the files kept
    code = profile_cli([str(ta), str(tb)], "convnet", out=str(out), as_json=True, resume=True, grid=str(grid))
    s = json.loads(capsys.readouterr().out)
    assert code == 0 and [t["fingerprint_host"] for t in s["targets"]] == ["dev-a", "dev-b"]
    assert [t["measured"] for t in s["targets"]] == [0, 0] and all(t["complete"] for t in s["targets"])
    # without --resume an existing file is refused, per target, before anything runs
    code = profile_cli([str(ta)], "convnet", out=str(runs[0].out), as_json=True, grid=str(grid))
    s = json.loads(capsys.readouterr().out)
    assert code == 2 and "already exists" in s["targets"][0]["error"]


# ---------------------------------------------------------------------- verify and gate on the device


def test_verify_runs_on_the_device_and_reuses_the_copies(lab, digits_onnx, run_cli):
    from edgekd import load_target, verify_artifact

    t = _measure(lab.target("va", lab.port_a, device="verify-dev"), min_iters=100)
    args = ("-v", "verify", digits_onnx, "--target", t, "--data", "digits", "--budget-ms", "1000",
            "--min-accuracy", "0.5", "--json")
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["verdict"] == "PASS" and {c["name"] for c in d["checks"]} == {"latency", "accuracy"}
    assert d["latency"]["environment"]["host"] == "verify-dev"  # the device measured it
    assert d["remote"]["host"] == "127.0.0.1" and d["remote"]["port"] == lab.port_a
    assert d["artifact"] == str(digits_onnx)
    assert d["latency"]["n"] >= 10 and d["latency"]["p50"] > 0
    # the device saw the same validation arrays: the same accuracy as this machine's runtime gets
    here = verify_artifact(digits_onnx, load_target(t).model_copy(update={"remote": None}), "digits")
    assert d["n_val"] == here.n_val == 359 and d["accuracy"] == here.accuracy > 0.8

    wd = lab.root / "wd-va"
    copies = {p.name: p for p in (wd / "files").glob("*/*") if p.suffix in (".onnx", ".npz")}
    assert set(copies) == {"digits_linear.onnx", "val.npz"}
    assert copies["digits_linear.onnx"].read_bytes() == digits_onnx.read_bytes()
    with np.load(copies["val.npz"]) as z:
        assert z["x_val"].shape == (359, 1, 16, 16) and z["y_val"].shape == (359,)
    mtimes = {k: p.stat().st_mtime_ns for k, p in copies.items()}
    assert not list((wd / "runs").iterdir())  # the run folder is gone, the copies stay

    samples = lab.root / "va-samples.json"
    r2 = run_cli(*args, "--samples", samples)
    assert r2.returncode == 0, r2.stderr
    assert "digits_linear.onnx already on" in r2.stderr and "val.npz already on" in r2.stderr
    assert {k: p.stat().st_mtime_ns for k, p in copies.items()} == mtimes
    d2 = json.loads(r2.stdout)
    assert d2["accuracy"] == d["accuracy"]
    assert len(json.loads(samples.read_text())["samples_ms"]) == d2["latency"]["n"]  # the device's samples


def test_remote_verify_missed_budget_exits_1_and_missing_runtime_4(lab, digits_onnx, run_cli):
    t = _measure(lab.target("vb", lab.port_b, device="slow-dev"), min_iters=100)
    r = run_cli("verify", digits_onnx, "--target", t, "--data", "digits", "--budget-ms", "0.0001")
    assert r.returncode == 1, r.stderr
    assert "p90" in r.stderr and "budget 0.0001 ms" in r.stderr
    assert "slow-dev" in r.stderr and f"127.0.0.1:{lab.port_b}" in r.stderr
    r = run_cli("verify", digits_onnx, "--target", lab.target("vtrt", lab.port_b, runtime="tensorrt"),
                "--data", "digits")
    assert r.returncode == 4 and "tensorrt" in r.stderr and f"127.0.0.1:{lab.port_b}" in r.stderr
    assert "Traceback" not in r.stderr


def test_side_files_of_models(tmp_path, digits_onnx):
    import onnx

    from edgekd.errors import BadInputError
    from edgekd.remote.ops import side_files

    onnx.save(onnx.load(str(digits_onnx)), str(tmp_path / "ext.onnx"), save_as_external_data=True,
              location="ext.weights", size_threshold=0)
    assert side_files(tmp_path / "ext.onnx") == [tmp_path / "ext.weights"]
    assert side_files(digits_onnx) == [] and side_files(tmp_path / "m.xml") == [tmp_path / "m.bin"]
    (tmp_path / "sub").mkdir()
    onnx.save(onnx.load(str(digits_onnx)), str(tmp_path / "deep.onnx"), save_as_external_data=True,
              location="sub/w.data", size_threshold=0)
    with pytest.raises(BadInputError, match="sub/w.data"):
        side_files(tmp_path / "deep.onnx")


def test_onnx_external_data_goes_along(lab, digits_onnx, tmp_path):
    import onnx

    from edgekd import bench, load_target

    model = tmp_path / "ext.onnx"
    onnx.save(onnx.load(str(digits_onnx)), str(model), save_as_external_data=True, location="ext.weights",
              size_threshold=0)
    r = bench(str(model), load_target(lab.target("x", lab.port_a, device="ext-dev")))
    assert r.environment["host"] == "ext-dev" and r.stats.n >= 10  # the device found its weights
    (copy,) = (lab.root / "wd-x" / "files").glob("*/ext.onnx")
    assert (copy.parent / "ext.weights").read_bytes() == (tmp_path / "ext.weights").read_bytes()


@pytest.fixture(scope="module")
def compress_like(lab) -> Path:
    """A compress-shaped output: student.pt, cpu/model.onnx exported from it, manifest.json."""
    import torch

    from edgekd.export import export_onnx
    from edgekd.manifest import now, write_manifest
    from edgekd.models import build_model
    from edgekd.models.checkpoint import save_checkpoint

    root = lab.root / "run"
    spec = "convnet:width=8,depth=2,res=16"
    torch.manual_seed(0)
    model = build_model(spec, num_classes=10, in_channels=1).eval()
    save_checkpoint(root / "student.pt", model, spec=spec, num_classes=10, in_channels=1, input_shape=(1, 16, 16))
    art = export_onnx(model, torch.zeros(1, 1, 16, 16), root / "cpu" / "model.onnx")
    write_manifest(root, [(root / "student.pt", "torch student"), (art, "export artifact")], config={},
                   target={}, data_fingerprint=None, created=now())
    return root


def test_remote_verify_parity_on_the_device_and_manifest_refusals(lab, compress_like, run_cli, tmp_path,
                                                                  monkeypatch):
    from edgekd import load_target, verify_artifact
    from edgekd.errors import BadInputError
    from edgekd.manifest import find_manifest

    t = _measure(lab.target("vm", lab.port_a, device="parity-dev"), min_iters=100)
    art = compress_like / "cpu" / "model.onnx"
    r = run_cli("verify", art, "--target", t, "--data", "digits", "--reference", compress_like / "student.pt",
                "--max-drop", "0.01", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert {c["name"] for c in d["checks"]} == {"accuracy_drop", "parity"} and d["verdict"] == "PASS"
    assert d["parity"]["passed"] and d["parity"]["max_abs_diff"] < 1e-3
    assert abs(d["accuracy"] - d["reference_accuracy"]) < 0.01
    assert d["manifest"] == str(compress_like / "manifest.json")
    assert d["latency"]["environment"]["host"] == "parity-dev"

    # a changed artifact is refused here (exit 2) before anything is copied ...
    bad_root = tmp_path / "run"
    shutil.copytree(compress_like, bad_root)
    bad = bad_root / "cpu" / "model.onnx"
    raw = bytearray(bad.read_bytes())
    raw[-1] ^= 0xFF
    bad.write_bytes(bytes(raw))
    r = run_cli("verify", bad, "--target", t, "--data", "digits", "--budget-ms", "100")
    assert r.returncode == 2 and str(bad) in r.stderr and "manifest.json" in r.stderr
    wd = lab.root / "wd-vm" / "files"
    assert not [p for p in wd.glob("*/model.onnx") if p.read_bytes() == bytes(raw)]
    # ... and the device checks the copy it runs against the manifest again
    monkeypatch.setattr("edgekd.manifest.check_against_manifest", lambda a, extra=(): find_manifest(a))
    with pytest.raises(BadInputError, match="manifest.json") as err:
        verify_artifact(bad, load_target(t), "digits", budget_ms=100)
    assert f"127.0.0.1:{lab.port_a}" in str(err.value)


def test_gate_measures_on_the_device(lab, digits_onnx, run_cli, tmp_path):
    t = _measure(lab.target("ga", lab.port_b, device="gate-dev"), unstable_iqr=100.0)
    junit, summary = tmp_path / "gate.xml", tmp_path / "summary.md"
    r = run_cli("gate", digits_onnx, "--target", t, "--budget-ms", "1000", "--min-iters", "60", "--json",
                "--junit", junit, "--github", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)["results"][0]
    # a clear PASS is confirmed on a second, independent round measured on the device
    assert res["status"] == "PASS" and res["rounds"] == 2 and res["decision"]["n"] >= 120
    assert res["environment"]["host"] == "gate-dev" and res["environment"]["remote"]["port"] == lab.port_b
    text = junit.read_text()
    assert "host gate-dev" in text and f"via ssh {lab.user}@127.0.0.1:{lab.port_b}" in text
    assert "(device gate-dev)" in summary.read_text()

    r = run_cli("gate", digits_onnx, "--target", t, "--budget-ms", "0.00001", "--min-iters", "60",
                "--max-rounds", "2", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    res = json.loads(r.stdout)["results"][0]
    assert res["status"] == "FAIL" and res["round_verdicts"] == ["FAIL", "FAIL"]
    assert res["decision"]["ci"][0] > 0.00001 and res["environment"]["host"] == "gate-dev"


# ---------------------------------------------------------------------- memory and .pte on the device


def test_memory_budgets_are_measured_on_the_device(lab, digits_onnx):
    from edgekd import load_target, verify_artifact
    from edgekd.gate.check import check_models

    t = _measure(lab.target("vm", lab.port_a, device="mem-dev"), unstable_iqr=100.0)
    size_kb = digits_onnx.stat().st_size / 1024
    rep = verify_artifact(digits_onnx, load_target(t), "digits", max_size_kb=2 * size_kb, max_peak_mb=1000)
    checks = {c.name: c for c in rep.checks}
    assert rep.verdict == "pass" and checks["size"].value == pytest.approx(size_kb)
    assert checks["peak_memory"].value > 0 and "fresh process" in checks["peak_memory"].detail
    assert rep.latency.environment["host"] == "mem-dev"  # the device measured them
    [res] = check_models([str(digits_onnx)], target_name=str(t), budget_ms=1000.0, max_rounds=1, min_iters=20,
                         record_history=False, max_size_kb=size_kb / 2)
    assert res.status == "FAIL" and "over the memory budget" in res.error
    assert res.memory["size_bytes"] == digits_onnx.stat().st_size and "on device" in res.memory["peak_source"]


@pytest.mark.slow
def test_a_pte_is_measured_on_an_executorch_device(lab, run_cli, tmp_path):
    pytest.importorskip("executorch")
    from edgekd.deploy import open_module
    from edgekd.latency.measure import close_session
    from edgekd.models import build_model
    from edgekd.targets import load_target

    o = open_module(build_model("convnet:width=4,depth=1,res=8", num_classes=10, in_channels=1),
                    load_target("executorch-xnnpack"), tmp_path, (1, 8, 8))
    close_session(o.session)
    pte = o.artifact.path
    r = run_cli("bench", pte, "--target", lab.target("et", lab.port_b, runtime="executorch", device="et-dev"), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["environment"]["host"] == "et-dev" and d["artifact_format"] == "executorch-pte"
    mem = d["memory"]  # the device's figures for the .pte it ran
    assert mem["size_bytes"] == pte.stat().st_size and mem["peak_bytes"] > 0 and "on device" in mem["peak_source"]
