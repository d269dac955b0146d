#!/usr/bin/env python
"""Quantization-aware distillation: does QAD win back what post-training INT8 loses?

On digits at low resolution, a narrow depthwise student (mobilenetv2 at width 0.25) is
distilled from a convnet teacher, then for each seed:

- PTQ then QAD (KD loss, --qat always) on ort-cpu-int8 and openvino-cpu-int8: fp32, PTQ and QAD
  top-1 through the runtime, recovery = (QAD - PTQ) / (fp32 - PTQ);
- the INT8 speed-up over fp32 of PTQ and of QAD, the three sessions (fp32, PTQ, QAD) measured in
  interleaved rounds in this one run;
- QAD with the KD loss against QAT on labels only (loss ce), both at 20% labels, on ort-cpu-int8;
- CPU seconds of one QAD epoch against one plain distillation epoch of the same student.

    python tools/bench_qad.py [--seeds 0,1,2] [--res 8] [--student-epochs 15] [--qat-epochs 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

TEACHER = "convnet:width=16,depth=3"
STUDENT = "mobilenetv2:width=0.25,depth=0.5,res={res},stem_stride=1"


def _teacher(bundle, epochs, work):
    from edgekd.distill.run import distill
    from edgekd.models.teacher import _torch_teacher

    d = distill(TEACHER, None, bundle, work / "teacher", config={"epochs": epochs, "seed": 0},
                loss="ce", progress=False)
    return _torch_teacher(d.model, spec=TEACHER, fingerprint="bench-qad-teacher", device="cpu",
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

    spec = STUDENT.format(res=args.res)
    d = distill(spec, teacher, bundle, work / f"student{seed}",
                config={"epochs": args.student_epochs, "seed": seed}, loss="kd", progress=False)
    student = d.model
    row = {"seed": seed, "student_fp32_torch": d.best_acc,
           "distill_epoch_cpu_s": statistics.median(h["train_cpu_s"] for h in d.history)}
    for target in ("ort-cpu-int8", "openvino-cpu-int8"):
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
    kd = _qad(student, teacher, bundle20, "ort-cpu-int8", work / f"kd20-{seed}", args, seed)
    ce = _qad(student, None, bundle20, "ort-cpu-int8", work / f"ce20-{seed}", args, seed, loss="ce")
    row["labels20"] = {"qad_kd": kd.qad.int8.accuracy, "qat_ce": ce.qad.int8.accuracy,
                       "ptq": kd.ptq.int8.accuracy}
    print(json.dumps({"seed": seed, "labels20": row["labels20"]}), flush=True)
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
    args = ap.parse_args(argv)
    import torch

    from edgekd.data import load_data

    torch.set_num_threads(1)  # a shared 2-core machine: one thread each
    bundle = load_data("digits", resolution=args.res)
    bundle20 = load_data("digits", resolution=args.res, labelled_fraction=0.2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-qad-") as tmp:
        work = Path(tmp)
        teacher, td = _teacher(bundle, args.teacher_epochs, work)
        print(json.dumps({"teacher": TEACHER, "val_acc": td.best_acc,
                          "student": STUDENT.format(res=args.res), "res": args.res,
                          "qat_epochs": args.qat_epochs}), flush=True)
        for seed in [int(s) for s in args.seeds.split(",")]:
            rows.append(run_seed(seed, bundle, bundle20, teacher, args, work))
    print("\nsummary (mean over seeds)")
    for target in ("ort-cpu-int8", "openvino-cpu-int8"):
        get = lambda k: [r[target][k] for r in rows if r[target].get(k) is not None]  # noqa: E731
        mean = lambda k: statistics.mean(get(k)) if get(k) else float("nan")  # noqa: E731
        print(f"{target}: fp32 {mean('fp32'):.4f}  PTQ {mean('ptq'):.4f} (drop "
              f"{mean('ptq_drop_pts'):.2f} pts)  QAD {mean('qad'):.4f}  recovery "
              f"{[round(v, 2) for v in get('recovery')]}  speed-up kept (QAD/PTQ) "
              f"{[round(v, 3) for v in get('speedup_kept')]}  QAD epoch CPU / distill epoch CPU "
              f"{statistics.mean(r[target]['qad_epoch_cpu_s'] / r['distill_epoch_cpu_s'] for r in rows):.2f}")
    kd = statistics.mean(r["labels20"]["qad_kd"] for r in rows)
    ce = statistics.mean(r["labels20"]["qat_ce"] for r in rows)
    print(f"20% labels, ort-cpu-int8: QAD (kd) {kd:.4f} vs QAT (labels only) {ce:.4f}: "
          f"{(kd - ce) * 100:+.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
