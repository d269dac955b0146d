#!/usr/bin/env python
"""p50 and p90 of built-in models at batch 1 on every local runtime, and each one's ratio
against torch eager, measured in one run; with ExecuTorch installed, also its INT8 program's
p50 against its fp32 one (XNNPACK's PT2E quantizer, calibrated on 32 seeded random samples:
enough for latency, which does not depend on the calibration values).

The runtimes are measured in interleaved rounds (A B C, B C A, ...) so that drift in machine
load hits all of them alike; each ratio is the median of the per-round ratios.

    python tools/bench_runtimes.py [--rounds 3] [--models SPEC ...] [--threads 1] [--in-channels 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

DEFAULT_MODELS = ["mobilenetv2:width=1.0,res=32", "resnet:width=16,blocks=2,res=32",
                  "mobilenetv2:width=1.0,res=224", "resnet:width=16,blocks=2,res=224"]
TARGETS = ["torch-cpu", "ort-cpu", "openvino-cpu", "executorch-xnnpack", "executorch-xnnpack-int8"]


def available_targets(names, threads: int) -> list:
    """The named targets at ``threads`` threads whose runtime is installed; the others are
    reported as skipped, with why."""
    from edgekd.backends import get_backend
    from edgekd.targets import load_target

    targets = []
    for name in names:
        t = load_target(name).model_copy(update={"threads": threads})
        ok, why = get_backend(t.runtime).available(t)
        if ok:
            targets.append(t)
        else:
            print(f"# skipped {name}: {why}")
    return targets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--in-channels", type=int, default=3)
    args = ap.parse_args(argv)

    from edgekd.deploy import open_model
    from edgekd.latency.measure import environment_fingerprint, make_inputs, measure_session
    import numpy as np

    targets = available_targets(TARGETS, args.threads)
    env = None
    print(f"# rounds={args.rounds} threads={args.threads} batch=1 min_time_s={args.min_time} "
          f"in_channels={args.in_channels}")
    print(f"{'model':38s} {'target':24s} {'p50 ms':>9s} {'p90 ms':>9s} {'p50/torch':>10s} {'p90/torch':>10s}")
    int8_ratios = []
    for spec in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            sessions = {}
            for t in targets:
                calib = None
                if t.is_int8:
                    from edgekd.models import input_shape

                    shape = tuple(input_shape(spec, args.in_channels))
                    calib = [np.random.default_rng(0).standard_normal((32, *shape)).astype(np.float32)]
                opened = open_model(spec, t, work_dir=Path(tmp) / t.name, in_channels=args.in_channels,
                                    calib=calib)
                sessions[t.name] = (opened, make_inputs(opened.session, tuple(opened.input_shape)))
                env = env or environment_fingerprint(t, opened.session, opened.input_shape)
            per_round = {t.name: [] for t in targets}
            for r in range(args.rounds):
                order = targets[r % len(targets):] + targets[:r % len(targets)]
                for t in order:
                    opened, x = sessions[t.name]
                    s = t.measure.model_copy(update={"min_time_s": args.min_time})
                    m = measure_session(opened.session, x, s)
                    per_round[t.name].append((m.stats.p50, m.stats.p90))
            ref = per_round.get("torch-cpu")
            for t in targets:
                rows = per_round[t.name]
                p50 = statistics.median(a for a, _ in rows)
                p90 = statistics.median(b for _, b in rows)
                if ref:
                    r50 = statistics.median(a / ra for (a, _), (ra, _) in zip(rows, ref))
                    r90 = statistics.median(b / rb for (_, b), (_, rb) in zip(rows, ref))
                    rs = f"{r50:10.3f} {r90:10.3f}"
                else:
                    rs = f"{'n/a':>10s} {'n/a':>10s}"
                print(f"{spec:38s} {t.name:24s} {p50:9.4f} {p90:9.4f} {rs}")
            fp, q = per_round.get("executorch-xnnpack"), per_round.get("executorch-xnnpack-int8")
            if fp and q:
                int8_ratios.append((spec, statistics.median(a / b for (a, _), (b, _) in zip(q, fp))))
    for spec, r in int8_ratios:
        print(f"# executorch-xnnpack-int8 / executorch-xnnpack p50 on {spec}: {r:.3f}")
    if env:
        print(f"# cpu: {env['cpu']} ({env['logical_cores']} logical cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
