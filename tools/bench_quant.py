#!/usr/bin/env python
"""INT8 vs fp32 on the CPU runtimes: accuracy and p50/p90 of the default student, in one run.

Trains "mobilenetv2:width=1.0,res=32" briefly on digits (so accuracy means something), exports
it to ONNX, quantizes it for ort-cpu-int8 (static QDQ) and openvino-cpu-int8 (NNCF), and
measures all four sessions (fp32 and int8 on each runtime) in interleaved rounds so machine
drift hits them alike. Goal: OpenVINO INT8 p50 >= 1.5x lower than fp32 with <= 1 point drop.

    python tools/bench_quant.py [--epochs 8] [--rounds 4] [--min-time 1.0] [--method minmax]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

SPEC = "mobilenetv2:width=1.0,res=32"
PAIRS = [("ort-cpu-int8", "ort-cpu"), ("openvino-cpu-int8", "openvino-cpu")]


def train(bundle, epochs: int, seed: int = 0):
    import torch
    from torch import nn

    from edgekd.models import build_model

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # a shared machine: one thread trains faster than oversubscribed ones
    model = build_model(SPEC, num_classes=bundle.num_classes, in_channels=bundle.in_channels)
    loader = torch.utils.data.DataLoader(bundle.train, batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            sched.step()
    return model.eval()


def export(model, shape, out: Path) -> Path:
    import numpy as np

    from edgekd.export import export_onnx

    return export_onnx(model, np.zeros((1, *shape), np.float32), out, metadata={"edgekd.spec": SPEC})


def compare_int8(onnx_path: Path, x_val, y_val, calib, tmp: Path, input_shape, *, method: str, threads: int,
                 min_time: float, rounds: int, agreement: bool = False, ov_ranges: str = "minmax") -> dict:
    """Quantize ``onnx_path`` for each INT8 target of PAIRS (skipping a runtime that is missing),
    build its fp32 twin, and measure accuracy on (x_val, y_val) and p50/p90 of all sessions in
    interleaved rounds. ``agreement``: also the fraction of val samples whose INT8 top-1 matches
    fp32. ``method`` is ONNX Runtime's calibration, ``ov_ranges`` NNCF's activation ranges
    (minmax or mean-minmax). Returns what print_int8_table prints, and the open sessions and their targets (for a
    look at what each runtime executes)."""
    import numpy as np

    from edgekd.latency.measure import environment_fingerprint, make_inputs
    from edgekd.quantize import check_runtime, quantize_for_target
    from edgekd.quantize.evaluate import build_fp32, files_size, load_session, measure_pair, top1_accuracy
    from edgekd.targets import load_target

    sessions, specs, sizes = {}, {}, {}
    for int8_name, fp32_name in PAIRS:
        t8 = load_target(int8_name).model_copy(update={"threads": threads})
        t32 = load_target(fp32_name).model_copy(update={"threads": threads})
        try:
            check_runtime(t8, evaluate=True)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other runtime
            print(f"# skipped {int8_name}: {exc}")
            continue
        art8 = quantize_for_target(onnx_path, t8, tmp / int8_name, calib,
                                   method=ov_ranges if t8.runtime.value == "openvino" else method)
        art32 = build_fp32(onnx_path, t32, tmp / fp32_name)
        for name, art, spec in ((fp32_name, art32, t32), (int8_name, art8, t8)):
            sessions[name] = load_session(art, spec)
            specs[name] = spec
            sizes[name] = files_size(art.paths)
    acc = {n: top1_accuracy(s, x_val, y_val, batch=specs[n].batch) for n, s in sessions.items()}
    agree = None
    if agreement:
        agree = {}
        for int8_name, fp32_name in PAIRS:
            if int8_name in sessions:
                a, b = (np.concatenate([np.asarray(sessions[n].run(x_val[i:i + 1])[0]).argmax(1)
                                        for i in range(len(x_val))]) for n in (fp32_name, int8_name))
                agree[int8_name] = float((a == b).mean())
    shape = (1, *input_shape)
    inputs = {n: make_inputs(s, shape) for n, s in sessions.items()}
    envs = {n: environment_fingerprint(specs[n], s, shape) for n, s in sessions.items()}
    settings = specs[next(iter(specs))].measure.model_copy(update={"min_time_s": min_time})
    stats = measure_pair(sessions, inputs, settings, rounds=rounds, environments=envs)
    return {"acc": acc, "agree": agree, "sizes": sizes, "stats": stats, "envs": envs,
            "sessions": sessions, "specs": specs}


def print_int8_table(result: dict) -> None:
    """One row per INT8 target: accuracy and drop, (agreement,) p50/p90 and their ratios, size ratio."""
    acc, agree, sizes, stats, envs = (result[k] for k in ("acc", "agree", "sizes", "stats", "envs"))
    agree_hdr = f" {'agree':>6s}" if agree is not None else ""
    print(f"{'int8 target':18s} {'acc fp32':>8s} {'acc int8':>8s} {'drop pt':>7s}{agree_hdr} {'p50 fp32':>9s} "
          f"{'p50 int8':>9s} {'p50 x':>6s} {'p90 fp32':>9s} {'p90 int8':>9s} {'p90 x':>6s} {'size x':>6s}")
    for int8_name, fp32_name in PAIRS:
        if int8_name not in stats:
            continue
        a, b = stats[fp32_name], stats[int8_name]
        agree_col = f" {agree[int8_name]:6.3f}" if agree is not None else ""
        print(f"{int8_name:18s} {acc[fp32_name] * 100:8.2f} {acc[int8_name] * 100:8.2f} "
              f"{(acc[fp32_name] - acc[int8_name]) * 100:7.2f}{agree_col} {a.p50:9.4f} {b.p50:9.4f} "
              f"{a.p50 / b.p50:6.2f} {a.p90:9.4f} {b.p90:9.4f} {a.p90 / b.p90:6.2f} "
              f"{sizes[fp32_name] / max(sizes[int8_name], 1):6.2f}")
    env = next(iter(envs.values()))
    print(f"# cpu: {env.get('cpu')} ({env.get('logical_cores')} logical cores); "
          f"unstable: {', '.join(n for n, s in stats.items() if s.unstable) or 'none'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--calib-size", type=int, default=300)
    ap.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    ap.add_argument("--ov-ranges", default="minmax", choices=["minmax", "mean-minmax"],
                    help="NNCF's activation ranges for openvino-cpu-int8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--onnx", type=Path, default=None,
                    help="Reuse this exported student instead of training one.")
    ap.add_argument("--save-onnx", type=Path, default=None,
                    help="Keep the trained student's ONNX file here (for a later --onnx run).")
    args = ap.parse_args(argv)

    import numpy as np

    from edgekd.data.sources import load_data
    from edgekd.data import calibration_from_dataset, dataset_arrays

    bundle = load_data("digits", resolution=32)
    model = None
    if args.onnx is None:
        t0 = time.perf_counter()
        model = train(bundle, args.epochs)
        print(f"# trained {SPEC} on digits@32 for {args.epochs} epochs in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    calib = calibration_from_dataset(bundle.train, args.calib_size, batch_size=32)
    x_val, y_val = dataset_arrays(bundle.val)

    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        tmp = Path(tmp)
        onnx_path = args.onnx or export(model, bundle.input_shape, tmp / "student.onnx")
        if args.save_onnx and model is not None:
            shutil.copyfile(onnx_path, args.save_onnx)
        result = compare_int8(onnx_path, x_val, y_val, calib, tmp, bundle.input_shape, method=args.method,
                              threads=args.threads, min_time=args.min_time, rounds=args.rounds,
                              ov_ranges=args.ov_ranges)

    print(f"# {len(x_val)} validation samples, {sum(len(b) for b in calib)} calibration samples, "
          f"method {args.method} (ORT) / performance preset, {args.ov_ranges} ranges (NNCF), {args.rounds} interleaved rounds, "
          f"threads {args.threads}")
    print_int8_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
