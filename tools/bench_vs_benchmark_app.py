#!/usr/bin/env python
"""Our median next to OpenVINO's own `benchmark_app -hint latency` median on the same IR,
threads and shape. docs/LATENCY.md: they should agree within 3% (ratio 0.97-1.03).

The two are run alternately (ours, theirs, ours, theirs, ...) and the ratio of each pair is
reported, with the median ratio at the end. benchmark_app reports the runtime's own latency of
each request; ours is wall time around one session.run (the Python call included).

Because the two tools run seconds apart, a busy machine moves the pair ratios; the same calls
are therefore also read in this process, wall time around session.run against the request's
own latency (what benchmark_app reports), which no drift can move.

It also times what each way to run the bound request (edgekd's session.run, the binding's
synchronous infer, start_async + wait) costs beyond the request's own latency, beside a binding
call that does no work: what is left of the Python call path.

It also measures what reading the disturbance signal (involuntary context switches, read once
per sample, outside the timed span) costs: the same session measured with and without it, in
alternation, and the ratio of the medians.

    python tools/bench_vs_benchmark_app.py [--model SPEC] [--threads 1] [--pairs 5] [--time 3]
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


def same_calls(session, x, n: int = 3000) -> "tuple[float, float] | None":
    """(median wall ms of session.run, median of the request's own latency for the same calls):
    the call overhead benchmark_app leaves out, free of the machine's drift (both read per call)."""
    req = getattr(session, "_req", None)
    if req is None or not hasattr(req, "latency"):
        return None
    import time

    wall, own = [], []
    for _ in range(n):
        t = time.perf_counter_ns()
        session.run(x)
        wall.append((time.perf_counter_ns() - t) / 1e6)
        own.append(req.latency)
    return statistics.median(wall), statistics.median(own)


def call_costs(session, x, rounds: int = 8, n: int = 300) -> "dict[str, float] | None":
    """Median wall time minus the request's own latency (us) of each way to run the bound
    request, in alternating rounds of ``n`` calls: edgekd's session.run, the binding's
    synchronous infer (it returns the outputs' dict), start_async + wait (they return nothing);
    and the wall time of a binding call that does no work (reading ``latency``)."""
    req = getattr(session, "_req", None)
    if req is None or not hasattr(req, "latency"):
        return None
    import time

    import openvino._pyopenvino as binding

    base = binding.InferRequest
    session.run(x)
    ways = {"session.run": lambda: session.run(x), "binding infer": lambda: base.infer(req, {}, True, False),
            "start_async+wait": lambda: (base.start_async(req, {}, None), base.wait(req))}
    over: dict = {k: [] for k in ways}
    noop = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, f in ways.items():
            for _ in range(n):
                t = clock()
                f()
                over[name].append((clock() - t) / 1e3 - req.latency * 1e3)
        for _ in range(n):
            t = clock()
            req.latency  # noqa: B018 - the call is what is timed
            noop.append((clock() - t) / 1e3)
    out = {k: statistics.median(v) for k, v in over.items()}
    out["no-op binding call"] = statistics.median(noop)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenetv2:width=1.0,res=32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--time", type=int, default=3, help="whole seconds per run, both tools")
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
        ok = 0.97 <= med <= 1.03
        print(f"median ratio edgekd/benchmark_app = {med:.3f} ({'within' if ok else 'OUTSIDE'} 0.97-1.03)")
        same = same_calls(opened.session, x)
        if same:
            print(f"same calls, in this process: edgekd wall p50 {same[0]:.4f} ms / runtime's own request latency "
                  f"p50 {same[1]:.4f} ms (what benchmark_app reports) = {same[0] / same[1]:.3f}")
        costs = call_costs(opened.session, x)
        if costs:
            print("call cost beyond the request's own latency, us (median): "
                  + "; ".join(f"{k} {v:.1f}" for k, v in costs.items()))
        signal = []
        short = settings.model_copy(update={"min_time_s": 1.0, "warmup_s": 0.2})
        for _ in range(args.pairs):
            on = measure_session(opened.session, x, short)
            off = measure_session(opened.session, x, short, switches=None)
            signal.append(on.stats.p50 / off.stats.p50)
        print(f"disturbance signal: p50 with / without = {statistics.median(signal):.3f} "
              f"(pairs: {' '.join(f'{v:.3f}' for v in signal)}); disturbed samples in the last run: "
              f"{on.stats.disturbed} of {on.stats.n}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
