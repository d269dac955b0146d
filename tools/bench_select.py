#!/usr/bin/env python
"""Does selection under a budget hold up when measured?

For a profile, 10 budgets spread geometrically across its range: from the fastest candidate's
predicted p90 x (1 + eps) to that of the candidate with the most capacity (select's rank: the
family's, MACs for hf- families and params for edgekd's own, unless --rank),
above which every budget selects that same candidate; for each, select + verify (measure the pick on the
profile's target, step down while it misses) and check the verified student's measured p90:
<= budget in every case, and >= 0.8 x budget in at least 9 of 10. Prints the table and the
counts. Run it on the machine the profile was measured on.

It also prints what the grid allows: for the same budgets, how often the candidate with the most
capacity whose *stored* measurement fits would itself be >= 0.8 x budget (an oracle that
knows every whole-model entry's measured value; derived variants have none, so it sees only the
grid). When that is below 9 the grid is too coarse in capacity order for the criterion, whatever
the predictor does.

    python tools/bench_select.py [--profile profiles/ort-cpu-mobilenetv2.json] [--budgets 10]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

BURNER = """
import time, sys
burst, idle = float(sys.argv[1]), float(sys.argv[2])
while True:
    t = time.monotonic() % (burst + idle)
    if t < burst:
        end = time.monotonic() + (burst - t)
        while time.monotonic() < end:
            pass
    else:
        time.sleep(burst + idle - t)
"""


def start_burners(burst: float, idle: float) -> list:
    """One busy-looping process per core, on for ``burst`` s and off for ``idle`` s, all in step."""
    n = os.cpu_count() or 1
    return [subprocess.Popen([sys.executable, "-c", BURNER, str(burst), str(idle)]) for _ in range(n)]


def stop_burners(procs: list) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", action="append", default=None,
                    help="profile file (repeatable; default: profiles/ort-cpu-mobilenetv2.json)")
    ap.add_argument("--budgets", type=int, default=10)
    ap.add_argument("--metric", default="p90", choices=["p50", "p90"])
    ap.add_argument("--grid-only", action="store_true", help="only the profiled candidates, no derived ones")
    ap.add_argument("--rank", default=None, choices=["macs", "params"],
                    help="select's capacity order (default: the family's)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of timing per verification")
    ap.add_argument("--load", action="store_true", help="run a background burner on every core, in bursts")
    ap.add_argument("--burst", type=float, default=1.5, help="seconds of each burst of load")
    ap.add_argument("--idle", type=float, default=1.5, help="seconds between bursts")
    ap.add_argument("--no-recalibrate", dest="recal", action="store_false",
                    help="use the profile as stored and judge raw measurements")
    args = ap.parse_args(argv)
    burners = []
    if args.load:
        burners = start_burners(args.burst, args.idle)
        print(f"# load: {len(burners)} busy-loop processes (one per core), {args.burst:g} s busy / "
              f"{args.idle:g} s idle, in step, for the whole run")
    try:
        return run(args)
    finally:
        stop_burners(burners)


def run(args) -> int:
    root = Path(__file__).resolve().parent.parent

    import numpy as np

    from edgekd.errors import EdgeKDError
    from edgekd.latency.predict import epsilon
    from edgekd.latency.profile import check_fingerprint, current_fingerprint, load_profile
    from edgekd.latency.recalibrate import make_corrected_measure, recalibrate
    from edgekd.latency.select import RANKS, candidates, family_rank, make_measure, select_student
    from edgekd.targets import target_from_dict

    paths = [Path(p) for p in (args.profile or [root / "profiles" / "ort-cpu-mobilenetv2.json"])]
    all_ok = True
    for path in paths:
        prof = load_profile(path)
        target = target_from_dict({k: v for k, v in prof.target.items() if k != "source"})
        if args.min_time is not None:
            target = target.model_copy(update={"measure": target.measure.model_copy(
                update={"min_time_s": args.min_time})})
        warn = check_fingerprint(prof, current_fingerprint(target))
        if warn:
            print(f"# warning: {warn}")
        eps = epsilon(prof, args.metric)
        rc = recalibrate(prof, target=target) if args.recal else None
        f = rc.factor if rc else 1.0
        scale = rc.scaler(args.metric) if rc else (lambda ms: ms)
        unscale = rc.metric_map(args.metric).invert if rc and rc.metric_map(args.metric) else (lambda ms: ms / f)
        if rc:
            print(f"# {rc.describe()}")
        elif args.recal:
            print("# the profile stores no reference readings: not re-calibrated")
        rank = args.rank or family_rank(prof.family)
        cands = candidates(prof, args.metric, derive=not args.grid_only, rank=rank)
        key = RANKS[rank]
        top = max(cands, key=key)  # the most capacity any candidate has
        lo = scale(min(c.predicted_ms for c in cands)) * (1 + eps) * 1.02
        hi = scale(top.predicted_ms) * (1 + eps)
        budgets = np.geomspace(lo, hi, args.budgets)
        measure = (make_corrected_measure(prof, args.metric, rc, target=target) if rc
                   else make_measure(prof, args.metric, target=target))
        print(f"\n{path.name}: {len(cands)} candidates, eps {eps:.1%}, budgets {lo:.3f}..{hi:.3f} ms ({args.metric}), "
              f"capacity by {rank}")
        print(f"{'budget ms':>9s}  {'selected':60s} {'pred ms':>8s} {'meas ms':>8s} {'raw ms':>8s} "
              f"{'meas/budget':>11s} {'tries':>5s}  verdict")
        under = tight = capped = 0
        for b in budgets:
            try:
                sel = select_student(prof, float(b), metric=args.metric, derive=not args.grid_only,
                                     verify=True, measure=measure, speed_factor=f, scale=scale, rank=rank)
            except EdgeKDError as exc:
                print(f"{b:9.3f}  {'-':60s} {'':8s} {'':8s} {'':11s} {'':5s}  error: {exc.one_line()[:80]}")
                print(f"#   {exc.one_line()}")
                continue
            c = sel.chosen
            ratio = c.verified_ms / b
            ok_under, ok_tight = c.verified_ms <= b, ratio >= 0.8
            under += ok_under
            tight += ok_under and ok_tight
            verdict = "ok" if ok_under and ok_tight else ("loose (<0.8)" if ok_under else "OVER")
            if ok_under and not ok_tight and key(c) >= key(top):
                verdict += ", nothing larger exists"
                capped += 1
            raw = f"{c.verified_raw_ms:8.4f}" if c.verified_raw_ms is not None else f"{'':8s}"
            print(f"{b:9.3f}  {c.spec[:60]:60s} {c.predicted_ms:8.4f} {c.verified_ms:8.4f} {raw} {ratio:11.2f} "
                  f"{len(sel.attempts):5d}  {verdict}")
        if hasattr(measure, "close"):
            measure.close()
        n = len(budgets)
        print(f"# measured = {'drift-corrected to the speed at re-calibration' if rc else 'raw'} {args.metric}")
        print(f"# grid allows: {oracle_tight(cands, np.array([unscale(b) for b in budgets]), key)}/{n} budgets filled to >= 0.8 x "
              f"budget by the grid entry with the most capacity ({rank}) whose stored {args.metric} fits")
        ok = under == n and tight >= n - 1
        all_ok &= ok
        print(f"# measured {args.metric} <= budget: {under}/{n} (want {n}); >= 0.8 x budget: {tight}/{n} "
              f"(want >= {n - 1}) -> {'PASS' if ok else 'FAIL'}"
              + (f"; {capped} loose pick(s) are already the largest candidate" if capped else ""))
    return 0 if all_ok else 1


def oracle_tight(cands, budgets, key) -> int:
    """Budgets at which the max-capacity (``key``) candidate whose stored measurement fits is >= 0.8 x budget."""
    measured = [c for c in cands if c.measured_ms is not None]
    n = 0
    for b in budgets:
        fit = [c for c in measured if c.measured_ms <= b]
        if fit:
            best = max(fit, key=lambda c: (*key(c), -c.measured_ms))
            n += best.measured_ms >= 0.8 * b
    return n


if __name__ == "__main__":
    sys.exit(main())
