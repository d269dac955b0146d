#!/usr/bin/env python
"""Real-size models on the built-in RGB task (shapes): an hf: teacher, INT8 speed and accuracy,
and KD with few labels.

    python tools/bench_realsize.py teacher --out T [--spec hf-resnet:...] [--res 96] [--epochs 12]
        train a teacher with labels (cross-entropy) and write it with save_pretrained into T,
        the directory `edgekd compress --teacher hf:T` reads
    python tools/bench_realsize.py int8 [--student hf-mobilenetv2:width=0.5,res=128] [--epochs 8]
        train a student on shapes at its resolution, export it, quantize it for ort-cpu-int8
        and openvino-cpu-int8 and measure fp32 and int8 on each runtime in interleaved rounds:
        p50/p90 speed-up and top-1 drop; then what each runtime executes (OpenVINO: the compiled
        model's layers by runtime precision and kernel; ONNX Runtime: the optimized graph's ops)
    python tools/bench_realsize.py kd --teacher T [--fraction 0.2] [--seeds 0,1,2] [--ce-epochs N]
        labels-only (ce on the labelled part) against kd and dkd from the hf: teacher T (all
        train images, labels only on the labelled part), per seed; --ce-epochs adds a
        labels-only run with as many steps as kd's (epochs / fraction)

Everything trains with edgekd's one entry point (edgekd.distill.run.distill) and its defaults
unless a flag says otherwise; nothing is downloaded. With --workdir DIR each training run lives
in its own folder under DIR (named by its settings) and resumes there: a run that finished is
not trained again, so a re-measure costs only the measurement.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
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
           train_kw: dict | None = None, workdir: str | None = None, key: str = ""):
    """Train with distill into ``out``, or, with ``workdir``, into a folder of it named by the
    run's settings (``key`` names what else decides the run: data, teacher), resuming there."""
    from edgekd.distill.run import distill

    config = {"epochs": epochs, "seed": seed, **(train_kw or {})}
    if workdir:
        what = json.dumps([spec, loss, config, bundle.fingerprint, key], sort_keys=True, default=str)
        out = Path(workdir) / f"{loss}-{seed}-{hashlib.sha256(what.encode()).hexdigest()[:12]}"
    t0 = time.perf_counter()
    r = distill(spec, teacher, bundle, out, loss=loss, progress=False, resume=bool(workdir),
                config=config)
    return r, time.perf_counter() - t0


def cmd_teacher(args) -> int:
    from edgekd.data import load_data

    res = _res(args.spec)
    bundle = load_data(args.data, resolution=res, seed=0, labelled_fraction=1.0)
    with tempfile.TemporaryDirectory(prefix="bench-realsize-") as tmp:
        r, secs = _train(args.spec, None, bundle, Path(tmp), loss="ce", epochs=args.epochs,
                         train_kw=json.loads(args.train_kw), workdir=args.workdir,
                         key="teacher=None")  # int8's key for a labels-only run: one run serves both
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
    if args.teacher and not args.onnx:
        from edgekd.models.teacher import load_teacher

        teacher = load_teacher(f"hf:{args.teacher}", num_classes=bundle.num_classes,
                               in_channels=3)
    with tempfile.TemporaryDirectory(prefix="bench-realsize-") as tmp:
        tmp = Path(tmp)
        if args.onnx:
            onnx_path = Path(args.onnx)
            print(f"# student {onnx_path} (not trained here) on {args.data} at {res} px", flush=True)
        else:
            r, secs = _train(args.student, teacher, bundle, tmp / "train",
                             loss="kd" if teacher is not None else "ce", epochs=args.epochs,
                             train_kw=json.loads(args.train_kw), workdir=args.workdir,
                             key=f"teacher={args.teacher}")
            print(f"# trained {args.student} on {args.data} at {res} px, {args.epochs} epochs "
                  f"({'kd from ' + args.teacher if teacher is not None else 'labels'}) in {secs:.0f} s;"
                  f" torch val top-1 {r.best_acc:.4f} (epoch {r.best_epoch})", flush=True)
            print("val top-1 per epoch: " + " ".join(f"{h['val_acc']:.3f}" for h in r.history))
            onnx_path = export_onnx(r.model, np.zeros((1, *bundle.input_shape), np.float32),
                                    tmp / "student.onnx", metadata={"edgekd.spec": args.student})
            if args.save_onnx:
                shutil.copyfile(onnx_path, args.save_onnx)
        calib = calibration_from_dataset(bundle.train, args.calib_size, batch_size=32)
        x_val, y_val = dataset_arrays(bundle.val)
        result = compare_int8(onnx_path, x_val, y_val, calib, tmp, bundle.input_shape, method=args.method,
                              threads=args.threads, min_time=args.min_time, rounds=args.rounds, agreement=True,
                              ov_ranges=args.ov_ranges)

        print(f"# {len(x_val)} validation samples, {sum(len(b) for b in calib)} calibration samples, "
              f"method {args.method} (ORT) / performance preset, {args.ov_ranges} ranges (NNCF), {args.rounds} interleaved "
              f"rounds, threads {args.threads}, batch 1")
        print_int8_table(result)
        for name, session in result["sessions"].items():
            print(f"# {name} executes: {executed(session)}")
    return 0


def executed(session) -> str:
    """What a session runs, counted by kind: OpenVINO's compiled model, layer type / runtime
    precision / kernel; ONNX Runtime's graph after its optimizations, op types."""
    counts: collections.Counter = collections.Counter()
    extra = ""
    compiled = getattr(session, "compiled", None)
    if compiled is not None:  # OpenVINO
        import openvino as ov

        def text(rt, key):
            try:
                v = rt[key]
            except (KeyError, RuntimeError, IndexError):
                return ""
            return v.astype(str) if hasattr(v, "astype") else str(v)

        for op in compiled.get_runtime_model().get_ops():
            rt = op.get_rt_info()
            layer = text(rt, "layerType")
            if layer in ("Input", "Output", "Parameter", "Result", "Const"):
                continue
            counts[f"{layer}/{text(rt, 'runtimePrecision')}/{text(rt, 'primitiveType')}"] += 1
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        extra = (f"; threads {compiled.get_property('INFERENCE_NUM_THREADS')}, inference "
                 f"precision {compiled.get_property('INFERENCE_PRECISION_HINT').get_type_name()}, CPU capabilities "
                 f"{' '.join(caps)}")
    else:  # ONNX Runtime: the graph ORT_ENABLE_ALL leaves, written once to a scratch file
        import onnx
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="bench-realsize-ort-") as tmp:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3
            so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            ort.InferenceSession(str(session.path), sess_options=so,
                                 providers=["CPUExecutionProvider"])
            counts.update(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    return ", ".join(f"{k} x{v}" for k, v in counts.most_common()) + extra


def cmd_kd(args) -> int:
    from edgekd.data import load_data
    from edgekd.models.teacher import load_teacher

    res = _res(args.student)
    seeds = [int(s) for s in args.seeds.split(",")]
    losses = args.losses.split(",")
    runs = [(loss, loss, args.epochs) for loss in losses]
    if args.ce_epochs:  # labels-only again with as many steps as a run over all images takes
        runs.append((f"ce{args.ce_epochs}", "ce", args.ce_epochs))
    results: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    with tempfile.TemporaryDirectory(prefix="bench-realsize-") as tmp:
        for seed in seeds:
            bundle = load_data(args.data, resolution=res, seed=seed,
                               labelled_fraction=args.fraction)
            teacher = load_teacher(f"hf:{args.teacher}", num_classes=bundle.num_classes,
                                   in_channels=3)
            for name, loss, epochs in runs:
                r, secs = _train(args.student, None if loss == "ce" else teacher, bundle,
                                 Path(tmp) / f"{name}-{seed}", loss=loss, epochs=epochs,
                                 seed=seed, train_kw=json.loads(args.train_kw),
                                 workdir=args.workdir, key=f"teacher={args.teacher}")
                results[name].append(r.best_acc)
                print(f"seed {seed} {name:5s} val top-1 {r.best_acc:.4f} ({secs:.0f} s)",
                      flush=True)
    bases = {n: a for n, a in results.items() if n.startswith("ce")}
    print(f"# {args.student} on {args.data} at {res} px, {args.fraction:g} of the labels, "
          f"{args.epochs} epochs, teacher hf:{args.teacher}, seeds {args.seeds}")
    for loss, accs in results.items():
        gain = "" if loss in bases else "".join(
            f"  vs {n} {statistics.mean(a - b for a, b in zip(accs, base)) * 100:+.2f} pt"
            for n, base in bases.items())
        print(f"{loss:5s} mean {statistics.mean(accs):.4f} "
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
    q.add_argument("--ov-ranges", default="minmax", choices=["minmax", "mean-minmax"],
                   help="NNCF's activation ranges for openvino-cpu-int8")
    q.add_argument("--threads", type=int, default=1)
    q.add_argument("--save-onnx", default=None, help="keep the trained student's ONNX file here")
    q.add_argument("--onnx", default=None, help="measure this exported student (from --save-onnx) "
                   "instead of training one")
    k = sub.add_parser("kd")
    k.add_argument("--teacher", required=True)
    k.add_argument("--student", default="hf-mobilenetv2:width=0.5,res=96")
    k.add_argument("--fraction", type=float, default=0.2)
    k.add_argument("--seeds", default="0,1,2")
    k.add_argument("--losses", default="ce,kd,dkd")
    k.add_argument("--epochs", type=int, default=10)
    k.add_argument("--ce-epochs", type=int, default=0,
                   help="also train labels-only for this many epochs (e.g. epochs / fraction: "
                        "as many steps as kd takes over all images), reported as ceN")
    for p in (t, q, k):
        p.add_argument("--data", default=DATA)
        p.add_argument("--train-kw", default="{}", help="TrainConfig settings as JSON")
        p.add_argument("--workdir", default=None, help="train in a folder of DIR named by the "
                       "run's settings and resume there (a finished run is not trained again)")
    args = ap.parse_args(argv)
    return {"teacher": cmd_teacher, "int8": cmd_int8, "kd": cmd_kd}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
