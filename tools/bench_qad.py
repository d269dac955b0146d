#!/usr/bin/env python
"""Quantization-aware distillation: does QAD win back what post-training INT8 loses?

A narrow depthwise student (by default mobilenetv2 at width 0.25 on digits at low resolution;
--data, --student, --teacher pick others) is distilled from a convnet teacher, then for each
seed:

- PTQ then QAD (KD loss, --qat always) on ort-cpu-int8 and openvino-cpu-int8: fp32, PTQ and QAD
  top-1 through the runtime, recovery = (QAD - PTQ) / (fp32 - PTQ);
- the INT8 speed-up over fp32 of PTQ and of QAD, the three sessions (fp32, PTQ, QAD) measured in
  interleaved rounds in this one run;
- QAD with the KD loss against QAT on labels only (loss ce), both at 20% labels, on ort-cpu-int8;
- CPU seconds of one QAD epoch against one plain distillation epoch of the same student.

With --ptq-only, each seed's student is only quantized by each runtime's PTQ (as `edgekd
quantize -t ort-cpu-int8` and `-t openvino-cpu-int8` run it) and its top-1 drops printed: a
quick screen for a student where PTQ costs points, before the full run.

    python tools/bench_qad.py [--seeds 0,1,2] [--res 8] [--student-epochs 15] [--qat-epochs 3]
        [--data digits] [--student SPEC] [--teacher SPEC] [--ptq-only] [--no-labels20]

A student or teacher spec may hold ``{res}``, replaced by --res.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

TEACHER = "convnet:width=16,depth=3"
STUDENT = "mobilenetv2:width=0.25,depth=0.5,res={res},stem_stride=1"
TARGETS = ("ort-cpu-int8", "openvino-cpu-int8")


def _teacher(spec, bundle, epochs, work):
    """The teacher: ``hf:DIR`` (a ready save_pretrained classifier, e.g. from
    tools/bench_realsize.py teacher) as it is, else ``spec`` trained here on labels."""
    import torch

    from edgekd.distill.cache import take
    from edgekd.distill.run import distill
    from edgekd.models.teacher import _torch_teacher, load_teacher

    if spec.startswith("hf:"):
        t = load_teacher(spec, num_classes=bundle.num_classes, in_channels=bundle.input_shape[0])
        x, y = take(bundle.val, torch.arange(len(bundle.val)))
        acc = float((torch.cat([t(b).argmax(1) for b in x.split(256)]) == y).float().mean())
        return t, types.SimpleNamespace(best_acc=acc)
    d = distill(spec, None, bundle, work / "teacher", config={"epochs": epochs, "seed": 0},
                loss="ce", progress=False)
    return _torch_teacher(d.model, spec=spec, fingerprint=f"bench-qad-teacher-{spec}", device="cpu",
                          num_classes=bundle.num_classes, input_shape=tuple(bundle.input_shape)), d


def _alternated(fp32_onnx, ptq_art, qad_art, spec, x, rounds):
    """p50 of fp32 (on the fp32 twin), PTQ INT8 and QAD INT8, measured in interleaved rounds."""
    from edgekd.latency.measure import make_inputs
    from edgekd.quantize.evaluate import build_fp32, load_session, measure_pair
    from edgekd.targets import fp32_twin

    twin = fp32_twin(spec)
    with tempfile.TemporaryDirectory() as tmp:
        f32 = build_fp32(fp32_onnx, twin, Path(tmp))
        sessions = {"fp32": load_session(f32, twin), "ptq": load_session(ptq_art, spec),
                    "qad": load_session(qad_art, spec)}
        shape = (spec.batch, *x.shape[1:])
        inputs = {k: make_inputs(s, shape) for k, s in sessions.items()}
        stats = measure_pair(sessions, inputs, spec.measure, rounds=rounds)
    return {k: v.p50 for k, v in stats.items()}


def _qad(student, teacher, bundle, target, out, args, seed, loss="kd"):
    from edgekd.quantize.qad import qad_model

    return qad_model(student, teacher, bundle, target, out, qat="always", epochs=args.qat_epochs,
                     loss=loss, calib_size=args.calib, rounds=1, force=True, seed=seed,
                     train_kw={"batch_size": 64})


def run_seed(seed, bundle, bundle20, teacher, args, work) -> dict:
    import torch

    from edgekd.distill.run import distill
    from edgekd.export import export_onnx
    from edgekd.quantize import quantize_for_target
    from edgekd.quantize.qad_torch import fold_batchnorm
    from edgekd.targets import load_target

    d = distill(args.student, teacher, bundle, work / f"student{seed}",
                config={"epochs": args.student_epochs, "seed": seed}, loss="kd", progress=False)
    student = d.model
    row = {"seed": seed, "student_fp32_torch": d.best_acc,
           "distill_epoch_cpu_s": statistics.median(h["train_cpu_s"] for h in d.history)}
    if args.ptq_only:
        return ptq_screen(row, student, bundle, args, work, seed)
    for target in TARGETS:
        t0 = time.perf_counter()
        rep = _qad(student, teacher, bundle, target, work / f"{target}-{seed}", args, seed)
        fp32, ptq, qad = rep.ptq.fp32.accuracy, rep.ptq.int8.accuracy, rep.qad.int8.accuracy
        drop = fp32 - ptq
        # the PTQ artifact again (deterministic), next to the kept QAD one, timed in alternation
        gm = fold_batchnorm(student)
        x = torch.stack([bundle.val[i][0] for i in range(8)])
        onnx32 = export_onnx(gm, x[:1], work / f"fp32-{target}-{seed}.onnx", dynamic_batch=True)
        from edgekd.data import calibration_from_dataset

        calib = calibration_from_dataset(bundle.train, args.calib, batch_size=32, seed=seed)
        ptq_art = quantize_for_target(onnx32, target, work / f"ptq-{target}-{seed}", calib)
        qad_art = rep.qad.artifact if rep.chosen == "qad" else None
        lat = (_alternated(onnx32, ptq_art, qad_art, load_target(target), x.numpy(), args.rounds)
               if qad_art is not None else {})
        row[target] = {
            "fp32": fp32, "ptq": ptq, "qad": qad, "ptq_drop_pts": drop * 100,
            "recovery": (qad - ptq) / drop if drop > 0 else None, "kept": rep.chosen,
            "speedup_ptq": lat["fp32"] / lat["ptq"] if lat else None,
            "speedup_qad": lat["fp32"] / lat["qad"] if lat else None,
            "qad_epoch_cpu_s": statistics.median(rep.train["epoch_cpu_s"]),
            "parity_cosine": rep.parity["cosine"], "wall_s": round(time.perf_counter() - t0, 1)}
        if lat:
            row[target]["speedup_kept"] = row[target]["speedup_qad"] / row[target]["speedup_ptq"]
        print(json.dumps({"seed": seed, target: row[target]}), flush=True)
    if args.no_labels20:
        return row
    kd = _qad(student, teacher, bundle20, "ort-cpu-int8", work / f"kd20-{seed}", args, seed)
    ce = _qad(student, None, bundle20, "ort-cpu-int8", work / f"ce20-{seed}", args, seed, loss="ce")
    row["labels20"] = {"qad_kd": kd.qad.int8.accuracy, "qat_ce": ce.qad.int8.accuracy,
                       "ptq": kd.ptq.int8.accuracy}
    print(json.dumps({"seed": seed, "labels20": row["labels20"]}), flush=True)
    return row


def ptq_screen(row, student, bundle, args, work, seed) -> dict:
    """Each CPU runtime's PTQ of the (BatchNorm-folded) student: fp32 and INT8 top-1 through the
    runtime, the same graph, calibration and validation images as the full run."""
    import torch

    from edgekd.data import calibration_from_dataset, dataset_arrays
    from edgekd.export import export_onnx
    from edgekd.quantize import quantize_for_target
    from edgekd.quantize.evaluate import build_fp32, load_session, top1_accuracy
    from edgekd.quantize.qad_torch import fold_batchnorm
    from edgekd.targets import fp32_twin, load_target

    gm = fold_batchnorm(student)
    calib = calibration_from_dataset(bundle.train, args.calib, batch_size=32, seed=seed)
    x_val, y_val = dataset_arrays(bundle.val, None, seed=seed)
    onnx32 = export_onnx(gm, torch.from_numpy(calib[0][:1]), work / f"screen{seed}.onnx",
                         dynamic_batch=True)
    for target in TARGETS:
        spec = load_target(target)
        art = quantize_for_target(onnx32, spec, work / f"screen-ptq-{target}-{seed}", calib)
        f32 = build_fp32(onnx32, fp32_twin(spec), work / f"screen-fp32-{target}-{seed}")
        acc = {k: top1_accuracy(load_session(a, t), x_val, y_val)
               for k, a, t in (("fp32", f32, fp32_twin(spec)), ("ptq", art, spec))}
        row[target] = {**acc, "ptq_drop_pts": (acc["fp32"] - acc["ptq"]) * 100,
                       "val_samples": len(x_val)}
    print(json.dumps({"seed": seed, "torch_fp32": row["student_fp32_torch"],
                      **{t: row[t] for t in TARGETS}}), flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--res", type=int, default=8)
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--student-epochs", type=int, default=15)
    ap.add_argument("--qat-epochs", type=int, default=3)
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--data", default="digits", help="a data spec (e.g. shapes:n=1500)")
    ap.add_argument("--student", default=STUDENT, help="student spec; {res} is --res")
    ap.add_argument("--teacher", default=TEACHER, help="teacher spec (trained here on labels), "
                    "or hf:DIR, a save_pretrained classifier used as it is")
    ap.add_argument("--no-labels20", action="store_true",
                    help="skip the 20%%-labels comparison (KD against labels-only QAT)")
    ap.add_argument("--ptq-only", action="store_true",
                    help="only print each runtime's PTQ drop per seed (a screen)")
    args = ap.parse_args(argv)
    args.student = args.student.format(res=args.res)
    args.teacher = args.teacher.format(res=args.res)
    import torch

    from edgekd.data import load_data

    torch.set_num_threads(1)  # a shared 2-core machine: one thread each
    bundle = load_data(args.data, resolution=args.res)
    bundle20 = load_data(args.data, resolution=args.res, labelled_fraction=0.2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-qad-") as tmp:
        work = Path(tmp)
        teacher, td = _teacher(args.teacher, bundle, args.teacher_epochs, work)
        print(json.dumps({"data": args.data, "teacher": args.teacher, "val_acc": td.best_acc,
                          "student": args.student, "res": args.res,
                          "qat_epochs": args.qat_epochs}), flush=True)
        for seed in [int(s) for s in args.seeds.split(",")]:
            rows.append(run_seed(seed, bundle, bundle20, teacher, args, work))
    if args.ptq_only:
        for target in TARGETS:
            drops = [r[target]["ptq_drop_pts"] for r in rows]
            print(f"{target} PTQ drop (points): {[round(d, 2) for d in drops]}, mean "
                  f"{statistics.mean(drops):.2f}")
        return 0
    print("\nsummary (mean over seeds)")
    for target in TARGETS:
        get = lambda k: [r[target][k] for r in rows if r[target].get(k) is not None]  # noqa: E731
        mean = lambda k: statistics.mean(get(k)) if get(k) else float("nan")  # noqa: E731
        print(f"{target}: fp32 {mean('fp32'):.4f}  PTQ {mean('ptq'):.4f} (drop "
              f"{mean('ptq_drop_pts'):.2f} pts)  QAD {mean('qad'):.4f}  recovery "
              f"{[round(v, 2) for v in get('recovery')]}  speed-up kept (QAD/PTQ) "
              f"{[round(v, 3) for v in get('speedup_kept')]}  QAD epoch CPU / distill epoch CPU "
              f"{statistics.mean(r[target]['qad_epoch_cpu_s'] / r['distill_epoch_cpu_s'] for r in rows):.2f}")
    if args.no_labels20:
        return 0
    kd = statistics.mean(r["labels20"]["qad_kd"] for r in rows)
    ce = statistics.mean(r["labels20"]["qat_ce"] for r in rows)
    print(f"20% labels, ort-cpu-int8: QAD (kd) {kd:.4f} vs QAT (labels only) {ce:.4f}: "
          f"{(kd - ce) * 100:+.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
