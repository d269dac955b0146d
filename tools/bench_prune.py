"""Latency-guided pruning on ort-cpu: a trained student that misses its budget is pruned until it
meets it, then fine-tuned by distillation.

    python tools/bench_prune.py [--spec mobilenetv2:width=1.0,res=16] [--epochs 10]
                                [--teacher resnet:width=32,blocks=1,res=16] [--teacher-epochs 10]
                                [--factor 0.7] [--finetune 5] [--importance l2] [--global]
                                [--recalibrate 512] [--margin 0.05] [--work DIR]

1. trains TEACHER on digits (labels only, edgekd's trainer);
2. distils SPEC from it (kd) for EPOCHS: the student to prune;
3. measures the student's p90 on the target with the target's protocol and sets the budget to
   FACTOR x that p90;
4. prunes to the budget (prune_to_budget: ratios 0.1, 0.2, ... from the trained weights, short
   protocol per step, a pass re-measured with the target's protocol; the loop aims MARGIN under
   the budget so that step 5's measurement noise does not undo it) and fine-tunes the pruned student by kd from the teacher for FINETUNE
   epochs;
   Each pruned candidate's BatchNorm statistics are re-estimated on RECALIBRATE training
   samples first (0: not; the accuracy after pruning then shows what stale statistics do);
5. re-measures the pruned student with the full protocol.

Prints accuracy before pruning / after pruning / after fine-tuning, p90 before / after / budget
and the time of each phase. --work keeps the trained teacher and student there (reused when
present, so importance or schedule options can be compared without retraining). Torch runs on
one thread unless OMP_NUM_THREADS says otherwise (the thread pool thrashes on shared cores).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def _train(spec, bundle, out: Path, *, epochs: int, teacher=None, loss: str = "ce"):
    """Train (or reuse) OUT/model.pt: SPEC on BUNDLE, with ``loss`` (kd needs ``teacher``)."""
    from edgekd.distill.run import distill
    from edgekd.models.checkpoint import read_checkpoint, save_checkpoint

    final = out / "model.pt"
    if final.is_file() and read_checkpoint(final)["extra"].get("epochs") == epochs:
        return final, float(read_checkpoint(final)["extra"]["val_acc"]), 0.0
    t0 = time.perf_counter()
    r = distill(spec, teacher, bundle, out / "train", config={"epochs": epochs}, loss=loss,
                progress=False, log_json=False)
    save_checkpoint(final, r.model, spec=spec, num_classes=bundle.num_classes,
                    in_channels=bundle.in_channels, input_shape=tuple(bundle.input_shape),
                    extra={"val_acc": r.best_acc, "epochs": epochs})
    return final, float(r.best_acc), time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="mobilenetv2:width=1.0,res=16")
    ap.add_argument("--epochs", type=int, default=10, help="student distillation epochs")
    ap.add_argument("--teacher", default="resnet:width=32,blocks=1,res=16")
    ap.add_argument("--teacher-epochs", type=int, default=10)
    ap.add_argument("--factor", type=float, default=0.7)
    ap.add_argument("--finetune", type=int, default=5, help="kd fine-tuning epochs after pruning")
    ap.add_argument("--importance", default="l2")
    ap.add_argument("--global", dest="global_pruning", action="store_true")
    ap.add_argument("--step", type=float, default=0.1)
    ap.add_argument("--recalibrate", type=int, default=512, help="BN recalibration samples")
    ap.add_argument("--margin", type=float, default=0.05, help="aim this fraction under the budget")
    ap.add_argument("--target", default="ort-cpu")
    ap.add_argument("--work", default=None, help="keep the trained teacher and student here")
    args = ap.parse_args()

    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)

    from edgekd.data import load_data
    from edgekd.models import input_shape
    from edgekd.models.checkpoint import load_checkpoint
    from edgekd.models.teacher import load_teacher
    from edgekd.prune import measure_model, prune_to_budget
    from edgekd.targets import load_target

    target = load_target(args.target)
    bundle = load_data("digits", resolution=input_shape(args.spec, 1)[-1])
    shape = tuple(bundle.input_shape)
    with tempfile.TemporaryDirectory(prefix="bench-prune-") as tmp:
        work = Path(args.work or tmp)
        tpath, t_acc, t_s = _train(args.teacher, bundle, work / "teacher",
                                   epochs=args.teacher_epochs)
        teacher = load_teacher(str(tpath))
        print(f"teacher {args.teacher}: {args.teacher_epochs} epochs ce, accuracy {t_acc:.4f} "
              f"({t_s:.0f} s)")
        spath, s_acc, s_s = _train(args.spec, bundle, work / "student", epochs=args.epochs,
                                   teacher=teacher, loss="kd")
        model = load_checkpoint(spath)[0]
        t0 = time.perf_counter()
        p90_0 = measure_model(model, shape, target, target.measure).p90
        budget = round(args.factor * p90_0, 4)
        m_s = time.perf_counter() - t0
        print(f"student {args.spec}: {args.epochs} epochs kd, accuracy {s_acc:.4f} ({s_s:.0f} s); "
              f"p90 {p90_0:.3f} ms on {target.name}; budget {budget:.3f} ms "
              f"({args.factor} x p90)")
        t1 = time.perf_counter()
        result = prune_to_budget(model, teacher, bundle, target, budget, step=args.step,
                                 finetune_epochs=args.finetune, importance=args.importance,
                                 global_pruning=args.global_pruning, work_dir=work / "prune",
                                 strict=False, recalibrate=args.recalibrate, margin=args.margin,
                                 on_step=lambda s: print(
                                     f"  ratio {s['ratio']:.1f}: p90 {s['p90']:.3f} ms "
                                     f"({s.get('protocol', 'short')} protocol), acc "
                                     f"{s['acc']:.4f}, MACs {s['macs']:,}"))
        prune_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        p90_1 = measure_model(result.model, shape, target, target.measure).p90
        m_s += time.perf_counter() - t2
    ok = p90_1 <= budget
    how = f"{args.importance}{', global' if args.global_pruning else ''}, BN recalibration " \
          f"{args.recalibrate or 'off'}"
    print(f"ratio {result.ratio} ({how}): "
          f"MACs {result.before['macs']:,} -> {result.after['macs']:,}, params "
          f"{result.before['params']:,} -> {result.after['params']:,}")
    print(f"p90 (full protocol): before {p90_0:.3f} ms, after {p90_1:.3f} ms, budget "
          f"{budget:.3f} ms -> {'met' if ok else 'MISSED'}")
    ft = "-" if result.acc_finetuned is None else f"{result.acc_finetuned:.4f}"
    print(f"accuracy: before pruning {result.acc_before:.4f}, after pruning "
          f"{result.acc_pruned:.4f}, after fine-tuning ({args.finetune} epochs kd) {ft}")
    print(f"time: teacher {t_s:.0f} s, student {s_s:.0f} s, prune steps + fine-tuning "
          f"{prune_s:.0f} s, full-protocol measurements {m_s:.0f} s")
    return 0 if ok and result.met else 1


if __name__ == "__main__":
    raise SystemExit(main())
