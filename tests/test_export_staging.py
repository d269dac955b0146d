"""A killed `edgekd export` leaves a hidden staging folder beside --out; the next export in that
folder removes it (the folders of exports still running stay)."""
import os
import subprocess
import sys

from edgekd.deploy import STAGING_PREFIX, clean_stale_staging


def test_stale_staging_folders_are_cleaned(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = tmp_path / f"{STAGING_PREFIX}{p.pid}-abc"
    live = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-abc"
    old = tmp_path / f"{STAGING_PREFIX}xyz"
    for d in (dead, live, old):
        d.mkdir()
        (d / "model.onnx").write_bytes(b"half")
    os.utime(old, (0, 0))
    assert sorted(clean_stale_staging(tmp_path)) == sorted([dead, old])
    assert live.is_dir() and not dead.exists() and not old.exists()


def test_export_cleans_what_a_killed_export_left(tmp_path):
    from edgekd.deploy import export_ref
    from edgekd.targets import load_target

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = tmp_path / f"{STAGING_PREFIX}{p.pid}-q"
    dead.mkdir()
    export_ref("convnet:width=8,depth=2,res=8", load_target("ort-cpu"), tmp_path / "out")
    assert not dead.exists() and (tmp_path / "out" / "model.onnx").is_file()
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))
