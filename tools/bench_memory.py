#!/usr/bin/env python
"""Peak memory as edgekd reports it (latency.memory.measure_memory, the figure bench prints:
the resident high-water mark over a fresh load and three runs, in a fresh process) against a
direct measurement made independently: another fresh Python process that imports the runtime,
loads the same artifact file with the runtime's own API (no edgekd), runs a bare loop of
inferences and samples its resident memory (/proc/self/statm) from a thread every 0.2 ms; its
peak is the largest sample minus the resident memory before the load. Also prints each
artifact's size and ExecuTorch's planned arena.

    python tools/bench_memory.py [--targets executorch-xnnpack ort-cpu] [--models SPEC ...]

A ratio within 0.85..1.15 is within 15%. Linux only (both methods read /proc).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

DEFAULT_MODELS = ["mobilenetv2:width=1.0,res=224", "resnet:width=32,blocks=2,res=224",
                  "convnet:width=32,depth=6,res=224"]
DEFAULT_TARGETS = ["executorch-xnnpack", "ort-cpu"]

# The independent side: a bare runtime loop in its own process; prints {"peak_bytes": N}.
PROBE = textwrap.dedent(r"""
    import json, os, sys, threading, time
    import numpy as np
    page = os.sysconf("SC_PAGE_SIZE")
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page
    kind, path, shape, iters = sys.argv[1], sys.argv[2], tuple(json.loads(sys.argv[3])), int(sys.argv[4])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if kind == "executorch":
        import torch
        from executorch.runtime import Runtime
        from executorch.extension.pybindings import portable_lib
        portable_lib._unsafe_reset_threadpool(1)
        rt = Runtime.get()
    else:
        import onnxruntime as ort
        so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    peak, stop = [0], threading.Event()
    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.0002)
    def load():
        if kind == "executorch":
            method = rt.load_program(path).load_method("forward")
            xt = torch.from_numpy(x)
            return lambda: method.execute([xt])
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda: sess.run(None, {name: x})
    base = rss()  # the runtime imported and set up, no model yet
    th = threading.Thread(target=sample, daemon=True); th.start()
    run = load()
    for _ in range(iters):
        run()
    time.sleep(0.01)
    stop.set(); th.join()
    print(json.dumps({"peak_bytes": max(peak[0], rss()) - base}))
""")


def direct_peak(kind: str, path: Path, shape: tuple, iters: int) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, kind, str(path), json.dumps(list(shape)), str(iters)],
                         capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--targets", nargs="+", default=DEFAULT_TARGETS)
    ap.add_argument("--iters", type=int, default=20, help="inferences in the direct loop")
    args = ap.parse_args(argv)

    from edgekd.backends import get_backend
    from edgekd.deploy import open_model
    from edgekd.latency.memory import measure_memory
    from edgekd.targets import load_target

    print(f"# peak memory: edgekd (rss high-water over load + first 3 inferences, fresh process) vs direct "
          f"(fresh process, bare runtime loop of {args.iters}, rss sampled every 0.2 ms)")
    print(f"{'model':36s} {'target':20s} {'size KB':>9s} {'planned KB':>10s} {'edgekd MB':>10s} "
          f"{'direct MB':>10s} {'ratio':>6s}")
    worst = 0.0
    for name in args.targets:
        t = load_target(name)
        ok, why = get_backend(t.runtime).available(t)
        if not ok:
            print(f"# skipped {name}: {why}")
            continue
        for spec in args.models:
            with tempfile.TemporaryDirectory() as tmp:
                opened = open_model(spec, t, work_dir=Path(tmp), in_channels=3)
                opened.session.close()
                del opened.session
                mem = measure_memory(opened.artifact, t, opened.input_shape)
                direct = direct_peak(t.runtime.value, Path(opened.artifact.path), opened.input_shape,
                                     args.iters)
            ratio = mem.peak_bytes / direct if direct else float("nan")
            worst = max(worst, abs(ratio - 1.0))
            planned = "-" if mem.planned_arena_bytes is None else f"{mem.planned_arena_bytes / 1024:.0f}"
            print(f"{spec:36s} {name:20s} {mem.size_kb:9.1f} {planned:>10s} {mem.peak_mb:10.2f} "
                  f"{direct / 2**20:10.2f} {ratio:6.3f}")
    print(f"# largest deviation from the direct measurement: {worst * 100:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
