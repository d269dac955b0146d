"""Capability markers, resolved in one place: a test marked gpu/tensorrt/openvino skips with the
reason when this machine can't run it."""
from __future__ import annotations

import functools
import importlib.util
import os

import pytest

# One intra-op thread: the suite runs on 2 shared cores, where torch's default thread pool
# thrashes on tiny models (seconds instead of milliseconds per forward).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Quick measurements for every target whose file does not set its own (the shipped ones): the
# tests check what is measured and how it is judged, not this machine's latency; the protocol's
# own durations are tested where they matter, with explicit settings.
os.environ.setdefault("EDGEKD_MEASURE", "warmup_s=0.05,min_time_s=0.1,min_iters=60")
os.environ.setdefault("EDGEKD_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".edgekd-cache", "tests"))


@functools.lru_cache(maxsize=None)
def _capability(name: str) -> tuple[bool, str]:
    if name == "openvino":
        ok = importlib.util.find_spec("openvino") is not None
        return ok, "" if ok else "openvino is not installed (pip install 'edgekd[openvino]')"
    if name == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            return False, "tensorrt is not installed (needs an NVIDIA GPU; pip install 'edgekd[tensorrt]')"
        ok, why = _capability("gpu")
        return ok, why
    if name == "gpu":
        try:
            import torch

            ok = torch.cuda.is_available()
        except Exception:  # noqa: BLE001 - any failure means no usable GPU
            ok = False
        return ok, "" if ok else "no CUDA GPU on this machine"
    return True, ""


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def pytest_collection_modifyitems(config, items):
    for item in items:
        for cap in ("gpu", "tensorrt", "openvino"):
            if item.get_closest_marker(cap) is not None:
                ok, why = _capability(cap)
                if not ok:
                    item.add_marker(pytest.mark.skip(reason=why))
                    break


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def run_cli():
    """Run `python -m edgekd ARGS` in a subprocess (real exit codes, real stderr)."""
    import subprocess
    import sys

    def _run(*args: str, env: dict | None = None, cwd=None, timeout: float | None = None) -> _Result:
        full_env = dict(os.environ)
        full_env.pop("EDGEKD_DEBUG", None)
        if env:
            full_env.update(env)
        p = subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], capture_output=True,
                           text=True, env=full_env, cwd=cwd, timeout=timeout)
        return _Result(p.returncode, p.stdout, p.stderr)

    return _run


# A CPU target whose protocol is the real one with shorter durations.
FAST_TARGET_YAML = """\
runtime: onnxruntime
device: cpu
precision: fp32
threads: 1
batch: 1
measure:
  warmup_s: 0.05
  warmup_iters: 10
  min_iters: 60
  min_time_s: 0.1
"""


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """A directory with a tiny (untrained) teacher checkpoint, teacher.pt (resnet, 16 px, 10
    classes), and a fast ONNX Runtime target file, fast-cpu.yaml."""
    from edgekd.models import build_model
    from edgekd.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("tiny-assets")
    spec = "resnet:width=8,blocks=1,res=16"
    save_checkpoint(root / "teacher.pt", build_model(spec, num_classes=10, in_channels=1).eval(), spec=spec,
                    num_classes=10, in_channels=1, input_shape=(1, 16, 16))
    (root / "fast-cpu.yaml").write_text(FAST_TARGET_YAML)
    return root
