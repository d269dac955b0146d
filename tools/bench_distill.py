"""Distillation benchmark on the built-in digits at 16×16 (a few minutes on 2 CPU cores).

1. Train a teacher (ResNet) on all labels and report its validation accuracy (goal: >= 97%).
2. A student with <= 1/10 of the teacher's MACs learns from 20% of the labels while the
   teacher sees every image: plain CE on the labelled 20% (same number of optimizer steps as
   distillation) versus kd, dkd and dist, 3 seeds each; mean ± std per loss, and whether
   kd and dkd beat the baseline by >= 2 points.
3. Epoch time of distillation with the teacher-logit cache and with the teacher run live,
   relative to plain training of the same student on the same images (goal: cache <= 1.15×).
   Measured on one thread as process CPU time (robust on a shared machine) and wall time.

    python tools/bench_distill.py [--seeds 3] [--epochs 8] [--teacher-epochs 8]
    python tools/bench_distill.py --losses dist --seed-list 1 --grad-clip 5 --no-baseline \
        --no-timing        # one loss, chosen seeds, gradient clipping; skip the rest

Everything is measured in this run; nothing is read from earlier runs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TEACHER = "resnet:width=16,blocks=2,res=16"
STUDENT = "convnet:width=8,res=16"
LOSSES = ("kd", "dkd", "dist")


def _train(spec, loss, bundle, config, out, teacher=None, options=None):
    """edgekd's one fit-restore-deploy entry point: (deployable model, its Distilled result)."""
    from edgekd.distill.run import distill

    res = distill(spec, teacher, bundle, out, config=config, loss=loss, loss_options=options,
                  progress=False)
    return res.model, res


def _epoch_time(res, key: str, skip: int = 1) -> float:
    return statistics.median([h[key] for h in res.history][skip:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8, help="distillation epochs")
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--timing-epochs", type=int, default=4)
    ap.add_argument("--work", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--losses", default=",".join(LOSSES),
                    help=f"comma-separated distillation losses [default: {','.join(LOSSES)}]")
    ap.add_argument("--seed-list", default=None,
                    help="comma-separated seeds to run (overrides --seeds), e.g. 1 or 0,2")
    ap.add_argument("--grad-clip", type=float, default=None,
                    help="clip the global gradient norm of the distillation runs (default: off)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the 20%%-label ce baseline")
    ap.add_argument("--no-timing", action="store_true", help="skip the epoch-time comparison")
    args = ap.parse_args(argv)
    losses = tuple(x.strip() for x in args.losses.split(",") if x.strip())
    seeds = (list(range(args.seeds)) if args.seed_list is None
             else [int(x) for x in args.seed_list.split(",") if x.strip()])
    if not losses or not seeds:
        ap.error("--losses and --seed-list need at least one entry")

    import torch

    from edgekd.data import load_data
    from edgekd.distill.trainer import TrainConfig
    from edgekd.models import count_macs_params
    from edgekd.models.checkpoint import save_checkpoint
    from edgekd.models.teacher import load_teacher

    work = Path(args.work or tempfile.mkdtemp(prefix="edgekd-bench-distill-"))
    os.environ.setdefault("EDGEKD_CACHE_DIR", str(work / "cache"))
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; work dir {work}; "
          f"losses {','.join(losses)}, seeds {seeds}, grad clip {args.grad_clip}")

    full = load_data("digits", resolution=16, seed=0)
    shape = tuple(full.input_shape)
    cfg_t = TrainConfig.make(epochs=args.teacher_epochs, batch_size=64, lr=0.1, seed=0,
                             augment="padcrop")
    tmodel, tres = _train(TEACHER, "ce", full, cfg_t, work / "teacher")  # the best epoch's weights
    tpath = save_checkpoint(work / "teacher.pt", tmodel.eval(), spec=TEACHER,
                            num_classes=full.num_classes, in_channels=full.in_channels,
                            input_shape=shape)
    teacher = load_teacher(str(tpath))
    t_macs, t_params = count_macs_params(tmodel, shape)
    from edgekd.models import build_model

    s_macs, s_params = count_macs_params(
        build_model(STUDENT, num_classes=full.num_classes, in_channels=full.in_channels), shape)
    print(f"\nteacher {TEACHER}: {t_macs:,} MACs, {t_params:,} params, val acc "
          f"{tres.best_acc:.4f} after {args.teacher_epochs} epochs "
          f"({'meets' if tres.best_acc >= 0.97 else 'MISSES'} >= 0.97)")
    print(f"student {STUDENT}: {s_macs:,} MACs ({s_macs / t_macs:.3f} of the teacher's, "
          f"{'meets' if s_macs * 10 <= t_macs else 'MISSES'} <= 1/10), {s_params:,} params")

    # ---- accuracy with 20% labels
    scores: dict[str, list[float]] = {} if args.no_baseline else {"ce (20% labels)": []}
    scores.update({k: [] for k in losses})
    clip = "" if args.grad_clip is None else f"-clip{args.grad_clip:g}"
    for seed in seeds:
        part = load_data("digits", resolution=16, seed=seed, labelled_fraction=0.2)
        n_lab, n_all = len(part.labelled_indices), len(part.train)
        if not args.no_baseline:
            # the baseline sees only its labelled images: give it as many optimizer steps
            base_epochs = max(1, round(args.epochs * n_all / n_lab))
            cfg_b = TrainConfig.make(epochs=base_epochs, batch_size=64, seed=seed,
                                     augment="padcrop")
            _, r = _train(STUDENT, "ce", part, cfg_b, work / f"ce-{seed}")
            scores["ce (20% labels)"].append(r.best_acc)
        cfg_d = TrainConfig.make(epochs=args.epochs, batch_size=64, seed=seed, augment="none",
                                 grad_clip=args.grad_clip)
        for loss in losses:
            _, r = _train(STUDENT, loss, part, cfg_d, work / f"{loss}{clip}-{seed}",
                          teacher=teacher)
            scores[loss].append(r.best_acc)
            if args.grad_clip is not None:
                print(f"  {loss} seed {seed}: clipped " + ", ".join(
                    f"{h['clipped_steps']}" for h in r.history) + " steps per epoch; max "
                    f"grad norm {max(h['grad_norm_max'] for h in r.history):.1f}", flush=True)
        print(f"seed {seed}: {n_lab}/{n_all} labelled; " + ", ".join(
            f"{k.split()[0]} {v[-1]:.4f}" for k, v in scores.items()), flush=True)

    base = statistics.mean(scores["ce (20% labels)"]) if not args.no_baseline else None
    print(f"\n{'student ' + STUDENT + ', 20% labels':<44}{'val acc mean':>13}{'± std':>9}"
          f"{'vs ce':>9}  per seed")
    for name, vals in scores.items():
        mean = statistics.mean(vals)
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        delta = "" if name.startswith("ce") or base is None else f"{100 * (mean - base):+.2f}pt"
        print(f"{name:<44}{mean:>13.4f}{std:>9.4f}{delta:>9}  "
              + " ".join(f"{v:.4f}" for v in vals))
    for loss in ("kd", "dkd"):
        if base is None or loss not in scores:
            continue
        gain = 100 * (statistics.mean(scores[loss]) - base)
        print(f"{loss} beats the 20%-label baseline by {gain:+.2f} points: "
              f"{'meets' if gain >= 2 else 'MISSES'} >= 2")
    if args.no_timing:
        print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
        return 0

    # ---- epoch time: same student, same images (all labels), same batch size
    e = args.timing_epochs
    cfg_p = TrainConfig.make(epochs=e, batch_size=64, seed=0, augment="none")
    cfg_nc = TrainConfig.make(epochs=e, batch_size=64, seed=0, augment="none", use_cache=False)
    _train(STUDENT, "kd", full, TrainConfig.make(epochs=1, seed=0), work / "warm",
           teacher=teacher)  # fills the cache for `full` once, outside the timing
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runs: dict[str, list] = {"plain": [], "cache": [], "live": []}
    for rep in range(2):  # interleaved, so a busy machine hurts all three alike
        _, r = _train(STUDENT, "ce", full, cfg_p, work / f"time-ce-{rep}")
        runs["plain"].append(r)
        _, r = _train(STUDENT, "kd", full, cfg_p, work / f"time-kd-{rep}", teacher=teacher)
        assert r.cache == "hit", r.cache
        runs["cache"].append(r)
        _, r = _train(STUDENT, "kd", full, cfg_nc, work / f"time-live-{rep}", teacher=teacher)
        assert r.cache == "live", r.cache
        runs["live"].append(r)
    torch.set_num_threads(threads)
    cpu = {k: min(_epoch_time(r, "train_cpu_s") for r in v) for k, v in runs.items()}
    wall = {k: min(_epoch_time(r, "train_time_s") for r in v) for k, v in runs.items()}
    print(f"\nepoch time over {len(full.train)} images, batch 64, 1 thread (min over 2 runs of "
          f"the median of epochs 2..{e}); load average {os.getloadavg()[0]:.1f}:")
    print(f"  {'':32}{'CPU ms':>9}{'ratio':>8}{'wall ms':>10}{'ratio':>8}")
    for key, label in (("plain", "plain training (ce)"), ("cache", "kd, teacher-logit cache"),
                       ("live", "kd, teacher run live")):
        print(f"  {label:32}{cpu[key] * 1000:9.1f}{cpu[key] / cpu['plain']:7.2f}×"
              f"{wall[key] * 1000:10.1f}{wall[key] / wall['plain']:7.2f}×")
    ratio = cpu["cache"] / cpu["plain"]
    print(f"  cache / plain (CPU time) = {ratio:.2f}: "
          f"{'meets' if ratio <= 1.15 else 'MISSES'} <= 1.15")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
