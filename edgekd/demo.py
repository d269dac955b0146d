"""`edgekd compress --demo`: a digits teacher (trained once, cached by its config), compressed
for openvino-cpu (ort-cpu when OpenVINO is missing) at a quarter of the teacher's latency
measured on that target (a robust p90: never more than its p50 x 1.10), with >= 95% of the
teacher's accuracy required."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

# The demo's one definition: a resnet teacher on 16 px digits, convnet students.
TEACHER_SPEC = "resnet:width=32,blocks=2-2-2,res=16"
TEACHER_TRAIN = {"epochs": 8, "batch_size": 64, "seed": 0}
DATA = "digits"
RESOLUTION = 16
STUDENT_FAMILY = "convnet"
STUDENT_EPOCHS = 15
STUDENT_GRID = "small"
BUDGET_FRACTION = 0.25
ACCURACY_FRACTION = 0.95


def cache_dir() -> Path:
    env = os.environ.get("EDGEKD_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgekd"


def demo_target() -> str:
    import importlib.util

    return "openvino-cpu" if importlib.util.find_spec("openvino") is not None else "ort-cpu"


def teacher_key() -> str:
    from ._version import __version__

    blob = json.dumps({"spec": TEACHER_SPEC, "train": TEACHER_TRAIN, "data": DATA, "res": RESOLUTION,
                       "edgekd": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def demo_teacher(echo: Callable[[str], None] = print, show: bool = True) -> tuple[Path, bool]:
    """(path of the cached teacher checkpoint, whether it was trained now)."""
    from .data import load_data
    from .distill.run import distill

    final = cache_dir() / f"demo-teacher-{teacher_key()}" / "teacher.pt"
    if final.is_file():
        echo(f"teacher: cached {final}")
        return final, False
    work = final.parent / "train"
    echo(f"teacher: training {TEACHER_SPEC} on {DATA} ({TEACHER_TRAIN['epochs']} epochs), cached as {final}")
    bundle = load_data(DATA, resolution=RESOLUTION, seed=TEACHER_TRAIN["seed"])
    res = distill(TEACHER_SPEC, None, bundle, work, config=TEACHER_TRAIN, loss="ce", resume=True,
                  progress=show)
    res.save(final, spec=TEACHER_SPEC, bundle=bundle)
    shutil.rmtree(work, ignore_errors=True)
    echo(f"teacher: val accuracy {res.best_acc:.4f}")
    return final, True


def measure_teacher(teacher: Path, target: str, metric: str = "p90") -> dict:
    """The teacher measured on ``target``; the budget rests on ``latency_ms``, a robust p90
    (latency.stats.robust_p90 of the drift-corrected figures when a calibration exists, else of
    the raw ones), never the tail of other work; ``warning`` says when the measurement was
    unstable."""
    from .latency.bench import bench
    from .latency.stats import instability_note, robust_p90

    r = bench(teacher, target, sample_shape=(1, RESOLUTION, RESOLUTION))
    s = r.judged_stats
    value, how = robust_p90(s)
    return {"target": r.target, "metric": metric, "latency_ms": value, "basis": how, "judged": r.judged,
            "p50_ms": r.stats.p50, "p90_ms": r.stats.p90, "n": r.stats.n, "unstable": s.unstable,
            "iqr_over_median": s.iqr_over_median, "disturbed": r.stats.disturbed,
            "speed_factor": r.drift.factor if r.drift is not None else None,
            "warning": instability_note(s, "the teacher")}


def ensure_calibration(target: str, echo: Callable[[str], None] = print) -> dict:
    """The target's calibration on this machine (latency.bench.calibrate), made now when there is
    none or the stored one does not apply (another runtime version): with it, the teacher's measurement (the budget) and the student's verify (the verdict)
    are both drift-corrected to one reading of the machine's speed, so a slow minute between or
    during them does not decide the verdict. {"path", "made_now", "reference_p50_ms"}."""
    from .latency.bench import CALIBRATE_TIME_FACTOR, calibrate, calibration_mismatch, stored_calibration
    from .targets import load_target

    spec = load_target(target)
    cal = stored_calibration(spec)
    why = "no calibration of it on this machine" if cal is None else calibration_mismatch(spec, cal)
    made = why is not None
    if made:
        echo(f"demo: {target}: {why}; measuring the reference workload for "
             f"{CALIBRATE_TIME_FACTOR * spec.measure.min_time_s:g} s (as `edgekd calibrate -t {target}`), so that "
             f"the teacher's budget and the student's verdict are both corrected for the machine's speed")
        cal = calibrate(spec)
    return {"path": cal.path, "made_now": made, "reference_p50_ms": cal.p50_ms}


def demo_config(teacher: Path, budget_ms: float, min_accuracy: float, target: str):
    from .pipeline import CompressConfig

    return CompressConfig.make(teacher=str(teacher), data=DATA, resolution=RESOLUTION, target=target,
                               budget_ms=round(budget_ms, 6), family=STUDENT_FAMILY, grid=STUDENT_GRID,
                               loss="kd", epochs=STUDENT_EPOCHS, min_accuracy=round(min_accuracy, 6))


def run_demo(out: "str | Path", *, resume: bool = False, force: bool = False, dry_run: bool = False,
             show: bool = True, echo: Callable[[str], None] = print):
    """Train or reuse the teacher, measure it, then compress. Returns (CompressResult | Plan, info).

    On --resume the budget and accuracy floor stored in OUT/state.json are reused, so the run
    continues with the very settings it started with."""
    from .pipeline import compress, make_plan, read_state

    if not os.environ.get("OMP_NUM_THREADS"):
        import torch

        # One intra-op thread: on 2 shared cores torch's default pool thrashes on these small
        # models; the targets measure with their own thread counts (threads: 1 in targets/*.yaml).
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    target = demo_target()
    cached = cache_dir() / f"demo-teacher-{teacher_key()}" / "teacher.pt"
    if dry_run and not cached.is_file():
        info = {"teacher": str(cached), "target": target, "budget_ms": None}
        echo(f"demo plan: train {TEACHER_SPEC} on {DATA} at {RESOLUTION}px ({TEACHER_TRAIN['epochs']} epochs) "
             f"into {cached}; calibrate {target} on this machine if it has no calibration; measure the "
             f"teacher on {target}; compress it to {BUDGET_FRACTION:g}x its p90 with "
             f">= {ACCURACY_FRACTION:.0%} of its accuracy ({STUDENT_FAMILY} students, '{STUDENT_GRID}' grid, "
             f"{STUDENT_EPOCHS} epochs of kd)")
        return None, info
    teacher, trained = demo_teacher(echo, show)
    timings["teacher_s"] = time.perf_counter() - t0
    from .models.checkpoint import read_checkpoint

    t_acc = float(read_checkpoint(teacher)["extra"].get("val_acc", 0.0))
    old = read_state(Path(out)) if resume and Path(out).exists() else None
    if old and old.get("context", {}).get("demo"):
        info = dict(old["context"]["demo"])
        echo(f"demo: resuming with budget {info['budget_ms']:.4f} ms from {Path(out) / 'state.json'}")
    else:
        t1 = time.perf_counter()
        calibration = None if dry_run else ensure_calibration(target, echo)
        lat = measure_teacher(teacher, target)
        timings["measure_teacher_s"] = time.perf_counter() - t1
        info = {"teacher": str(teacher), "teacher_trained_now": trained, "teacher_accuracy": t_acc,
                "teacher_latency": lat, "budget_ms": lat["latency_ms"] * BUDGET_FRACTION,
                "min_accuracy": t_acc * ACCURACY_FRACTION, "target": target, "calibration": calibration}
        if lat.get("warning"):
            echo(f"demo: warning: {lat['warning']}; the budget rests on {lat['basis']}")
        echo(f"demo: teacher {lat['metric']} on {target} {lat['latency_ms']:.4f} ms ({lat['basis']}, "
             f"{lat['judged']} figures) -> budget "
             f"{info['budget_ms']:.4f} ms; accuracy floor {info['min_accuracy']:.4f} "
             f"({ACCURACY_FRACTION:.0%} of the teacher's {t_acc:.4f})")
    cfg = demo_config(Path(info["teacher"]), info["budget_ms"], info["min_accuracy"], info["target"])
    plan = make_plan(cfg)
    echo(plan.text())
    if dry_run:
        return plan, info
    info["timings_s"] = timings
    result = compress(cfg, out, resume=resume, force=force, show=show, echo=echo, plan=plan,
                      context={"demo": info})
    return result, info
