"""Latency-guided pruning on ort-cpu: a student that misses its budget is pruned until it meets it.

    python tools/bench_prune.py [--spec mobilenetv2:width=1.0,res=16] [--epochs 2]
                                [--factor 0.7] [--finetune 1]

Trains SPEC on digits (labels only, edgekd's trainer; it is also the teacher), measures its p90
on ort-cpu with the target's protocol, sets the budget to FACTOR × that p90, prunes to the
budget (short protocol per step) and fine-tunes by distillation. Prints p90 before/after vs the
budget (re-measured with the full protocol) and accuracy before pruning, after pruning, after
fine-tuning.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="mobilenetv2:width=1.0,res=16")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--factor", type=float, default=0.7)
    ap.add_argument("--finetune", type=int, default=1)
    ap.add_argument("--importance", default="l2")
    ap.add_argument("--target", default="ort-cpu")
    args = ap.parse_args()

    import torch

    from edgekd.data import load_data
    from edgekd.distill.criterion import build_criterion
    from edgekd.distill.runstate import restore_weights
    from edgekd.distill.trainer import TrainConfig, fit
    from edgekd.models import build_model, input_shape
    from edgekd.models.teacher import Teacher
    from edgekd.prune import measure_model, prune_to_budget
    from edgekd.targets import load_target

    target = load_target(args.target)
    res = input_shape(args.spec, 1)[-1]
    bundle = load_data("digits", resolution=res)
    torch.manual_seed(0)
    model = build_model(args.spec, num_classes=bundle.num_classes, in_channels=bundle.in_channels)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-prune-") as tmp:
        crit = build_criterion("ce", {}, num_classes=bundle.num_classes, student=model,
                               epochs=args.epochs)
        r = fit(model, crit, bundle, TrainConfig.make(epochs=args.epochs), Path(tmp) / "train",
                progress=False, log_json=False)
        restore_weights(r.paths["best"], model, crit)
        model.eval()
        train_s = time.perf_counter() - t0
        # the trained model is also the teacher (a frozen copy, run in torch)
        import copy

        frozen = copy.deepcopy(model).eval()
        teacher = Teacher(kind="torch", spec=args.spec, fingerprint="bench-prune",
                          module=frozen, num_classes=bundle.num_classes,
                          input_shape=tuple(bundle.input_shape))
        shape = tuple(bundle.input_shape)
        full = target.measure
        p90_0 = measure_model(model, shape, target, full).p90
        budget = round(args.factor * p90_0, 4)
        print(f"{args.spec} on digits ({args.epochs} epochs, {train_s:.0f} s): "
              f"p90 {p90_0:.3f} ms on {target.name}; budget {budget:.3f} ms "
              f"({args.factor} x p90)")
        t1 = time.perf_counter()
        result = prune_to_budget(model, teacher, bundle, target, budget,
                                 finetune_epochs=args.finetune, importance=args.importance,
                                 work_dir=Path(tmp), strict=False,
                                 on_step=lambda s: print(f"  ratio {s['ratio']:.1f}: p90 "
                                                         f"{s['p90']:.3f} ms, acc "
                                                         f"{s['acc']:.4f}, MACs {s['macs']:,}"))
        prune_s = time.perf_counter() - t1
        p90_1 = measure_model(result.model, shape, target, full).p90
    ok = p90_1 <= budget
    print(f"ratio {result.ratio}: MACs {result.before['macs']:,} -> {result.after['macs']:,}, "
          f"params {result.before['params']:,} -> {result.after['params']:,}")
    print(f"p90 (full protocol): before {p90_0:.3f} ms, after {p90_1:.3f} ms, budget "
          f"{budget:.3f} ms -> {'met' if ok else 'MISSED'}")
    ft = "-" if result.acc_finetuned is None else f"{result.acc_finetuned:.4f}"
    print(f"accuracy: before pruning {result.acc_before:.4f}, after pruning "
          f"{result.acc_pruned:.4f}, after fine-tuning ({args.finetune} epochs KD) {ft}")
    print(f"time: train {train_s:.0f} s, prune+fine-tune {prune_s:.0f} s")
    return 0 if ok and result.met else 1


if __name__ == "__main__":
    raise SystemExit(main())
