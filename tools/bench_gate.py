"""Measure the CI gate's own quality on this machine (docs/LATENCY.md, "The CI gate").

1. Real per-inference samples of a small ONNX model on onnxruntime, 1 thread (edgekd's bench).
2. 1000 resampling trials per load level: each round of the gate draws a block bootstrap sample
   of the gate's size from the measured pool (blocks keep the bursts of machine load together),
   with the budget set so the model sits at 80%, 100% and 120% of it; every trial runs the real
   gate_one (decide, pooling re-measure, FAIL confirmation) on those samples.
   Prints false-fail rate at 80% (target <= 1%), detection at 120% (>= 99%), and INCONCLUSIVE
   rates on the first look and after re-measure pooling.
3. 20 real gate runs (gate_one with real measurement, fresh sessions) at 80% of the budget:
   the number of failures must be 0.

    python tools/bench_gate.py [--pool 3000] [--n 1000] [--trials 1000] [--runs 20] [--metric p90]
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def make_model(path: Path, hidden: int = 512, depth: int = 6) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "input"
    for i in range(depth):
        inits.append(numpy_helper.from_array((rng.standard_normal((hidden, hidden)) * 0.05).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        prev = f"r{i}"
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, hidden])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, hidden])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def block_bootstrap(pool: np.ndarray, n: int, rng, block: int = 50) -> np.ndarray:
    """Circular block bootstrap: n samples made of random contiguous runs of ``block`` samples."""
    starts = rng.integers(0, pool.size, size=(n + block - 1) // block)
    idx = (starts[:, None] + np.arange(block)[None, :]).ravel()[:n] % pool.size
    return pool[idx]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=int, default=3000, help="real samples measured for the pool")
    ap.add_argument("--n", type=int, default=1000, help="samples per gate round (the gate's minimum)")
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=20, help="real gate runs at 80%% of the budget")
    ap.add_argument("--rounds", type=int, default=3, help="gate --max-rounds")
    ap.add_argument("--metric", default="p90", choices=["p50", "p90", "p99", "mean"])
    ap.add_argument("--target", default="ort-cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from edgekd.config import Budget
    from edgekd.gate import bench_measure, gate_one, metric_bounds
    from edgekd.latency.bench import bench
    from edgekd.targets import load_target

    target = load_target(args.target)
    cmd = "python tools/bench_gate.py " + shlex.join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="edgekd-bench-gate-") as tmp:
        model = str(make_model(Path(tmp) / "mlp.onnx"))
        s = target.measure.model_copy(update={"min_iters": args.pool, "max_iters": args.pool, "min_time_s": 0.0})
        t0 = time.perf_counter()
        res = bench(model, target, settings=s)
        pool = np.asarray(res.samples_ms)
        true_metric, _, _ = metric_bounds(pool, args.metric, 0.95)
        st = res.stats
        print(f"command: {cmd}")
        print(f"pool: {pool.size} samples of a 6x512 MLP on {target.name} ({res.environment.get('runtime')} "
              f"{res.environment.get('runtime_version')}, {target.threads} thread) in {time.perf_counter() - t0:.1f} s: "
              f"p50 {st.p50:.4f}  p90 {st.p90:.4f}  p99 {st.p99:.4f} ms, IQR/median {st.iqr_over_median:.3f}, "
              f"{args.metric} of the pool {true_metric:.4f} ms")

        rng = np.random.default_rng(args.seed)
        rows = []
        for level in (0.8, 1.0, 1.2):
            budget = Budget(budget_ms=true_metric / level, metric=args.metric)
            first = {"PASS": 0, "FAIL": 0, "INCONCLUSIVE": 0}
            final = dict(first)
            rounds = 0

            def measure(_model, _target):
                return SimpleNamespace(samples_ms=block_bootstrap(pool, args.n, rng), environment={})

            for _ in range(args.trials):
                r = gate_one("sim", target, budget, measure_fn=measure, max_rounds=args.rounds)
                first[r.round_verdicts[0]] += 1
                final[r.status] += 1
                rounds += r.rounds
            rows.append((level, budget.budget_ms, first, final, rounds / args.trials))

        print(f"\nresampling: {args.trials} trials per level, {args.n} samples per round (block bootstrap, blocks of 50), "
              f"max {args.rounds} rounds, {args.metric}, one-sided 95% bounds")
        print(f"{'model at':>9} {'budget ms':>10} {'FAIL':>7} {'PASS':>7} {'INCONCL 1st look':>17} {'INCONCL final':>14} {'mean rounds':>12}")
        for level, b, first, final, mr in rows:
            t = args.trials
            print(f"{level:>8.0%} {b:>10.4f} {final['FAIL'] / t:>7.1%} {final['PASS'] / t:>7.1%} "
                  f"{first['INCONCLUSIVE'] / t:>17.1%} {final['INCONCLUSIVE'] / t:>14.1%} {mr:>12.2f}")
        ff = rows[0][3]["FAIL"] / args.trials
        det = rows[2][3]["FAIL"] / args.trials
        print(f"false-fail rate at 80%: {ff:.1%} (target <= 1%)   detection at 120%: {det:.1%} (target >= 99%)")

        budget = Budget(budget_ms=true_metric / 0.8, metric=args.metric)
        measure = bench_measure(min_iters=args.n, max_iters=args.n, min_time_s=0.0, warmup_s=0.2)
        print(f"\n{args.runs} real gate runs at 80% of the budget ({budget.budget_ms:.4f} ms, gate_one + bench, "
              f"{args.n} samples per round):")
        print(f"{'run':>4} {'verdict':>13} {'rounds':>6} {args.metric:>9} {'lower':>9} {'upper':>9} {'IQR/med':>8}")
        counts = {"PASS": 0, "FAIL": 0, "INCONCLUSIVE": 0}
        for i in range(args.runs):
            r = gate_one(model, target, budget, measure_fn=measure, max_rounds=args.rounds)
            d = r.decision
            counts[r.status] += 1
            print(f"{i + 1:>4} {r.status:>13} {r.rounds:>6} {d.value:>9.4f} {d.ci[0]:>9.4f} {d.ci[1]:>9.4f} "
                  f"{d.iqr_over_median:>8.3f}")
        print(f"real runs: {counts['FAIL']} FAIL, {counts['PASS']} PASS, {counts['INCONCLUSIVE']} INCONCLUSIVE "
              f"out of {args.runs} (failures must be 0)")
        ok = counts["FAIL"] == 0 and ff <= 0.01 and det >= 0.99
        print("RESULT:", "OK" if ok else "NOT MET")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
