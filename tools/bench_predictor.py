#!/usr/bin/env python
"""How well the latency predictor does on the shipped profiles.

For each profile (default: profiles/*.json), the held-out candidates (measured whole but not
used to calibrate) are predicted from their blocks and compared with their measured p50 (and
p90): the fraction within +-10% (our target: >= 90%; nn-Meter reports 99% on mobile CPUs) and
the 95th percentile of the relative error. `method` and `cache` are the reading the profile's
calibration chose (edgekd/latency/predict.py). The predictor is refitted from the stored
measurements, so this also checks the current predictor code against old profiles.

A whole model's "measured" p50 is its reading with the machine's drift taken out by the
reference model measured alongside it (predict.model_latency); `raw ±10%` judges the same
predictions against the readings as they came.

A profile measured on a loaded machine (most whole models descheduled in most of their samples)
is fitted and judged through its models' quiet samples (cost.quiet_readings; the `read` column
says `quiet`); `raw ±10%` then judges against the p50s as timed, waiting included.

With --against OTHER (a second profile of the same target and family, measured at another
time), it also prints how often the two measurements of the same whole model agree within
+-10% of each other (both as corrected, and as read): the machine's own repeatability, a
ceiling for any predictor judged against one of them; and again with one factor for the whole
machine's level taken out (the median ratio), since a VM's speed moves between runs.

Every profile also gets a line with the held-out errors left once one factor (the median of
predicted / measured) is taken out: the predictor's shape, apart from its level, which
re-calibration on the machine at hand (select's reference models) sets. To judge a profile
against readings taken later, copy it, delete its held-out whole-model entries and run `edgekd
profile --resume` on the copy (same grid and options): the held-out models are measured again,
in alternation with the profile's own reference, and the copy is judged against them.

    python tools/bench_predictor.py [PROFILE ...] [--rows] [--against OTHER]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

TARGET = 0.95
NN_METER = 0.99


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profiles", nargs="*", help="profile files (default: profiles/*.json)")
    ap.add_argument("--rows", action="store_true", help="also print every held-out candidate")
    ap.add_argument("--against", default=None,
                    help="another profile of the same target and family: print measurement repeatability")
    args = ap.parse_args(argv)

    from edgekd.latency.cost import quiet_readings
    from edgekd.latency.predict import cache_label, fit_profile
    from edgekd.latency.profile import load_profile

    root = Path(__file__).resolve().parent.parent
    paths = [Path(p) for p in args.profiles] or sorted((root / "profiles").glob("*.json"))
    if not paths:
        print("no profiles found (profiles/*.json)")
        return 2
    print(f"{'profile':38s} {'models':>6s} {'blocks':>6s} {'pairs':>5s} {'method':>7s} {'cache':>8s} {'held':>5s} "
          f"{'read':>6s} {'p50 ±10%':>9s} {'p50 p95err':>10s} {'raw ±10%':>9s} {'p90 ±10%':>9s} {'p90 p95err':>10s}  "
          f"vs target / nn-Meter")
    worst = 1.0
    notes: list[str] = []
    for p in paths:
        prof = load_profile(p)
        _, val = fit_profile(prof)
        if not val or not val.get("n_heldout"):
            print(f"{p.name:38s} {len(prof.models):6d} {len(prof.blocks):6d}  no held-out candidates")
            continue
        m50 = val["by_metric"]["p50"]
        m90 = val["by_metric"].get("p90", {})
        f50 = m50["fraction_within_10pct"]
        worst = min(worst, f50)
        gap = f"{(f50 - TARGET) * 100:+.0f} pts / {(f50 - NN_METER) * 100:+.0f} pts"
        print(f"{p.name:38s} {len(prof.models):6d} {len(prof.blocks):6d} {len(prof.pairs):5d} "
              f"{val.get('method', 'alone'):>7s} {cache_label(val.get('cache', ())):>8s} "
              f"{m50['n_heldout']:5d} {'quiet' if quiet_readings(prof) else 'timed':>6s} "
              f"{f50:9.0%} {m50['p95_rel_error']:10.1%} {_pct(m50.get('fraction_within_10pct_raw'))} "
              f"{m90.get('fraction_within_10pct', float('nan')):9.0%} "
              f"{m90.get('p95_rel_error', float('nan')):10.1%}  {gap}")
        notes.append(_one_scale(str(p), val["heldout"]))
        if args.rows:
            for r in val["heldout"]:
                raw = r.get("measured_raw_ms", r["measured_ms"])
                print(f"    {r['spec']:60s} measured {r['measured_ms']:8.4f} (read {raw:8.4f})  "
                      f"predicted {r['predicted_ms']:8.4f}  {r['rel_error']:+.1%}")
    for line in notes:
        print(line)
    if args.against:
        _repeatability(paths, Path(args.against))
    print(f"# target >= {TARGET:.0%} of held-out within ±10% of measured p50; nn-Meter reports {NN_METER:.0%} "
          f"on mobile CPUs. Worst profile here: {worst:.0%}")
    return 0


def _scaled(ratios):
    """(median ratio, |ratio / median - 1|): the errors left once one factor for the whole
    machine's level is taken out."""
    import numpy as np

    r = np.asarray(ratios, dtype=np.float64)
    k = float(np.median(r))
    return k, np.abs(r / k - 1)


def _one_scale(name: str, rows) -> str:
    """The held-out errors with the level taken out: what is left for the shape of the predictor
    after re-calibration on a machine (select's reference models) has fixed the level."""
    import numpy as np

    k, e = _scaled([r["predicted_ms"] / r["measured_ms"] for r in rows])
    return (f"# {name}: predicted / measured p50, median {k:.3f}; with that one factor taken out "
            f"{np.mean(e <= 0.10):.0%} within ±10% (p95 {np.percentile(e, 95):.1%})")


def _pct(x) -> str:
    return f"{x:9.0%}" if x is not None else f"{'-':>9s}"


def _repeatability(paths, other_path: Path) -> None:
    """Whole models measured in both profiles: the fraction whose p50s agree within +-10%."""
    import numpy as np

    from edgekd.latency.predict import model_latency
    from edgekd.latency.profile import load_profile

    other = load_profile(other_path)
    for p in paths:
        prof = load_profile(p)
        if (prof.target_name, prof.family) != (other.target_name, other.family):
            continue
        both = [(m, o) for m in prof.models if (o := other.model(m.spec)) is not None]
        if not both:
            continue
        for how, value in (("corrected", lambda prof, m: model_latency(prof, m, "p50")),
                           ("as read", lambda prof, m: m.latency.metric("p50"))):
            ratios = [value(other, o) / value(prof, m) for m, o in both]
            r = np.abs(np.asarray(ratios) - 1)
            k, e = _scaled(ratios)
            print(f"# repeatability {p.name} vs {other_path} ({how}): {len(r)} models measured in both, "
                  f"{np.mean(r <= 0.10):.0%} agree within ±10% (p95 difference {np.percentile(r, 95):.1%}, "
                  f"max {r.max():.1%}); with the median ratio {k:.3f} taken out {np.mean(e <= 0.10):.0%} "
                  f"(p95 {np.percentile(e, 95):.1%})")


if __name__ == "__main__":
    sys.exit(main())
