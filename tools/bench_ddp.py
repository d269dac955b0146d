#!/usr/bin/env python
"""Does 2-process data-parallel training (torchrun, gloo on CPU) reach the single-process
accuracy? Same model, data, seed, epochs and global batch (2 × half the batch per process);
validation accuracy of both over several seeds, and the difference (target: within 1 point).

    python tools/bench_ddp.py [--model convnet:width=16,res=16] [--epochs 8] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(cmd: list[str], env: dict) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="convnet:width=16,res=16")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64, help="global batch size")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    common = ["train", "--model", args.model, "--data", "digits", "--epochs", str(args.epochs),
              "--no-export", "--json"]
    print(f"# {args.model} on digits, {args.epochs} epochs, global batch {args.batch}, gloo on CPU")
    print(f"{'seed':>4s} {'1 process':>10s} {'2 processes':>12s} {'diff pt':>8s}")
    diffs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            single, ddp = Path(tmp) / f"single{seed}", Path(tmp) / f"ddp{seed}"
            run([sys.executable, "-m", "edgekd", *common, "--seed", str(seed), "--batch-size", str(args.batch),
                 "--out", str(single)], env)
            run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                 "-m", "edgekd", *common, "--seed", str(seed), "--batch-size", str(args.batch),
                 "--out", str(ddp)], env)
            a = json.loads((single / "summary.json").read_text())["val_acc"]
            b = json.loads((ddp / "summary.json").read_text())["val_acc"]
            diffs.append(100 * (b - a))
            print(f"{seed:4d} {a:10.4f} {b:12.4f} {diffs[-1]:+8.2f}")
    mean = statistics.mean(diffs)
    ok = abs(mean) <= 1.0
    print(f"mean difference (2 processes - 1 process): {mean:+.2f} points ({'within' if ok else 'OUTSIDE'} 1 point)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
