"""The built wheel finds what it ships: installed into a fresh virtual environment and run
outside the repository, edgekd lists the targets packed under edgekd/_data/targets and the
pipeline finds the profiles packed under edgekd/_data/profiles (pyproject's force-include)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys
from pathlib import Path

import edgekd
from edgekd.latency.profile import load_profile
from edgekd.pipeline import CompressConfig, find_profile, locate_profile, make_plan, profile_dirs
from edgekd.pipeline.plan import profile_resolutions
from edgekd.targets import list_targets, load_target, targets_dirs

shipped = json.loads(sys.argv[1])
located, found, plans = {}, {}, {}


def split(name):  # <target>-<family>, where both may hold '-' (ort-cpu-hf-mobilenetv2)
    target = max((t.name for t in list_targets() if name.startswith(t.name + "-")), key=len)
    return target, name[len(target) + 1:]


for name in shipped["profiles"]:
    target, family = split(name)
    p = locate_profile(target, family)
    located[name] = str(p) if p else None
for name in shipped["ort_profiles"]:
    target, family = split(name)
    p, note = find_profile(load_target(target), family)
    found[name] = [str(p) if p else None, note]
    res = profile_resolutions(load_profile(p))[0] if p else None  # a size the profile holds
    cfg = CompressConfig.make(teacher="resnet:width=8,blocks=1,res=32", data="digits", target=target,
                              budget_ms=1.0, family=family, resolution=res)
    plan = make_plan(cfg)
    plans[name] = [str(plan.profile) if plan.profile else None, plan.profile_note]
print(json.dumps({"edgekd": edgekd.__file__, "targets": sorted(t.name for t in list_targets()),
                  "targets_dirs": [str(d) for d in targets_dirs()],
                  "profile_dirs": [str(d) for d in profile_dirs()],
                  "located": located, "found": found, "plans": plans}))
"""


def _pip_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(p) for p in version("pip").split(".")[:2] if p.isdigit())


def _run(cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert p.returncode == 0, f"{cmd} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p


@pytest.mark.slow
def test_installed_wheel_finds_its_shipped_targets_and_profiles(tmp_path):
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, REPO]
    if importlib.util.find_spec("hatchling") is not None:
        build.insert(4, "--no-build-isolation")  # else pip fetches the build backend (hatchling)
    _run(build)
    (wheel,) = wheels.glob("edgekd-*.whl")

    venv = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "EDGEKD_TARGETS_PATH")}
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     env=env).stdout.strip())
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel]
    if _pip_version() >= (22, 3):
        install[3:3] = ["--python", py]  # pip runs for the fresh interpreter: a full install there
    else:
        install += ["--target", site]
    _run(install, env=env)
    # the dependencies (torch, pydantic, ...) from this environment; a path line adds the directory
    # only, so the editable install's own .pth there is not processed and edgekd comes from the wheel
    (site / "zz_edgekd_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    shipped_profiles = sorted(p.stem for p in (REPO / "profiles").glob("*.json"))
    shipped = {"profiles": shipped_profiles, "ort_profiles": [n for n in shipped_profiles if n.startswith("ort-cpu-")]}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    got = json.loads(_run([py, "-c", PROBE, json.dumps(shipped)], cwd=outside, env=env).stdout)

    package = Path(got["edgekd"]).resolve().parent
    assert package.is_relative_to(venv.resolve()) and package.parent == site.resolve(), got["edgekd"]
    data = package / "_data"
    assert set(got["targets"]) >= {p.stem for p in (REPO / "targets").glob("*.yaml")}
    assert [Path(d).resolve() for d in got["targets_dirs"]] == [data / "targets"]
    assert [Path(d).resolve() for d in got["profile_dirs"]] == [data / "profiles"]
    assert shipped["ort_profiles"], "the repository ships ort-cpu profiles"
    for name in shipped_profiles:
        assert Path(got["located"][name]).resolve() == data / "profiles" / f"{name}.json"
    for name in shipped["ort_profiles"]:
        # found and read: used when measured in this environment, else set aside with the reason
        for path, note in (got["found"][name], got["plans"][name]):
            assert (path == got["located"][name] and note == f"profile {path}") or \
                (path is None and "measured in another environment" in note), (name, path, note)
