"""Run `edgekd compress --demo` as from a fresh clone (empty cache, new output directory) and
print the wall time of each stage, the total, and the demo's verdict.

    python tools/bench_demo.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", default=None, help="Work here instead of a temporary directory (kept).")
    args = ap.parse_args()
    tmp = None
    if args.keep:
        root = Path(args.keep)
        root.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="edgekd-bench-demo-")
        root = Path(tmp.name)
    env = dict(os.environ, EDGEKD_CACHE_DIR=str(root / "cache"))
    env.pop("EDGEKD_DEBUG", None)
    out = root / "demo"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "edgekd", "compress", "--demo", "--out", str(out)],
                       env=env, cwd=root, capture_output=True, text=True)
    total = time.perf_counter() - t0
    state_path = out / "state.json"
    if not state_path.is_file():
        print(p.stdout + p.stderr)
        print(f"no state.json after {total:.1f} s (exit {p.returncode})")
        return 1
    state = json.loads(state_path.read_text())
    demo = state.get("context", {}).get("demo", {})
    print(f"{'stage':<16}{'wall s':>8}")
    for k, v in demo.get("timings_s", {}).items():
        print(f"{k:<16}{v:>8.1f}")
    for name, rec in state["stages"].items():
        print(f"{name:<16}{rec.get('wall_s', float('nan')):>8.1f}")
    print(f"{'total':<16}{total:>8.1f}")
    ver = state["stages"].get("verify", {}).get("result", {})
    lat = ver.get("latency", {})
    print(f"exit {p.returncode}; verdict {ver.get('verdict')}; target {demo.get('target')}; "
          f"student {state['stages'].get('select', {}).get('result', {}).get('spec')}")
    print(f"teacher accuracy {demo.get('teacher_accuracy'):.4f}, {demo.get('teacher_latency', {}).get('metric')} "
          f"{demo.get('teacher_latency', {}).get('latency_ms', float('nan')):.4f} ms; budget {demo.get('budget_ms'):.4f} ms; "
          f"student accuracy {ver.get('accuracy', float('nan')):.4f} (floor {demo.get('min_accuracy'):.4f}), "
          f"p90 {lat.get('p90', float('nan')):.4f} ms")
    if p.returncode != 0:
        print(p.stderr[-2000:])
    if tmp:
        tmp.cleanup()
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
