#!/usr/bin/env python
"""Our median next to OpenVINO's own `benchmark_app -hint latency` median on the same IR,
threads and shape. docs/LATENCY.md: they should agree within 10%.

The two are run alternately (ours, theirs, ours, theirs, ...) and the ratio of each pair is
reported, with the median ratio at the end.

    python tools/bench_vs_benchmark_app.py [--model SPEC] [--threads 1] [--pairs 3] [--time 5]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def benchmark_app_median(xml: Path, threads: int, seconds: float, shape: str, cfg_dir: Path) -> float:
    """benchmark_app's median (ms) with -hint latency. benchmark_app refuses -nthreads next to a
    hint, so the thread count and f32 precision go in through -load_config instead."""
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    cfg = cfg_dir / "benchmark_app_config.json"
    cfg.write_text(json.dumps({"CPU": {"INFERENCE_NUM_THREADS": str(threads),
                                       "INFERENCE_PRECISION_HINT": "f32"}}))
    cmd = [exe, "-m", str(xml), "-d", "CPU", "-hint", "latency", "-api", "sync",
           "-load_config", str(cfg), "-t", str(max(1, round(seconds))), "-shape", shape]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark_app failed ({proc.returncode}): " + (proc.stdout + proc.stderr)[-1500:])
    out = proc.stdout
    m = re.search(r"Median:\s+([0-9.]+)\s*(ms|us)", out)
    if not m:
        raise RuntimeError("benchmark_app printed no median:\n" + out[-2000:])
    value = float(m.group(1))
    return value / 1000.0 if m.group(2) == "us" else value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenetv2:width=1.0,res=32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--time", type=int, default=5, help="whole seconds per run, both tools")
    args = ap.parse_args(argv)

    from edgekd.deploy import open_model
    from edgekd.latency.measure import make_inputs, measure_session
    from edgekd.targets import load_target

    target = load_target("openvino-cpu").model_copy(update={"threads": args.threads})
    with tempfile.TemporaryDirectory() as tmp:
        opened = open_model(args.model, target, work_dir=Path(tmp))
        xml = Path(opened.artifact.path)
        shape = "[" + ",".join(str(d) for d in opened.input_shape) + "]"
        x = make_inputs(opened.session, tuple(opened.input_shape))
        settings = target.measure.model_copy(update={"min_time_s": args.time})
        print(f"# model={args.model} IR={xml.name} shape={shape} threads={args.threads} "
              f"time per run={args.time}s")
        print(f"{'pair':>4s} {'edgekd p50 ms':>14s} {'benchmark_app median ms':>24s} {'ratio':>7s}")
        ratios = []
        for i in range(args.pairs):
            ours = measure_session(opened.session, x, settings).stats.p50
            theirs = benchmark_app_median(xml, args.threads, args.time, shape, Path(tmp))
            ratios.append(ours / theirs)
            print(f"{i + 1:4d} {ours:14.4f} {theirs:24.4f} {ours / theirs:7.3f}")
        med = statistics.median(ratios)
        verdict = "within 10%" if abs(med - 1) <= 0.10 else "OUTSIDE 10%"
        print(f"median ratio edgekd/benchmark_app = {med:.3f} ({verdict})")
        return 0 if abs(med - 1) <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
