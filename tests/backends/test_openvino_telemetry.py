"""OpenVINO's model conversion (and NNCF) send a usage event from a forked child per call unless
the openvino_telemetry package is missing; edgekd keeps it out of its process unless
EDGEKD_OPENVINO_TELEMETRY=1 (backends._common.no_vendor_telemetry)."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("openvino")
pytest.importorskip("openvino_telemetry")

SCRIPT = r"""
import json, multiprocessing, sys, time
started = []
multiprocessing.Process.start = lambda self: started.append(1)  # record, never fork
import torch
from edgekd.backends.openvino import _ov
ov = _ov()
m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
torch.onnx.export(m, torch.zeros(1, 3, 8, 8), sys.argv[1], dynamo=False)
for _ in range(2):
    ov.convert_model(sys.argv[1])
deadline = time.time() + 5
while not started and time.time() < deadline and sys.argv[2] == "1":
    time.sleep(0.1)
print(json.dumps({"forks": len(started), "blocked": sys.modules.get("openvino_telemetry", 0) is None}))
"""


def _run(tmp_path, on: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env["HOME"] = str(tmp_path)  # no consent file of this machine's user either way
    env.pop("EDGEKD_OPENVINO_TELEMETRY", None)
    if on:
        env["EDGEKD_OPENVINO_TELEMETRY"] = "1"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "m.onnx"), "1" if on else "0"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_convert_model_sends_nothing_unless_asked(tmp_path):
    off = _run(tmp_path, on=False)
    assert off == {"forks": 0, "blocked": True}
    # the control: with the variable set, the package's own sender forks (so the check can fail)
    on = _run(tmp_path, on=True)
    assert on["forks"] >= 1 and not on["blocked"]
