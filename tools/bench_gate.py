"""Measure the CI gate's own quality on this machine under injected load (docs/LATENCY.md, "The CI gate").

The script starts its own background processes that burn both cores in bursts (in phase:
each spins for --burst-s out of every --period-s) and stops them when it ends.

(a) bootstrap: one long run of real per-inference samples of a small ONNX MLP on ort-cpu
    (1 thread) under that load; then --trials simulated gate runs per level, the model's
    metric at 80%, 100% and 120% of the budget (the budget set from the pool's own metric).
    Every round of a simulated gate is a contiguous stretch of the pool as long in time as a
    real round (--round-s, the target's min_time_s), from a random place, so the bursts stay
    as they were measured; the real gate_one decides (effective-sample-size bounds, adaptive
    rounds, FAIL confirmation, --max-time-s on a clock that advances by each stretch's time).
    Targets: false-fail <= 1% at 80%, detection >= 99% at 120%, INCONCLUSIVE <= 5% at 80% and
    120%. At 100% no rule can decide; its rates are printed for information.
(b) real runs: --runs real `gate_one` runs (bench each round: build, load, warm-up, time) of
    the same model under the same load with the budget at twice the pool's metric (the model at
    half its budget: every run must PASS) and at half of it (twice its budget: every run must FAIL).

    python tools/bench_gate.py [--trials 1000] [--runs 50] [--pool-s 30] [--burst-s 0.3] [--period-s 0.6]
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

_BURNER = """
import os, sys, time
burst, period, parent = float(sys.argv[1]), float(sys.argv[2]), os.getppid()
while os.getppid() == parent:  # ends by itself if the benchmark dies
    now = time.time()
    phase = now % period
    if phase < burst:
        end = now - phase + burst
        while time.time() < end:
            pass
    else:
        time.sleep(period - phase)
"""


class BurstLoad:
    """``procs`` processes, each burning one core for ``burst_s`` of every ``period_s``, in phase."""

    def __init__(self, procs: int, burst_s: float, period_s: float):
        self.procs, self.burst_s, self.period_s = procs, burst_s, period_s
        self.children: list[subprocess.Popen] = []

    def describe(self) -> str:
        if not self.procs:
            return "no injected load"
        return (f"{self.procs} processes, each burning a core for {self.burst_s:g} s of every {self.period_s:g} s, "
                f"in phase (duty cycle {self.burst_s / self.period_s:.0%}, burst length {self.burst_s:g} s)")

    def __enter__(self) -> "BurstLoad":
        for _ in range(self.procs):
            self.children.append(subprocess.Popen([sys.executable, "-c", _BURNER, str(self.burst_s), str(self.period_s)]))
        time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        for c in self.children:
            c.terminate()
        for c in self.children:
            try:
                c.wait(timeout=5)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()


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


class Stretches:
    """A gate measure_fn drawing contiguous stretches of ``round_s`` seconds (>= min_n samples)
    of the pool from random places (circular), advancing ``clock`` by each one's time."""

    def __init__(self, pool: np.ndarray, round_s: float, min_n: int, rng, overhead_s: float):
        self.pool, self.rng, self.overhead_s = pool, rng, overhead_s
        per_s = pool.size / (pool.sum() / 1e3)
        self.n = max(min_n, int(round_s * per_s))
        self.t = 0.0

    def clock(self) -> float:
        return self.t

    def __call__(self, _model, _target):
        start = int(self.rng.integers(0, self.pool.size))
        x = np.take(self.pool, np.arange(start, start + self.n), mode="wrap")
        self.t += float(x.sum()) / 1e3 + self.overhead_s
        return SimpleNamespace(samples_ms=x, environment={})


def bootstrap(pool, truth, target, args, round_s, rng, *, autocorrelated: bool) -> dict:
    """Part (a): simulated gate runs per level; prints a table, returns {level: {verdict: rate}}."""
    from edgekd.config import Budget
    from edgekd.gate import gate_one
    from edgekd.gate.run import GATE_MIN_SAMPLES

    how = "effective-sample-size bounds" if autocorrelated else "bounds as if samples were independent"
    print(f"\n(a) bootstrap: rounds of {round_s:g} s (>= {GATE_MIN_SAMPLES} samples) drawn as contiguous stretches "
          f"of the pool, real gate_one, max {args.max_time_s:g} s per gate, {args.metric}, one-sided 95% {how}")
    print(f"{'model at':>9} {'trials':>7} {'budget ms':>10} {'PASS':>7} {'FAIL':>7} {'INCONCL':>8} "
          f"{'INCONCL 1st':>12} {'mean rounds':>12} {'mean s':>7}")
    rates = {}
    for level in (0.8, 1.0, 1.2):
        trials = args.trials if level != 1.0 else args.trials_at_budget
        budget = Budget(budget_ms=truth / level, metric=args.metric)
        final = {"PASS": 0, "FAIL": 0, "INCONCLUSIVE": 0}
        first_incon = rounds = secs = 0
        for _ in range(trials):
            fm = Stretches(pool, round_s, GATE_MIN_SAMPLES, rng, overhead_s=target.measure.warmup_s)
            r = gate_one("sim", target, budget, measure_fn=fm, max_time_s=args.max_time_s, clock=fm.clock,
                         autocorrelated=autocorrelated)
            final[r.status] += 1
            first_incon += r.round_verdicts[0] == "INCONCLUSIVE"
            rounds += r.rounds
            secs += fm.t
        rates[level] = {k: v / trials for k, v in final.items()}
        print(f"{level:>8.0%} {trials:>7} {budget.budget_ms:>10.4f} {rates[level]['PASS']:>7.1%} "
              f"{rates[level]['FAIL']:>7.1%} {rates[level]['INCONCLUSIVE']:>8.1%} {first_incon / trials:>12.1%} "
              f"{rounds / trials:>12.2f} {secs / trials:>7.1f}")
    return rates


def _terminated(signum, frame):
    raise SystemExit(128 + signum)  # runs BurstLoad.__exit__: the burners stop


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool-s", type=float, default=30.0, help="seconds of real samples in the bootstrap pool")
    ap.add_argument("--trials", type=int, default=1000, help="simulated gate runs at 80%% and 120%%")
    ap.add_argument("--trials-at-budget", type=int, default=200, help="simulated gate runs at 100%%")
    ap.add_argument("--runs", type=int, default=50, help="real gate runs at half and at twice the budget")
    ap.add_argument("--round-s", type=float, default=None, help="seconds per round (default: the target's min_time_s)")
    ap.add_argument("--max-time-s", type=float, default=60.0)
    ap.add_argument("--metric", default="p90", choices=["p50", "p90", "p99", "mean"])
    ap.add_argument("--target", default="ort-cpu")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 2, help="burner processes (0: no injected load)")
    ap.add_argument("--burst-s", type=float, default=0.3)
    ap.add_argument("--period-s", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare-iid", action="store_true",
                    help="also run (a) with bounds computed as if samples were independent")
    args = ap.parse_args()

    from edgekd.config import Budget
    from edgekd.gate import bench_measure, gate_one, metric_bounds
    from edgekd.gate.run import GATE_MIN_SAMPLES
    from edgekd.latency.bench import bench
    from edgekd.targets import load_target

    target = load_target(args.target)
    round_s = args.round_s if args.round_s is not None else target.measure.min_time_s
    cmd = "python tools/bench_gate.py " + shlex.join(sys.argv[1:])
    print(f"command: {cmd}")
    load = BurstLoad(args.procs, args.burst_s, args.period_s)
    print(f"load: {load.describe()}; cpu count {os.cpu_count()}; the machine also ran other work")
    ok = True
    with tempfile.TemporaryDirectory(prefix="edgekd-bench-gate-") as tmp, load:
        model = str(make_model(Path(tmp) / "mlp.onnx"))
        s = target.measure.model_copy(update={"min_iters": 1000, "max_iters": 10_000_000, "min_time_s": args.pool_s})
        t0 = time.perf_counter()
        res = bench(model, target, settings=s)
        pool = np.asarray(res.samples_ms)
        truth, _, _ = metric_bounds(pool, args.metric, 0.95)
        st = res.stats
        print(f"pool: {pool.size} samples of a 6x512 MLP on {target.name} ({res.environment.get('runtime')} "
              f"{res.environment.get('runtime_version')}, {target.threads} thread) in {time.perf_counter() - t0:.1f} s "
              f"under load: p50 {st.p50:.4f}  p90 {st.p90:.4f}  p99 {st.p99:.4f} ms, IQR/median "
              f"{st.iqr_over_median:.3f}, {args.metric} of the pool {truth:.4f} ms")

        rng = np.random.default_rng(args.seed)
        rates = bootstrap(pool, truth, target, args, round_s, rng, autocorrelated=True)
        ff, det = rates[0.8]["FAIL"], rates[1.2]["FAIL"]
        inc = max(rates[0.8]["INCONCLUSIVE"], rates[1.2]["INCONCLUSIVE"])
        met_a = ff <= 0.01 and det >= 0.99 and inc <= 0.05
        print(f"false-fail at 80%: {ff:.1%} (target <= 1%)   detection at 120%: {det:.1%} (target >= 99%)   "
              f"INCONCLUSIVE at 80%/120%: {rates[0.8]['INCONCLUSIVE']:.1%}/{rates[1.2]['INCONCLUSIVE']:.1%} "
              f"(target <= 5%) -> {'MET' if met_a else 'NOT MET'}")
        ok &= met_a
        if args.compare_iid:
            iid = bootstrap(pool, truth, target, args, round_s, np.random.default_rng(args.seed), autocorrelated=False)
            print(f"as if independent: false-fail at 80% {iid[0.8]['FAIL']:.1%}, FAIL at 100% {iid[1.0]['FAIL']:.1%}, "
                  f"detection at 120% {iid[1.2]['FAIL']:.1%} (information only)")

        if args.runs:
            measure = bench_measure()
            print(f"\n(b) real runs: {args.runs} gate_one runs each (bench per round: build, load, warm-up "
                  f"{target.measure.warmup_s:g} s, >= {GATE_MIN_SAMPLES} samples and >= {target.measure.min_time_s:g} s)")
            for factor, want in ((2.0, "PASS"), (0.5, "FAIL")):
                budget = Budget(budget_ms=truth * factor, metric=args.metric)
                counts = {"PASS": 0, "FAIL": 0, "INCONCLUSIVE": 0}
                rounds, t1, worst, judged = [], time.perf_counter(), [], {"raw": 0, "corrected": 0}
                for _ in range(args.runs):
                    r = gate_one(model, target, budget, measure_fn=measure, max_time_s=args.max_time_s)
                    counts[r.status] += 1
                    rounds.append(r.rounds)
                    judged[r.judged] += 1
                    worst.append(r.decision.ci[1] if want == "PASS" else r.decision.ci[0])
                level = "half" if factor == 2.0 else "twice"
                edge = (f"highest upper bound {max(worst):.4f}" if want == "PASS" else f"lowest lower bound {min(worst):.4f}")
                print(f"model at {level} its budget ({budget.budget_ms:.4f} ms): {counts['PASS']} PASS, {counts['FAIL']} "
                      f"FAIL, {counts['INCONCLUSIVE']} INCONCLUSIVE of {args.runs} (want all {want}); rounds "
                      f"{min(rounds)}-{max(rounds)}, mean {np.mean(rounds):.2f}; {edge} ms; "
                      f"{(time.perf_counter() - t1) / args.runs:.1f} s per run; judged raw {judged['raw']}, "
                      f"drift-corrected {judged['corrected']}")
                ok &= counts[want] == args.runs
    print("RESULT:", "OK" if ok else "NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
