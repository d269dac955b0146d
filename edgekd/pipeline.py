"""compress(): the one-shot chain, resumable stage by stage.

    select -> distill -> prune -> export -> quantize -> verify -> report

``select`` takes the student from the target's latency profile (profiles/<target>-<family>.json
when it applies here; otherwise it profiles a short grid into the output directory first).
``prune`` (--prune auto) measures the distilled student on the target unless the selection
already found that no candidate fits; if it misses the budget, torch-pruning shrinks it until it
fits and distillation fine-tunes it (pruned.pt, which export uses). ``export`` writes the ONNX
hub file and the target's artifact (parity-checked); ``quantize`` starts from that ONNX file
(int8 via the target's -int8 twin, kept only when it is faster). Every stage's result goes into OUT/state.json, written
atomically when the stage starts and when it finishes; ``resume=True`` skips finished stages,
and distillation resumes inside the trainer from its last checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .compress_plan import DEFAULT_FAMILY, Plan, find_profile, make_plan, profile_dirs  # noqa: F401
from .errors import BadInputError, VerdictError
from .manifest import now
from .util_io import atomic_write_json

STATE = "state.json"
STATE_SCHEMA = "edgekd.compress-state/v1"
STAGES = ("select", "distill", "prune", "export", "quantize", "verify", "report")
PRUNE_MARGIN = 0.05  # pruning aims this far under the budget: verify wants the p90 interval within it


class CompressConfig(BaseModel):
    """Everything that decides what compress() makes. Defaults live here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher: str
    teacher_weights: Optional[str] = None
    trust_pickle: bool = False
    data: str
    resolution: Optional[int] = Field(None, ge=4)
    target: str
    budget_ms: float = Field(gt=0)
    metric: Literal["p50", "p90"] = "p90"
    student: str = "auto"
    family: str = "auto"
    grid: str = "small"
    loss: str = "kd"
    prune: Literal["auto", "off"] = "auto"
    quantize: Literal["int8", "fp16", "off"] = "off"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: Optional[float] = Field(None, gt=0)
    seed: int = Field(0, ge=0)
    min_accuracy: Optional[float] = Field(None, ge=0, le=1)
    max_drop: Optional[float] = Field(None, ge=0, le=1)
    profile_min_time_s: float = Field(0.3, ge=0, description="timing per candidate when profiling")
    prune_epochs: Optional[int] = Field(None, ge=0, description="KD fine-tuning epochs after pruning "
                                        "(None: max(2, epochs // 2))")

    @property
    def finetune_epochs(self) -> int:
        return self.prune_epochs if self.prune_epochs is not None else max(2, self.epochs // 2)

    @classmethod
    def make(cls, **kw: Any) -> "CompressConfig":
        try:
            return cls(**{k: v for k, v in kw.items() if v is not None})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "config"
            raise BadInputError(f"bad compress setting {where}={err.get('input')!r}: {err.get('msg')}",
                                hint="see `edgekd compress --help`") from None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class CompressResult:
    out: Path
    state: dict
    verdict: str
    artifact: Optional[str]
    report_paths: dict

    def to_dict(self) -> dict:
        st = self.state["stages"]
        return {"out": str(self.out), "verdict": self.verdict, "artifact": self.artifact,
                "reports": self.report_paths,
                "stages": {k: {"status": v.get("status"), "wall_s": v.get("wall_s")} for k, v in st.items()},
                "verify": {k: v for k, v in (st.get("verify", {}).get("result") or {}).items()
                           if k != "samples_ms"}}


# --------------------------------------------------------------------------- state

def read_state(out: Path) -> Optional[dict]:
    p = out / STATE
    if not p.is_file():
        return None
    try:
        st = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{p} is unreadable ({exc})", hint="start again with --force") from exc
    if st.get("schema") != STATE_SCHEMA:
        raise BadInputError(f"{p} is not an edgekd compress state", hint="use another --out")
    return st


def prepare_out(out: Path, cfg: CompressConfig, *, resume: bool, force: bool) -> dict:
    """The state to continue from; refuses a directory holding another run (or anything else)."""
    state = read_state(out) if out.exists() else None
    if state is not None:
        if resume:
            if state.get("config_digest") != cfg.digest():
                old = state.get("config", {})
                diff = [k for k, v in cfg.model_dump(mode="json").items() if old.get(k) != v]
                raise BadInputError(f"--resume: {out} holds a run with other settings ({', '.join(diff)})",
                                    hint="resume with the same options, or start again with --force")
            _clean_partials(out)
            return state
        if not force:
            raise BadInputError(f"--out {out} already holds a compress run",
                                hint="pass --resume to continue it or --force to start again")
        shutil.rmtree(out)
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInputError(f"--out {out} is not an empty directory and holds no edgekd compress run",
                            hint="choose a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    return {"schema": STATE_SCHEMA, "config": cfg.model_dump(mode="json"), "config_digest": cfg.digest(),
            "created": now(), "updated": now(), "stages": {}}


def _clean_partials(out: Path) -> None:
    """Remove what a killed run left half-written: atomic writes' temporary files and staging dirs."""
    for p in sorted(out.rglob(".*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_file() and (p.name.endswith(".tmp") or ".tmp." in p.name):
            p.unlink(missing_ok=True)
        elif p.is_dir() and p.name.startswith(".edgekd-quant-"):
            shutil.rmtree(p, ignore_errors=True)


def save_state(out: Path, state: dict) -> None:
    state["updated"] = now()
    atomic_write_json(out / STATE, state)


# --------------------------------------------------------------------------- context

class _Context:
    """What stages share; heavy things (data, teacher, student) load on first use, so a resumed
    run rebuilds only what the remaining stages need."""

    def __init__(self, out: Path, cfg: CompressConfig, plan: Plan, state: dict, show: bool,
                 echo: Callable[[str], None]):
        self.out, self.cfg, self.plan, self.state, self.show, self.echo = out, cfg, plan, state, show, echo
        self._bundle = self._teacher = None
        self.latency_fn: Optional[Callable] = None  # module -> stats; replaces measuring (tests)

    def result(self, stage: str) -> dict:
        return (self.state["stages"].get(stage) or {}).get("result") or {}

    @property
    def bundle(self):
        if self._bundle is None:
            from .data import load_data

            self._bundle = load_data(self.cfg.data, resolution=self.plan.resolution, seed=self.cfg.seed)
        return self._bundle

    @property
    def teacher(self):
        if self._teacher is None:
            from .models.teacher import check_teacher_matches, load_teacher

            b = self.bundle
            self._teacher = load_teacher(self.cfg.teacher, weights=self.cfg.teacher_weights,
                                         trust_pickle=self.cfg.trust_pickle, num_classes=b.num_classes,
                                         in_channels=b.in_channels)
            check_teacher_matches(self._teacher, b)
        return self._teacher

    def val_arrays(self):
        from .verify import _val_arrays

        return _val_arrays(self.bundle)


# --------------------------------------------------------------------------- stages

def _stage_select(ctx: _Context) -> dict:
    from .latency.profile import load_profile, profile_family, read_grid
    from .latency.select import select_student
    from .models import parse_spec

    cfg, b = ctx.cfg, ctx.bundle
    if cfg.student != "auto":
        spec = parse_spec(cfg.student).spec
        if parse_spec(spec).res != b.input_shape[-1]:
            raise BadInputError(f"--student {spec} takes {parse_spec(spec).res}px inputs but the data is "
                                f"{b.input_shape[-1]}px", hint="set the spec's res knob or --resolution")
        return {"spec": spec, "source": "given", "needs_pruning": None}
    res = b.input_shape[-1]
    prof_path = ctx.plan.profile
    if prof_path is not None:
        profile = load_profile(prof_path)
        extra = ()
    else:
        fam = ctx.plan.family
        grid = _at_resolution(read_grid(cfg.grid, fam, in_channels=b.in_channels, num_classes=b.num_classes), res)
        if not grid:
            raise BadInputError(f"the '{cfg.grid}' grid of {fam} has no candidate at {res}px",
                                hint="pass --resolution matching the grid or --student SPEC")
        grid_file = ctx.out / "profile" / "grid.txt"
        grid_file.parent.mkdir(parents=True, exist_ok=True)
        grid_file.write_text("\n".join(grid) + "\n", encoding="utf-8")
        prof_path = ctx.out / "profile" / f"{ctx.plan.target.name}-{fam}.json"
        on_event = None
        if ctx.show:
            def on_event(ev):
                if ev.kind == "measured":
                    ctx.echo(f"  profile [{ev.done}/{ev.total}] {ev.what} {ev.name}: p50 {ev.latency_ms:.4f} ms")
        profile = profile_family(ctx.plan.target, fam, out=prof_path, grid=str(grid_file),
                                 resume=prof_path.exists(), in_channels=b.in_channels,
                                 num_classes=b.num_classes, min_time_s=cfg.profile_min_time_s,
                                 block_min_time_s=min(0.2, cfg.profile_min_time_s),
                                 work_dir=ctx.out / "profile" / "work", on_event=on_event).profile
        shutil.rmtree(ctx.out / "profile" / "work", ignore_errors=True)
    at_res = [m.spec for m in profile.models if parse_spec(m.spec).res == res]
    if not at_res:
        raise BadInputError(f"profile {prof_path} has no candidate at the data's {res}px",
                            hint="pass --resolution to match it, or --student SPEC")
    note = None
    try:
        sel = select_student(_only(profile, at_res), cfg.budget_ms, metric=cfg.metric, verify=True,
                             target=ctx.plan.target)
        needs = False
    except (BadInputError, VerdictError) as exc:
        if cfg.prune == "off":
            raise
        # The budget needs more than selection can give: go on with the fastest candidate and
        # let the prune stage shrink it after distillation (verify reports what is left).
        fast = min((m for m in profile.models if m.spec in at_res), key=lambda m: m.latency.metric(cfg.metric))
        sel = select_student(_only(profile, at_res), fast.latency.metric(cfg.metric) * 10, metric=cfg.metric)
        sel = _force_choice(sel, fast.spec, cfg.budget_ms)
        needs, note = True, exc.one_line()
    if parse_spec(sel.chosen.spec).res != res:
        raise BadInputError(f"the selection picked {sel.chosen.spec}, not a {res}px student",
                            hint="pass --student SPEC at the data's resolution")
    return {"spec": sel.chosen.spec, "source": "profile", "profile": str(prof_path),
            "selection": sel.to_dict(), "needs_pruning": needs, "note": note}


def _at_resolution(specs, res: int) -> list[str]:
    """The grid's candidates moved to the data's resolution (each distinct spec once): every
    point of the grid is then one the data can feed, and selection has all of them to choose from."""
    from .models import parse_spec
    from .models.spec import StudentConfig

    out: list[str] = []
    for s in specs:
        c = parse_spec(s)
        try:
            moved = parse_spec(StudentConfig(c.family, c.config.model_copy(update={"res": res})).spec).spec
        except BadInputError:
            continue
        if moved not in out:
            out.append(moved)
    return out


def _only(profile, specs):
    from dataclasses import replace

    return replace(profile, models=[m for m in profile.models if m.spec in specs])


def _force_choice(sel, spec, budget_ms):
    from dataclasses import replace

    limit = budget_ms / (1.0 + sel.epsilon)
    cands = tuple(replace(c, fits=c.predicted_ms <= limit) for c in sel.candidates)
    chosen = next(c for c in cands if c.spec == spec)
    return replace(sel, chosen=chosen, candidates=cands, budget_ms=float(budget_ms), limit_ms=limit)


def _stage_distill(ctx: _Context) -> dict:
    from .distill.criterion import build_criterion
    from .distill.trainer import TrainConfig, fit, restore_weights, seed_everything
    from .models import build_model, count_macs_params
    from .models.checkpoint import save_checkpoint
    from .verify import _torch_accuracy

    cfg, b = ctx.cfg, ctx.bundle
    spec = ctx.result("select")["spec"]
    teacher = ctx.teacher
    tconf = TrainConfig.make(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
    seed_everything(tconf.seed)
    student = build_model(spec, num_classes=b.num_classes, in_channels=b.in_channels)
    criterion = build_criterion(cfg.loss, {}, num_classes=b.num_classes, student=student, teacher=teacher,
                                epochs=tconf.epochs)
    try:
        res = fit(student, criterion, b, tconf, ctx.out / "distill", teacher=teacher, resume=True,
                  progress=ctx.show)
        restore_weights(res.paths["best"], student, criterion)
        deploy = criterion.deployable(student).eval()
    finally:
        if hasattr(criterion, "close"):
            criterion.close()
    save_checkpoint(ctx.out / "student.pt", deploy, spec=spec, num_classes=b.num_classes,
                    in_channels=b.in_channels, input_shape=tuple(b.input_shape),
                    extra={"val_acc": res.best_acc, "loss": cfg.loss, "data": b.fingerprint})
    x, y = ctx.val_arrays()
    t_acc = _torch_accuracy(teacher, x, y)
    macs, params = count_macs_params(deploy, tuple(b.input_shape))
    t_cost = None
    if getattr(teacher, "module", None) is not None:
        tm, tp = count_macs_params(teacher.module, tuple(b.input_shape))
        t_cost = {"macs": int(tm), "params": int(tp)}
    return {"spec": spec, "student_accuracy": res.best_acc, "best_epoch": res.best_epoch,
            "epochs": len(res.history), "teacher_accuracy": t_acc, "teacher_cost": t_cost,
            "student_cost": {"macs": int(macs), "params": int(params)}, "cache": res.cache,
            "checkpoint": "student.pt", "log": "distill/train.jsonl", "data": b.to_dict()}


def _stage_prune(ctx: _Context) -> dict:
    """Prune the distilled student when it misses the budget on the (fp32) target; starts from
    student.pt every time, so a killed run re-runs this stage from scratch."""
    from .prune import prune_if_needed

    cfg = ctx.cfg
    if cfg.prune == "off":
        return {"status": "skipped", "reason": "off (--prune off)"}
    sel = ctx.result("select")
    r = prune_if_needed(ctx.out / "student.pt", ctx.out / "pruned.pt", ctx.teacher, ctx.bundle, ctx.plan.target,
                        cfg.budget_ms, metric=cfg.metric, work_dir=ctx.out / "prune",
                        known_miss=f"no candidate meets the budget ({sel.get('note')})"
                        if sel.get("needs_pruning") else None,
                        latency_fn=ctx.latency_fn, echo=ctx.echo if ctx.show else None,
                        min_accuracy=cfg.min_accuracy, finetune_epochs=cfg.finetune_epochs, margin=PRUNE_MARGIN,
                        train_kw={"batch_size": cfg.batch_size, "seed": cfg.seed})
    if r.get("checkpoint"):
        r["checkpoint"] = _rel(ctx.out, r["checkpoint"])
    return r


def deployed_checkpoint(ctx: _Context) -> Path:
    """pruned.pt when the prune stage pruned the student, else student.pt."""
    ck = ctx.result("prune").get("checkpoint")
    return ctx.out / ck if ck else ctx.out / "student.pt"


def _stage_export(ctx: _Context) -> dict:
    import torch

    from .export import export_for_target
    from .models.checkpoint import load_checkpoint

    target = ctx.plan.target
    ckpt = deployed_checkpoint(ctx)
    module, meta = load_checkpoint(ckpt)
    x, _ = ctx.val_arrays()
    sample = torch.from_numpy(x[:1]).repeat(target.batch, 1, 1, 1)
    art, parity = export_for_target(module, sample, target, ctx.out / target.name,
                                    parity_samples=torch.from_numpy(x[:64]),
                                    metadata={"edgekd.spec": str(meta["spec"])})
    return {"artifact": _rel(ctx.out, art.path), "extra": [_rel(ctx.out, p) for p in art.extra_paths],
            "checkpoint": _rel(ctx.out, ckpt),
            "onnx": _rel(ctx.out, ctx.out / target.name / "model.onnx"), "format": art.format,
            "target": target.name, "sha256": art.sha256, "parity": parity.to_dict()}


def _stage_quantize(ctx: _Context) -> dict:
    from .quantize import quantize_model
    from .quantize.calib import calibration_from_dataset

    cfg, exp = ctx.cfg, ctx.result("export")
    if cfg.quantize == "off":
        return {"status": "skipped", "reason": "off (--quantize off)"}
    if cfg.quantize == "fp16":
        return {"status": "done", "reason": f"fp16 is built by the {ctx.plan.target.name} backend at export"}
    t8 = ctx.plan.int8_target
    calib = calibration_from_dataset(ctx.bundle.train, 300, seed=cfg.seed)
    x, y = ctx.val_arrays()
    try:
        rep = quantize_model(ctx.out / exp["onnx"], t8, ctx.out / t8.name, calib, (x, y), rounds=2,
                             **({"preset": "performance"} if t8.runtime.value == "openvino" else {}))
    except VerdictError as exc:
        r = getattr(exc, "report", None)
        return {"status": "not kept", "reason": exc.one_line(), "report": r.to_dict() if r else None}
    art = rep.artifact
    return {"status": "kept", "artifact": _rel(ctx.out, art.path), "target": t8.name,
            "extra": [_rel(ctx.out, p) for p in art.extra_paths], "report": rep.to_dict()}


def final_artifact(ctx: _Context) -> tuple[Path, Any]:
    q = ctx.result("quantize")
    if q.get("status") == "kept":
        return ctx.out / q["artifact"], ctx.plan.int8_target
    return ctx.out / ctx.result("export")["artifact"], ctx.plan.target


def _stage_verify(ctx: _Context) -> dict:
    from .verify import verify_artifact

    cfg = ctx.cfg
    art, target = final_artifact(ctx)
    rep = verify_artifact(art, target, ctx.bundle, budget_ms=cfg.budget_ms, min_accuracy=cfg.min_accuracy,
                          max_drop=cfg.max_drop, reference=deployed_checkpoint(ctx), metric=cfg.metric,
                          check_manifest=False)
    d = rep.to_dict(include_samples=True)
    d["artifact"] = _rel(ctx.out, art)
    return d


def _stage_report(ctx: _Context) -> dict:
    from .manifest import write_manifest
    from .report import write_reports

    files = [(ctx.out / "student.pt", "torch student")]
    if deployed_checkpoint(ctx).name != "student.pt":
        files.append((deployed_checkpoint(ctx), "pruned torch student"))
    for stage in ("export", "quantize"):
        r = ctx.result(stage)
        if r.get("artifact"):
            files.append((ctx.out / r["artifact"], f"{stage} artifact ({r.get('target')})"))
            files += [(ctx.out / p, f"{stage} side file") for p in r.get("extra", [])]
    if ctx.result("export").get("onnx") and ctx.result("export")["onnx"] != ctx.result("export")["artifact"]:
        files.append((ctx.out / ctx.result("export")["onnx"], "onnx"))
    write_manifest(ctx.out, files, config=ctx.cfg.model_dump(mode="json"),
                   target=ctx.plan.final_target.model_dump(mode="json"),
                   data_fingerprint=ctx.result("distill").get("data", {}).get("fingerprint"),
                   created=ctx.state["created"], extra={"verdict": ctx.result("verify").get("verdict")})
    return {"paths": {k: _rel(ctx.out, v) for k, v in write_reports(ctx.out, ctx.state).items()}}


_RUN = {"select": _stage_select, "distill": _stage_distill, "prune": _stage_prune,
        "export": _stage_export, "quantize": _stage_quantize, "verify": _stage_verify,
        "report": _stage_report}


def _rel(root: Path, p) -> str:
    return Path(p).resolve().relative_to(root.resolve()).as_posix()


# --------------------------------------------------------------------------- front door

def compress(config: "CompressConfig | dict", out: "str | Path", *, resume: bool = False, force: bool = False,
             show: bool = True, echo: Callable[[str], None] = print, context: Optional[dict] = None,
             plan: Optional[Plan] = None, latency_fn: Optional[Callable] = None) -> CompressResult:
    """Run (or continue) the chain into ``out``; see the module docstring.

    Returns a CompressResult whose ``verdict`` is verify's (pass / fail / inconclusive); the
    caller decides the exit code. ``context`` (JSON-able) is stored in the state and the report.
    ``latency_fn(module) -> stats`` replaces the prune stage's ONNX measurements (tests).
    """
    cfg = config if isinstance(config, CompressConfig) else CompressConfig.make(**dict(config))
    plan = plan or make_plan(cfg)
    out = Path(out)
    state = prepare_out(out, cfg, resume=resume, force=force)
    state["plan"] = plan.to_dict()
    if context:
        state.setdefault("context", {}).update(context)
    ctx = _Context(out, cfg, plan, state, show, echo)
    ctx.latency_fn = latency_fn
    for name in STAGES:
        rec = state["stages"].get(name) or {}
        if rec.get("status") == "done":
            if show:
                echo(f"[{name}] done earlier ({rec.get('wall_s', 0):.1f} s); skipped")
            continue
        again = rec.get("status") == "running"
        state["stages"][name] = {"status": "running", "started": now(), "resumed": again}
        save_state(out, state)
        if show:
            echo(f"[{name}] {'resuming' if again else 'starting'}")
        t0 = time.perf_counter()
        result = _RUN[name](ctx)
        wall = time.perf_counter() - t0
        state["stages"][name].update(status="done", finished=now(), wall_s=round(wall, 3), result=result)
        save_state(out, state)
        if show:
            echo(f"[{name}] done in {wall:.1f} s" + _summary(name, result))
    ver = ctx.result("verify")
    return CompressResult(out=out, state=state, verdict=ver.get("verdict", "fail"),
                          artifact=ver.get("artifact"), report_paths=ctx.result("report").get("paths", {}))


def _summary(name: str, r: dict) -> str:
    if name == "select":
        return f": {r['spec']}" + (" (no candidate meets the budget: the prune stage will shrink it)"
                                   if r.get("needs_pruning") else "")
    if name == "distill":
        return f": student {r['student_accuracy']:.4f}, teacher {r['teacher_accuracy']:.4f}"
    if name in ("prune", "quantize") and r.get("reason"):
        return f": {r.get('status')}: {r['reason']}"
    if name == "verify":
        lat = r["latency"]
        return (f": {r['verdict'].upper()} accuracy {r['accuracy']:.4f}, {r['metric']} "
                f"{lat[r['metric']]:.4f} ms (budget {r['budget_ms']:g} ms)")
    return ""
