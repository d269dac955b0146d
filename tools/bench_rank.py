#!/usr/bin/env python
"""Which capacity order picks the more accurate student under a latency budget: MACs or params?

`edgekd select` takes, among the candidates predicted to fit a budget, the one with the most
capacity. This checks the two orders it offers (--rank macs, the default; --rank params) on
published numbers of one family at several widths and input resolutions: the 22 MobileNetV2
ImageNet checkpoints of the TensorFlow model garden (MACs, params, top-1, and the latency of
each on one phone CPU, as published with them). For 200 budgets spread geometrically over the
latency range it prints, per order, how far the pick's top-1 falls below the best checkpoint
that fits, how much of the budget the pick uses, and how many pairs of checkpoints each order
ranks as top-1 does. No measurement: the numbers are the published ones.

    python tools/bench_rank.py
"""
from __future__ import annotations

import itertools

import numpy as np

# (width, resolution, MACs in millions, params in millions, ImageNet top-1 %, Pixel 1 CPU ms)
MOBILENETV2 = [
    (1.4, 224, 582, 6.06, 75.0, 138.0), (1.3, 224, 509, 5.34, 74.4, 123.0),
    (1.0, 224, 300, 3.47, 71.8, 73.8), (1.0, 192, 221, 3.47, 70.7, 55.1),
    (1.0, 160, 154, 3.47, 68.8, 40.2), (1.0, 128, 99, 3.47, 65.3, 27.6),
    (1.0, 96, 56, 3.47, 60.3, 17.6), (0.75, 224, 209, 2.61, 69.8, 55.8),
    (0.75, 192, 153, 2.61, 68.7, 41.6), (0.75, 160, 107, 2.61, 66.4, 30.4),
    (0.75, 128, 69, 2.61, 63.2, 21.9), (0.75, 96, 39, 2.61, 58.8, 14.2),
    (0.5, 224, 97, 1.95, 65.4, 28.7), (0.5, 192, 71, 1.95, 63.9, 21.1),
    (0.5, 160, 50, 1.95, 61.0, 14.9), (0.5, 128, 32, 1.95, 57.7, 9.9),
    (0.5, 96, 18, 1.95, 51.2, 6.4), (0.35, 224, 59, 1.66, 60.3, 19.7),
    (0.35, 192, 43, 1.66, 58.2, 14.6), (0.35, 160, 30, 1.66, 55.7, 10.5),
    (0.35, 128, 20, 1.66, 50.8, 6.9), (0.35, 96, 11, 1.66, 45.5, 4.5),
]
RANKS = {"macs": lambda t: (t[2], t[3]), "params": lambda t: (t[3], t[2])}


def main() -> int:
    table = MOBILENETV2
    fastest, slowest = min(t[5] for t in table), max(t[5] for t in table)
    budgets = np.geomspace(fastest, slowest, 200)
    print(f"MobileNetV2, {len(table)} published ImageNet checkpoints; {len(budgets)} budgets "
          f"{fastest:g}..{slowest:g} ms (their phone latencies)")
    print(f"{'rank':7s} {'top-1 below best fitting: mean':>31s} {'max':>5s} {'budgets > 0.5 pt':>17s} "
          f"{'budget used: mean':>18s} {'>= 0.8':>7s} {'pairs ordered as top-1':>23s}")
    for name, key in RANKS.items():
        loss, used = [], []
        for b in budgets:
            fit = [t for t in table if t[5] <= b]
            pick, best = max(fit, key=key), max(fit, key=lambda t: t[4])
            loss.append(best[4] - pick[4])
            used.append(pick[5] / b)
        loss, used = np.array(loss), np.array(used)
        pairs = [(a, c) for a, c in itertools.combinations(table, 2) if a[4] != c[4] and key(a) != key(c)]
        agree = sum((key(a) > key(c)) == (a[4] > c[4]) for a, c in pairs)
        print(f"{name:7s} {loss.mean():31.2f} {loss.max():5.1f} {np.mean(loss > 0.5):17.0%} "
              f"{used.mean():18.2f} {np.mean(used >= 0.8):7.0%} {f'{agree}/{len(pairs)}':>23s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
