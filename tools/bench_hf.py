#!/usr/bin/env python
"""Every hf- student family at 224 px (RGB, batch 1) on ort-cpu and openvino-cpu: export parity
(max |diff| against torch on 16 seeded inputs) and p50/p90, the two runtimes measured in
alternation (measure.measure_interleaved) so that the machine's drift hits both alike; the
ratio is openvino-cpu p50 / ort-cpu p50 of the same run. On a shared machine a run longer than
the scheduler's slice waits for a CPU in most samples: `quiet p50` is the median of the samples
not descheduled (else of the fastest tenth; latency.profile.quiet_stats), `disturbed` their share.

    python tools/bench_hf.py [--models SPEC ...] [--min-time 2] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

MODELS = ["hf-mobilenetv2:width=1,res=224", "hf-mobilevit:size=xxs,res=224",
          "hf-resnet:width=64,depths=2-2-2-2,res=224", "hf-efficientnet:width=1,depth=1,res=224"]
TARGETS = ["ort-cpu", "openvino-cpu"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds of timing, both runtimes together")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    from edgekd.deploy import export_ref, open_model
    from edgekd.latency.measure import close_session, environment_fingerprint, make_inputs, measure_interleaved
    from edgekd.models import count_macs_params, input_shape
    from edgekd.latency.profile import quiet_stats
    from edgekd.models.ref import load_module

    from bench_runtimes import available_targets  # tools/ is on sys.path when run as a script

    targets = available_targets(TARGETS, args.threads)
    print(f"# threads={args.threads} batch=1 RGB min_time_s={args.min_time} (both runtimes, in alternation)")
    print(f"{'model':44s} {'MMACs':>7s} {'params':>9s} {'target':13s} {'parity max|diff|':>16s} {'ok':>3s} "
          f"{'export s':>8s} {'p50 ms':>8s} {'p90 ms':>8s} {'ov/ort p50':>10s} {'quiet p50':>9s} {'disturbed':>9s}")
    env = None
    failed = 0
    for spec in args.models:
        shape = input_shape(spec, 3)
        module, _ = load_module(spec, shape, num_classes=1000, in_channels=3)
        macs, params = count_macs_params(module, shape)
        with tempfile.TemporaryDirectory() as tmp:
            rows, openeds = [], []
            try:
                for t in targets:
                    t0 = time.monotonic()
                    res = export_ref(spec, t, Path(tmp) / t.name, num_classes=1000, in_channels=3)
                    export_s = time.monotonic() - t0
                    opened = open_model(res.out / res.artifact.path.name, t, work_dir=Path(tmp) / f"{t.name}-open",
                                        sample_shape=shape)
                    openeds.append(opened)
                    env = env or environment_fingerprint(t, opened.session, opened.input_shape)
                    rows.append((t, res.parity, export_s))
                settings = targets[0].measure.model_copy(update={"min_time_s": args.min_time})
                ms = measure_interleaved([o.session for o in openeds],
                                         [make_inputs(o.session, tuple(o.input_shape)) for o in openeds], settings)
            finally:
                for o in openeds:
                    close_session(o.session)
        p50 = {t.name: m.stats.p50 for (t, _, _), m in zip(rows, ms)}
        for (t, parity, export_s), m in zip(rows, ms):
            ratio = (f"{p50['openvino-cpu'] / p50['ort-cpu']:10.3f}"
                     if t.name == "openvino-cpu" and "ort-cpu" in p50 else f"{'':>10s}")
            q = quiet_stats(m).p50 if quiet_stats(m) is not None else float("nan")
            ok = parity is None or parity.passed
            failed += not ok
            diff = f"{parity.max_abs_diff:16.2e}" if parity is not None else f"{'(onnx itself)':>16s}"
            print(f"{spec:44s} {macs / 1e6:7.0f} {params:9,d} {t.name:13s} {diff} {'yes' if ok else 'NO':>3s} "
                  f"{export_s:8.1f} {m.stats.p50:8.3f} {m.stats.p90:8.3f} {ratio} {q:9.3f} "
                  f"{m.stats.disturbed / max(m.stats.n, 1):9.0%}")
    if env:
        print(f"# cpu: {env['cpu']} ({env['logical_cores']} logical cores)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
