#!/usr/bin/env python
"""Real-size models on the built-in RGB task (shapes): an hf: teacher, INT8 speed and accuracy,
and KD with few labels.

    python tools/bench_realsize.py teacher --out T [--spec hf-resnet:...] [--res 96] [--epochs 12]
        train a teacher with labels (cross-entropy) and write it with save_pretrained into T,
        the directory `edgekd compress --teacher hf:T` reads
    python tools/bench_realsize.py int8 [--student hf-mobilenetv2:width=0.5,res=128] [--epochs 8]
        train a student on shapes at its resolution, export it, quantize it for ort-cpu-int8
        and openvino-cpu-int8 and measure fp32 and int8 on each runtime in interleaved rounds:
        p50/p90 speed-up and top-1 drop
    python tools/bench_realsize.py kd --teacher T [--fraction 0.2] [--seeds 0,1,2]
        labels-only (ce on the labelled part) against kd and dkd from the hf: teacher T (all
        train images, labels only on the labelled part), per seed

Everything trains with edgekd's one entry point (edgekd.distill.run.distill) and its defaults
unless a flag says otherwise; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

DATA = "shapes:classes=10,n=3000,seed=0,clutter=0.5"


def _res(spec: str) -> int:
    from edgekd.models import parse_spec

    return int(parse_spec(spec).config.res)


def _train(spec: str, teacher, bundle, out: Path, *, loss: str, epochs: int, seed: int = 0,
           train_kw: dict | None = None):
    from edgekd.distill.run import distill

    t0 = time.perf_counter()
    r = distill(spec, teacher, bundle, out, loss=loss, progress=False,
                config={"epochs": epochs, "seed": seed, **(train_kw or {})})
    return r, time.perf_counter() - t0


def cmd_teacher(args) -> int:
    from edgekd.data import load_data

    res = _res(args.spec)
    bundle = load_data(args.data, resolution=res, seed=0, labelled_fraction=1.0)
    with tempfile.TemporaryDirectory(prefix="bench-realsize-") as tmp:
        r, secs = _train(args.spec, None, bundle, Path(tmp), loss="ce", epochs=args.epochs,
                         train_kw=json.loads(args.train_kw))
    out = Path(args.out)
    r.model.model.config.image_size = res
    r.model.model.save_pretrained(out)
    print(f"# teacher {args.spec} on {args.data} at {res} px, {args.epochs} epochs in {secs:.0f} s")
    print("val top-1 per epoch: " + " ".join(f"{h['val_acc']:.3f}" for h in r.history))
    print(f"best val top-1 {r.best_acc:.4f} (epoch {r.best_epoch}); saved to {out}")
    return 0


def cmd_int8(args) -> int:
    import shutil

    import numpy as np

    from edgekd.data import calibration_from_dataset, dataset_arrays, load_data
    from edgekd.export import export_onnx
    from bench_quant import compare_int8, print_int8_table  # tools/ is on sys.path when run as a script

    res = _res(args.student)
    bundle = load_data(args.data, resolution=res, seed=0, labelled_fraction=1.0)
    teacher = None
    if args.teacher:
        from edgekd.models.teacher import load_teacher

        teacher = load_teacher(f"hf:{args.teacher}", num_classes=bundle.num_classes,
                               in_channels=3)
    with tempfile.TemporaryDirectory(prefix="bench-realsize-") as tmp:
        tmp = Path(tmp)
        r, secs = _train(args.student, teacher, bundle, tmp / "train",
                         loss="kd" if teacher is not None else "ce", epochs=args.epochs,
                         train_kw=json.loads(args.train_kw))
        print(f"# trained {args.student} on {args.data} at {res} px, {args.epochs} epochs "
              f"({'kd from ' + args.teacher if teacher is not None else 'labels'}) in {secs:.0f} s;"
              f" torch val top-1 {r.best_acc:.4f}", flush=True)
        calib = calibration_from_dataset(bundle.train, args.calib_size, batch_size=32)
        x_val, y_val = dataset_arrays(bundle.val)
        onnx_path = export_onnx(r.model, np.zeros((1, *bundle.input_shape), np.float32),
                                tmp / "student.onnx", metadata={"edgekd.spec": args.student})
        if args.save_onnx:
            shutil.copyfile(onnx_path, args.save_onnx)
        result = compare_int8(onnx_path, x_val, y_val, calib, tmp, bundle.input_shape, method=args.method,
                              threads=args.threads, min_time=args.min_time, rounds=args.rounds, agreement=True)

    print(f"# {len(x_val)} validation samples, {sum(len(b) for b in calib)} calibration samples, "
          f"method {args.method} (ORT) / performance preset (NNCF), {args.rounds} interleaved "
          f"rounds, threads {args.threads}, batch 1")
    print_int8_table(result)
    return 0


def cmd_kd(args) -> int:
    from edgekd.data import load_data
    from edgekd.models.teacher import load_teacher

    res = _res(args.student)
    seeds = [int(s) for s in args.seeds.split(",")]
    losses = args.losses.split(",")
    results: dict[str, list[float]] = {loss: [] for loss in losses}
    with tempfile.TemporaryDirectory(prefix="bench-realsize-") as tmp:
        for seed in seeds:
            bundle = load_data(args.data, resolution=res, seed=seed,
                               labelled_fraction=args.fraction)
            teacher = load_teacher(f"hf:{args.teacher}", num_classes=bundle.num_classes,
                                   in_channels=3)
            for loss in losses:
                r, secs = _train(args.student, None if loss == "ce" else teacher, bundle,
                                 Path(tmp) / f"{loss}-{seed}", loss=loss, epochs=args.epochs,
                                 seed=seed, train_kw=json.loads(args.train_kw))
                results[loss].append(r.best_acc)
                print(f"seed {seed} {loss:4s} val top-1 {r.best_acc:.4f} ({secs:.0f} s)",
                      flush=True)
    base = results.get("ce")
    print(f"# {args.student} on {args.data} at {res} px, {args.fraction:g} of the labels, "
          f"{args.epochs} epochs, teacher hf:{args.teacher}, seeds {args.seeds}")
    for loss, accs in results.items():
        gain = ""
        if base and loss != "ce":
            gain = f"  vs labels-only {statistics.mean(a - b for a, b in zip(accs, base)) * 100:+.2f} pt"
        print(f"{loss:4s} mean {statistics.mean(accs):.4f} "
              f"({' '.join(f'{a:.4f}' for a in accs)}){gain}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("teacher")
    t.add_argument("--out", required=True)
    t.add_argument("--spec", default="hf-resnet:width=32,depths=1-1-1-1,res=96")
    t.add_argument("--epochs", type=int, default=12)
    q = sub.add_parser("int8")
    q.add_argument("--student", default="hf-mobilenetv2:width=0.5,res=128")
    q.add_argument("--epochs", type=int, default=8)
    q.add_argument("--teacher", default=None, help="an hf save_pretrained directory: train by kd")
    q.add_argument("--rounds", type=int, default=4)
    q.add_argument("--min-time", type=float, default=1.0)
    q.add_argument("--calib-size", type=int, default=300)
    q.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    q.add_argument("--threads", type=int, default=1)
    q.add_argument("--save-onnx", default=None, help="keep the trained student's ONNX file here")
    k = sub.add_parser("kd")
    k.add_argument("--teacher", required=True)
    k.add_argument("--student", default="hf-mobilenetv2:width=0.5,res=96")
    k.add_argument("--fraction", type=float, default=0.2)
    k.add_argument("--seeds", default="0,1,2")
    k.add_argument("--losses", default="ce,kd,dkd")
    k.add_argument("--epochs", type=int, default=10)
    for p in (t, q, k):
        p.add_argument("--data", default=DATA)
        p.add_argument("--train-kw", default="{}", help="TrainConfig settings as JSON")
    args = ap.parse_args(argv)
    return {"teacher": cmd_teacher, "int8": cmd_int8, "kd": cmd_kd}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
