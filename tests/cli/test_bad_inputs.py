"""A battery of bad inputs over every command, tried as a new user would, through the real entry
point (edgekd.cli.main.main, in this process): each must end with its exit code and one line
'edgekd: error: ...' naming the problem, no traceback, and nothing written where output was asked
for. Cases are data: (command line, exit code, words the message must hold, output location)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgekd.cli.main import COMMANDS, main

# {name} placeholders are filled from the assets below; OUT is a fresh path in the test's folder,
# FILE a regular file there, FOREIGN a non-empty folder edgekd did not make.
SPEC8 = "convnet:width=8,depth=2,res=8"
DISTILL = ["distill", "--teacher", "{teacher}", "--student", "convnet:width=8,depth=2,res=16", "--data", "digits",
           "--epochs", "1", "--no-export"]
TRAIN = ["train", "--model", SPEC8, "--data", "digits", "--epochs", "1", "--no-export"]
COMPRESS = ["compress", "--teacher", "{teacher}", "--data", "digits", "--target", "{fast}", "--budget-ms", "50",
            "--student", "convnet:width=8,depth=2,res=16", "--epochs", "1"]
QUANT = ["quantize", "{onnx}", "--target", "ort-cpu-int8", "--data", "{npz10}", "--calib-size", "8", "--rounds", "1"]
VERIFY = ["verify", "{onnx}", "--target", "{fast}", "--data", "{npz10}"]
PRUNE = ["prune", "{ckpt}", "--teacher", "{teacher}", "--data", "digits", "--epochs", "0"]
GATE = ["gate", "{onnx}", "--target", "{fast}", "--budget-ms", "50"]
PROFILE = ["profile", "--target", "{fast}", "--family", "convnet", "--grid", "small"]
SELECT = ["select", "--profile", "{profile}", "--budget-ms", "1"]

CASES: list[tuple[str, list[str], int, tuple[str, ...], "str | None"]] = [
    # --------------------------------------------------------------------- the group itself
    ("no-such-command", ["nosuch"], 2, ("No such command", "edgekd --help"), None),
    ("no-such-option", ["targets", "--bogus"], 2, ("--bogus",), None),
    ("targets-extra-argument", ["targets", "extra"], 2, ("unexpected extra argument",), None),
    # --------------------------------------------------------------------- export
    ("export-no-target", ["export", SPEC8, "--out", "OUT"], 2, ("--target",), "OUT"),
    ("export-unknown-target", ["export", SPEC8, "-t", "nosuch", "--out", "OUT"], 2, ("nosuch",), "OUT"),
    ("export-missing-model", ["export", "missing.onnx", "-t", "ort-cpu", "--out", "OUT"], 2, ("does not exist",), "OUT"),
    ("export-garbage-onnx", ["export", "{garbage_onnx}", "-t", "ort-cpu", "--out", "OUT"], 2, ("garbage.onnx",), "OUT"),
    ("export-garbage-pt", ["export", "{garbage_pt}", "-t", "ort-cpu", "--out", "OUT"], 2, ("garbage.pt",), "OUT"),
    ("export-pickled-model", ["export", "{pickled}", "-t", "ort-cpu", "--out", "OUT"], 2, ("pickled",), "OUT"),
    ("export-bad-shape", ["export", "{onnx}", "-t", "ort-cpu", "--shape", "a,b", "--out", "OUT"], 2, ("--shape",), "OUT"),
    ("export-zero-shape", ["export", SPEC8, "-t", "ort-cpu", "--shape", "0,8,8", "--out", "OUT"], 2, ("--shape",), "OUT"),
    ("export-old-opset", ["export", SPEC8, "-t", "ort-cpu", "--opset", "11", "--out", "OUT"], 2, ("opset 11",), "OUT"),
    ("export-unknown-family", ["export", "nosuch:width=8", "-t", "ort-cpu", "--out", "OUT"], 2, ("nosuch",), "OUT"),
    ("export-out-is-file", ["export", SPEC8, "-t", "ort-cpu", "--out", "FILE"], 2, ("--out", "is a file"), "FILE"),
    ("export-out-under-file", ["export", SPEC8, "-t", "ort-cpu", "--out", "FILE/x"], 2, ("is a file",), "FILE"),
    ("export-out-not-empty", ["export", SPEC8, "-t", "ort-cpu", "--out", "FOREIGN"], 2, ("not empty",), "FOREIGN"),
    ("export-out-in-proc", ["export", SPEC8, "-t", "ort-cpu", "--out", "/proc/edgekd-x"], 2, ("/proc",), None),
    ("export-bad-target-yaml", ["export", SPEC8, "-t", "{bad_yaml}", "--out", "OUT"], 2, ("YAML",), "OUT"),
    ("export-tensorrt-missing", ["export", SPEC8, "-t", "tensorrt-fp16", "--out", "OUT"], 4, ("tensorrt",), "OUT"),
    # --------------------------------------------------------------------- bench
    ("bench-missing-model", ["bench", "missing.onnx"], 2, ("does not exist",), None),
    ("bench-threads-zero", ["bench", "{onnx}", "--threads", "0"], 2, ("--threads 0",), None),
    ("bench-threads-text", ["bench", "{onnx}", "--threads", "abc"], 2, ("--threads", "abc"), None),
    ("bench-sessions-zero", ["bench", "{onnx}", "--sessions", "0"], 2, ("sessions",), None),
    ("bench-too-few-iters", ["bench", "{onnx}", "--min-iters", "3"], 2, ("min_iters",), None),
    ("bench-in-channels-zero", ["bench", SPEC8, "--in-channels", "0"], 2, ("--in-channels",), None),
    ("bench-samples-in-proc", ["bench", "{onnx}", "--samples", "/proc/edgekd-s.json"], 2, ("--samples", "/proc"), None),
    ("bench-samples-is-dir", ["bench", "{onnx}", "--samples", "FOREIGN"], 2, ("--samples", "directory"), "FOREIGN"),
    ("bench-work-dir-is-file", ["bench", "{onnx}", "--work-dir", "FILE"], 2, ("--work-dir",), "FILE"),
    ("bench-tensorrt-missing", ["bench", "{onnx}", "-t", "tensorrt-fp16"], 4, ("tensorrt",), None),
    ("bench-pickled-model", ["bench", "{pickled}"], 2, ("pickled",), None),
    ("bench-zip-not-torch", ["bench", "{zip_pt}"], 2, ("zip.pt",), None),
    # --------------------------------------------------------------------- profile
    ("profile-unknown-family", PROFILE[:4] + ["nosuch", "--out", "OUT/p.json"], 2, ("nosuch",), "OUT"),
    ("profile-unknown-grid", PROFILE[:6] + ["nosuch-grid", "--out", "OUT/p.json"], 2, ("nosuch-grid",), "OUT"),
    ("profile-out-under-file", PROFILE + ["--out", "FILE/p.json"], 2, ("--out", "is a file"), "FILE"),
    ("profile-out-dir-under-file", PROFILE + ["--out", "FILE/profiles"], 2, ("--out", "is a file"), "FILE"),
    ("profile-out-in-proc", PROFILE + ["--out", "/proc/edgekd-p.json"], 2, ("/proc",), None),
    ("profile-unknown-target", ["profile", "-t", "nosuch", "-f", "convnet", "--out", "OUT/p.json"], 2, ("nosuch",), "OUT"),
    ("profile-no-family", ["profile", "-t", "{fast}", "--out", "OUT/p.json"], 2, ("--family",), "OUT"),
    # --------------------------------------------------------------------- select
    ("select-missing-profile", ["select", "--profile", "missing.json", "--budget-ms", "1"], 2, ("missing.json",), None),
    ("select-garbage-profile", ["select", "--profile", "{garbage_json}", "--budget-ms", "1"], 2, ("garbage.json",), None),
    ("select-wrong-schema", ["select", "--profile", "{other_json}", "--budget-ms", "1"], 2, ("other.json",), None),
    ("select-no-budget", ["select", "--profile", "{garbage_json}"], 2, ("--budget-ms",), None),
    ("select-bad-metric", SELECT + ["--metric", "p42"], 2, ("p42",), None),
    # --------------------------------------------------------------------- distill / train
    ("distill-missing-teacher", ["distill", "--teacher", "missing.pt", "--student", SPEC8, "--data", "digits",
                                 "--out", "OUT"], 2, ("missing.pt",), "OUT"),
    ("distill-garbage-teacher", ["distill", "--teacher", "{garbage_pt}", "--student", SPEC8, "--data", "digits",
                                 "--out", "OUT"], 2, ("garbage.pt", "not a torch file"), "OUT"),
    ("distill-pickle-untrusted", ["distill", "--teacher", "{pickled}", "--student", SPEC8, "--data", "digits",
                                  "--out", "OUT"], 2, ("--trust-code",), "OUT"),
    ("distill-unknown-loss", DISTILL + ["--loss", "nosuchloss", "--out", "OUT"], 2, ("nosuchloss",), "OUT"),
    ("distill-bad-loss-opt", DISTILL + ["--loss-opt", "T", "--out", "OUT"], 2, ("--loss-opt",), "OUT"),
    ("distill-bad-student", ["distill", "--teacher", "{teacher}", "--student", "nosuch:x=1", "--data", "digits",
                             "--out", "OUT"], 2, ("nosuch",), "OUT"),
    ("distill-bad-data", ["distill", "--teacher", "{teacher}", "--student", SPEC8, "--data", "nosuchdata",
                          "--out", "OUT"], 2, ("nosuchdata",), "OUT"),
    ("distill-teacher-classes", ["distill", "--teacher", "{teacher}", "--student", "convnet:width=8,depth=2,res=16",
                                 "--data", "{npz2_16}", "--out", "OUT"], 2, ("teacher", "classes"), "OUT"),
    ("distill-out-foreign", DISTILL + ["--out", "FOREIGN"], 2, ("not empty",), "FOREIGN"),
    ("distill-out-under-file", DISTILL + ["--out", "FILE/run"], 2, ("is a file",), "FILE"),
    ("distill-fraction-two", DISTILL + ["--labelled-fraction", "2", "--out", "OUT"], 2, ("fraction",), "OUT"),
    ("distill-bad-optimizer", DISTILL + ["--optimizer", "lion", "--out", "OUT"], 2, ("lion",), "OUT"),
    ("train-bad-model", ["train", "--model", "convnet:wdth=8", "--data", "digits", "--out", "OUT"], 2, ("wdth",), "OUT"),
    ("train-out-foreign", TRAIN + ["--out", "FOREIGN"], 2, ("holds no edgekd training run",), "FOREIGN"),
    ("train-missing-folder", ["train", "--model", SPEC8, "--data", "folder:nosuchdir", "--out", "OUT"], 2,
     ("nosuchdir",), "OUT"),
    ("train-epochs-zero", TRAIN + ["--epochs", "0", "--out", "OUT"], 2, ("epochs",), "OUT"),
    ("train-batch-one", TRAIN + ["--batch-size", "1", "--out", "OUT"], 2, ("batch_size",), "OUT"),
    ("train-one-class", ["train", "--model", SPEC8, "--data", "{npz1}", "--epochs", "1", "--out", "OUT"], 2,
     ("1 class",), "OUT"),
    # --------------------------------------------------------------------- quantize
    ("quantize-fp32-target", ["quantize", "{onnx}", "-t", "ort-cpu", "--data", "{npz10}", "--out", "OUT"], 2,
     ("int8",), "OUT"),
    ("quantize-missing-model", ["quantize", "missing.onnx", "-t", "ort-cpu-int8", "--data", "digits", "--out", "OUT"],
     2, ("missing.onnx",), "OUT"),
    ("quantize-calib-negative", QUANT + ["--calib-size", "-1", "--out", "OUT"], 2, ("--calib-size",), "OUT"),
    ("quantize-max-drop-two", QUANT + ["--max-drop", "2", "--out", "OUT"], 2, ("--max-drop",), "OUT"),
    ("quantize-rounds-zero", QUANT + ["--rounds", "0", "--out", "OUT"], 2, ("--rounds",), "OUT"),
    ("quantize-class-mismatch", ["quantize", "{onnx}", "-t", "ort-cpu-int8", "--data", "{npz2}", "--out", "OUT"], 2,
     ("predicts 10 classes",), "OUT"),
    ("quantize-out-under-file", QUANT + ["--out", "FILE/q"], 2, ("is a file",), "FILE"),
    ("quantize-bad-method", QUANT + ["--method", "magic", "--out", "OUT"], 2, ("magic",), "OUT"),
    # --------------------------------------------------------------------- compress
    ("compress-nothing", ["compress"], 2, ("--teacher", "--demo"), None),
    ("compress-demo-and-teacher", ["compress", "--demo", "--teacher", "x.pt"], 2, ("--demo",), None),
    ("compress-unknown-loss", COMPRESS + ["--loss", "nosuchloss", "--out", "OUT"], 2, ("nosuchloss",), "OUT"),
    ("compress-zero-budget", COMPRESS[:8] + ["0", "--out", "OUT"], 2, ("budget_ms",), "OUT"),
    ("compress-teacher-classes", ["compress", "--teacher", "{teacher}", "--data", "{npz2_16}", "--target", "{fast}",
                                  "--budget-ms", "50", "--student", "convnet:width=8,depth=2,res=16", "--out", "OUT"],
     2, ("teacher", "classes"), "OUT"),
    ("compress-pickle-untrusted", ["compress", "--teacher", "{pickled}", "--data", "digits", "--target", "{fast}",
                                   "--budget-ms", "50", "--student", SPEC8, "--out", "OUT"], 2, ("--trust-code",), "OUT"),
    ("compress-out-is-file", COMPRESS + ["--out", "FILE"], 2, ("--out",), "FILE"),
    ("compress-out-foreign", COMPRESS + ["--out", "FOREIGN"], 2, ("--out",), "FOREIGN"),
    ("compress-fp16-on-fp32", COMPRESS + ["--quantize", "fp16", "--out", "OUT"], 2, ("fp16",), "OUT"),
    ("compress-unknown-family", ["compress", "--teacher", "{teacher}", "--data", "digits", "--target", "{fast}",
                                 "--budget-ms", "50", "--family", "nosuchfam", "--out", "OUT"], 2, ("nosuchfam",), "OUT"),
    ("compress-tensorrt-missing", COMPRESS[:6] + ["tensorrt-fp16"] + COMPRESS[7:] + ["--out", "OUT"], 4,
     ("tensorrt",), "OUT"),
    ("compress-missing-teacher", ["compress", "--teacher", "missing.pt", "--data", "digits", "--target", "{fast}",
                                  "--budget-ms", "50", "--out", "OUT"], 2, ("missing.pt",), "OUT"),
    # --------------------------------------------------------------------- verify
    ("verify-missing-artifact", ["verify", "missing.onnx", "-t", "{fast}", "--data", "digits"], 2,
     ("does not exist",), None),
    ("verify-resolution-zero", VERIFY + ["--resolution", "0"], 2, ("--resolution 0",), None),
    ("verify-class-mismatch", ["verify", "{onnx}", "-t", "{fast}", "--data", "{npz2}"], 2,
     ("predicts 10 classes", "has 2"), None),
    ("verify-one-class", ["verify", "{onnx}", "-t", "{fast}", "--data", "{npz1}"], 2, ("1 class",), None),
    ("verify-negative-budget", VERIFY + ["--budget-ms", "-1"], 2, ("--budget-ms",), None),
    ("verify-accuracy-two", VERIFY + ["--min-accuracy", "2"], 2, ("--min-accuracy",), None),
    ("verify-drop-without-reference", VERIFY + ["--max-drop", "0.01"], 2, ("--reference",), None),
    ("verify-missing-reference", VERIFY + ["--reference", "missing.pt"], 2, ("missing.pt",), None),
    ("verify-samples-in-proc", VERIFY + ["--samples", "/proc/edgekd-v.json"], 2, ("--samples", "/proc"), None),
    ("verify-samples-under-file", VERIFY + ["--samples", "FILE/s.json"], 2, ("--samples",), "FILE"),
    ("verify-bad-metric", VERIFY + ["--metric", "p42"], 2, ("p42",), None),
    ("verify-shape-mismatch", ["verify", "{onnx}", "-t", "{fast}", "--data", "{npz10}", "--resolution", "16"], 2,
     ("16",), None),
    # --------------------------------------------------------------------- calibrate
    ("calibrate-unknown-target", ["calibrate", "-t", "nosuch"], 2, ("nosuch",), None),
    ("calibrate-threads-zero", ["calibrate", "--threads", "0"], 2, ("--threads",), None),
    ("calibrate-bad-yaml", ["calibrate", "-t", "{bad_yaml}"], 2, ("YAML",), None),
    ("calibrate-tensorrt-missing", ["calibrate", "-t", "tensorrt-fp16"], 4, ("tensorrt",), None),
    # --------------------------------------------------------------------- doctor
    ("doctor-no-target", ["doctor"], 2, ("--target",), None),
    ("doctor-unknown-target", ["doctor", "-t", "nosuch"], 2, ("nosuch",), None),
    ("doctor-bad-yaml", ["doctor", "-t", "{bad_yaml}"], 2, ("YAML",), None),
    # --------------------------------------------------------------------- gate
    ("gate-junit-in-proc", GATE + ["--junit", "/proc/edgekd-j.xml"], 2, ("--junit", "/proc"), None),
    ("gate-junit-under-file", GATE + ["--junit", "FILE/j.xml"], 2, ("--junit",), "FILE"),
    ("gate-save-baseline-is-dir", GATE + ["--save-baseline", "FOREIGN"], 2, ("--save-baseline",), "FOREIGN"),
    ("gate-history-db-in-proc", GATE + ["--history-db", "/proc/edgekd-h.sqlite"], 2, ("--history-db",), None),
    ("gate-missing-budgets", ["gate", "--budgets", "missing.yaml"], 2, ("missing.yaml",), None),
    ("gate-bad-on-inconclusive", GATE + ["--on-inconclusive", "shrug"], 2, ("shrug",), None),
    ("gate-rounds-zero", GATE + ["--max-rounds", "0"], 2, ("--max-rounds",), None),
    ("gate-missing-model", ["gate", "missing.onnx", "--budget-ms", "5"], 2, ("missing.onnx",), None),
    ("gate-garbage-baseline", GATE + ["--baseline", "{garbage_json}"], 2, ("garbage.json",), None),
    # --------------------------------------------------------------------- prune
    ("prune-missing-model", ["prune", "missing.pt", "--teacher", "{teacher}", "--data", "digits", "--ratio", "0.5",
                             "--out", "OUT"], 2, ("missing.pt",), "OUT"),
    ("prune-ratio-too-big", PRUNE + ["--ratio", "1.5", "--out", "OUT"], 2, ("1.5",), "OUT"),
    ("prune-budget-without-target", PRUNE + ["--budget-ms", "1", "--out", "OUT"], 2, ("--target",), "OUT"),
    ("prune-out-under-file", PRUNE + ["--ratio", "0.5", "--out", "FILE/p"], 2, ("is a file",), "FILE"),
    ("prune-bad-importance", PRUNE + ["--ratio", "0.5", "--importance", "vibes", "--out", "OUT"], 2, ("vibes",), "OUT"),
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_assets):
    """Small files the cases name: an ONNX classifier (8 px, 10 classes), an edgekd checkpoint,
    the tiny teacher and fast target, npz data sets, and files that are not what they claim."""
    import torch
    from torch import nn

    from edgekd.export import export_onnx
    from edgekd.models import build_model
    from edgekd.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("bad-input-assets")
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(4, 10)).eval()
    export_onnx(m, torch.randn(1, 1, 8, 8), root / "m.onnx")
    save_checkpoint(root / "student.pt", build_model(SPEC8, num_classes=10, in_channels=1).eval(), spec=SPEC8,
                    num_classes=10, in_channels=1, input_shape=(1, 8, 8))
    torch.save(build_model(SPEC8, num_classes=10, in_channels=1), root / "pickled.pt")
    (root / "garbage.pt").write_bytes(b"not a model at all\n")
    (root / "garbage.onnx").write_bytes(b"\x08\x07garbage")
    (root / "garbage.json").write_text("{not json")
    import zipfile

    with zipfile.ZipFile(root / "zip.pt", "w") as z:
        z.writestr("a.txt", "a zip, not torch's")
    (root / "other.json").write_text('{"schema": "something-else/v1"}')
    (root / "bad.yaml").write_text("runtime: [onnxruntime\n")
    rng = np.random.default_rng(0)

    def npz(name, classes, res):
        y = np.arange(40) % classes
        np.savez(root / name, x_train=rng.random((40, 1, res, res), dtype=np.float32), y_train=y,
                 x_val=rng.random((40, 1, res, res), dtype=np.float32), y_val=y)
        return f"npz:{root / name}"

    return {"onnx": str(root / "m.onnx"), "ckpt": str(root / "student.pt"), "pickled": str(root / "pickled.pt"),
            "teacher": str(tiny_assets / "teacher.pt"), "fast": str(tiny_assets / "fast-cpu.yaml"),
            "garbage_pt": str(root / "garbage.pt"), "garbage_onnx": str(root / "garbage.onnx"),
            "garbage_json": str(root / "garbage.json"), "zip_pt": str(root / "zip.pt"), "other_json": str(root / "other.json"),
            "profile": str(root / "garbage.json"), "bad_yaml": str(root / "bad.yaml"),
            "npz10": npz("d10.npz", 10, 8), "npz2": npz("d2.npz", 2, 8), "npz1": npz("d1.npz", 1, 8),
            "npz2_16": npz("d2_16.npz", 2, 16)}


def _tensorrt_runs_here() -> bool:
    from edgekd.backends import get_backend
    from edgekd.targets import load_target

    t = load_target("tensorrt-fp16")
    return bool(get_backend(t.runtime).available(t)[0])


def _snapshot(p: Path):
    if not p.exists():
        return None
    if p.is_file():
        return ("file", p.read_bytes())
    return sorted((str(q.relative_to(p)), q.is_file() and q.read_bytes()) for q in p.rglob("*"))


def _fill(arg: str, assets: dict, tmp: Path) -> str:
    for word in ("FOREIGN", "FILE", "OUT"):
        if arg == word or arg.startswith(word + "/"):
            return str(tmp / arg)
    return arg.format(**assets) if "{" in arg else arg


def run_case(argv, assets, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGEKD_DEBUG", raising=False)
    (tmp_path / "FILE").write_text("a file\n")
    (tmp_path / "FOREIGN").mkdir(exist_ok=True)
    (tmp_path / "FOREIGN" / "keep.txt").write_text("not edgekd's\n")
    args = [_fill(a, assets, tmp_path) for a in argv]
    capsys.readouterr()
    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("name,argv,code,needles,out", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, argv, code, needles, out, assets, tmp_path, capsys, monkeypatch):
    if code == 4 and "tensorrt" in needles and _tensorrt_runs_here():
        pytest.skip("TensorRT runs here: a tensorrt target is no missing runtime on this machine")
    before = None
    if out:
        (tmp_path / "FILE").write_text("a file\n")
        (tmp_path / "FOREIGN").mkdir(exist_ok=True)
        (tmp_path / "FOREIGN" / "keep.txt").write_text("not edgekd's\n")
        before = _snapshot(tmp_path / out)
    rc, stdout, err = run_case(argv, assets, tmp_path, capsys, monkeypatch)
    assert "Traceback" not in err and "Traceback" not in stdout
    errors = [line for line in err.splitlines() if line.startswith("edgekd: error:")]
    assert rc == code, (rc, err[-2000:])
    assert len(errors) == 1, err
    assert err.rstrip().splitlines()[-1] == errors[0], err  # the error is the last word
    assert "internal error" not in errors[0]
    for needle in needles:
        assert needle in errors[0], errors[0]
    if out:
        assert _snapshot(tmp_path / out) == before, f"{out} changed"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".edgekd")]
    assert not leftovers, leftovers


def test_the_battery_covers_every_command():
    covered = {c[1][0] for c in CASES}
    assert set(COMMANDS) <= covered, set(COMMANDS) - covered
    assert len(CASES) >= 60


def coverage() -> dict[str, tuple[int, list[int]]]:
    """command -> (number of cases, exit codes checked): the table in BENCHMARKS.md."""
    table: dict[str, tuple[int, set]] = {}
    for _, argv, code, _, _ in CASES:
        cmd = argv[0] if argv[0] in COMMANDS else "(edgekd)"
        n, codes = table.get(cmd, (0, set()))
        table[cmd] = (n + 1, codes | {code})
    return {k: (n, sorted(c)) for k, (n, c) in sorted(table.items())}


def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a SIGTERM handler installed (Linux: SigCgt in /proc)."""
    import signal

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_sigterm_exits_130_with_a_message(tmp_path):
    """SIGTERM during a long command (bench) takes Ctrl-C's path: exit 130 and one line."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("EDGEKD_DEBUG", None)
    p = subprocess.Popen([sys.executable, "-m", "edgekd", "bench", SPEC8, "--min-time", "60", "--warmup", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 180
    while not _catches_sigterm(p.pid) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)  # until main() has installed its handler (imports take seconds here)
    assert p.poll() is None
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1] == "edgekd: interrupted by SIGTERM"


def test_a_bad_yaml_on_the_targets_path_is_skipped(tmp_path, capsys, monkeypatch, caplog):
    import json

    (tmp_path / "bad.yaml").write_text("runtime: [oops\n")
    monkeypatch.setenv("EDGEKD_TARGETS_PATH", str(tmp_path))
    with caplog.at_level("WARNING", logger="edgekd.targets"):
        assert main(["targets", "--json"]) == 0
    names = {t["name"] for t in json.loads(capsys.readouterr().out)["targets"]}
    assert "ort-cpu" in names
    assert any("bad.yaml" in r.getMessage() for r in caplog.records)


def test_hints_keep_their_brackets(capsys, monkeypatch):
    """rich markup must not eat 'edgekd[tensorrt]' in the targets table's install hint."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed: no install hint to show")
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["targets"]) == 0
    assert "edgekd[tensorrt]" in capsys.readouterr().out
