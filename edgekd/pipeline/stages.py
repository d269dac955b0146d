"""The stages after select, each a plain function of the run's Context and the typed results
it reads, returning its own typed result (results.py):

    distill(ctx, select)                      -> DistillResult      OUT/student.pt
    prune(ctx, select)                        -> PruneStageResult   OUT/pruned.pt when pruned
    export(ctx, prune)                        -> ExportResult       OUT/<target>/
    quantize(ctx, export)                     -> QuantizeResult     OUT/<target>-int8/ when kept
    verify(ctx, prune, export, quantize)      -> VerifyStageResult
    report(ctx, state, distill, prune, export, quantize, verify) -> ReportResult
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import VerdictError
from .config import PRUNE_MARGIN
from .context import Context
from .results import (Cost, DistillResult, ExportResult, PruneStageResult, QuantizeResult, ReportResult,
                      SelectResult, VerifyStageResult)


def distill_stage(ctx: Context, sel: SelectResult) -> DistillResult:
    """Distill the selected student from the teacher into OUT/student.pt (resumes inside the
    trainer from OUT/distill's last checkpoint)."""
    from ..accuracy import top1
    from ..distill.run import distill
    from ..models import count_macs_params

    cfg, b, spec = ctx.cfg, ctx.bundle, sel.spec
    teacher = ctx.teacher
    res = distill(spec, teacher, b, ctx.out / "distill", loss=cfg.loss, loss_options=dict(cfg.loss_options),
                  resume=True, progress=ctx.show,
                  config={"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed})
    deploy = res.model
    res.save(ctx.out / "student.pt", spec=spec, bundle=b, loss=cfg.loss)
    x, y = ctx.val_arrays()
    t_acc = top1(_torch_predict(teacher), x, y)
    macs, params = count_macs_params(deploy, tuple(b.input_shape))
    t_cost = None
    if getattr(teacher, "module", None) is not None:
        tm, tp = count_macs_params(teacher.module, tuple(b.input_shape))
        t_cost = Cost(macs=int(tm), params=int(tp))
    return DistillResult(spec=spec, student_accuracy=res.best_acc, best_epoch=res.best_epoch,
                         epochs=len(res.history), teacher_accuracy=t_acc, teacher_cost=t_cost,
                         student_cost=Cost(macs=int(macs), params=int(params)), cache=res.cache,
                         checkpoint="student.pt", log="distill/train.jsonl", data=b.to_dict())


def _torch_predict(module):
    """numpy batch -> logits of a torch module (or teacher), without gradients."""
    import numpy as np
    import torch

    def predict(xb):
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(xb))).numpy()

    return predict


def prune_stage(ctx: Context, sel: SelectResult) -> PruneStageResult:
    """Prune the distilled student when it misses the budget on the (fp32) target; starts from
    student.pt every time, so a killed run re-runs this stage from scratch."""
    from ..prune import prune_if_needed

    cfg = ctx.cfg
    if cfg.prune == "off":
        return PruneStageResult(status="skipped", reason="off (--prune off)")
    r = prune_if_needed(ctx.out / "student.pt", ctx.out / "pruned.pt", ctx.teacher, ctx.bundle, ctx.plan.target,
                        cfg.budget_ms, metric=cfg.metric, work_dir=ctx.out / "prune",
                        known_miss=f"no candidate meets the budget ({sel.note})" if sel.needs_pruning else None,
                        latency_fn=ctx.latency_fn, echo=ctx.echo if ctx.show else None,
                        min_accuracy=cfg.min_accuracy, finetune_epochs=cfg.finetune_epochs, margin=PRUNE_MARGIN,
                        train_kw={"batch_size": cfg.batch_size, "seed": cfg.seed})
    r = dict(r if isinstance(r, dict) else r.to_dict())
    if r.get("checkpoint"):
        r["checkpoint"] = ctx.rel(r["checkpoint"])
    return PruneStageResult.from_dict(r)


def deployed_checkpoint(out: Path, pru: PruneStageResult) -> Path:
    """pruned.pt when the prune stage pruned the student, else student.pt."""
    return out / pru.checkpoint if pru.checkpoint else out / "student.pt"


def export_stage(ctx: Context, pru: PruneStageResult) -> ExportResult:
    import torch

    from ..export import export_for_target
    from ..models.checkpoint import load_checkpoint

    target = ctx.plan.target
    ckpt = deployed_checkpoint(ctx.out, pru)
    module, meta = load_checkpoint(ckpt)
    x, _ = ctx.val_arrays()
    sample = torch.from_numpy(x[:1]).repeat(target.batch, 1, 1, 1)
    art, parity = export_for_target(module, sample, target, ctx.out / target.name,
                                    parity_samples=torch.from_numpy(x[:64]),
                                    metadata={"edgekd.spec": str(meta["spec"])})
    return ExportResult(artifact=ctx.rel(art.path), extra=tuple(ctx.rel(p) for p in art.extra_paths),
                        checkpoint=ctx.rel(ckpt), onnx=ctx.rel(ctx.out / target.name / "model.onnx"),
                        format=art.format, target=target.name, sha256=art.sha256, parity=parity.to_dict())


def quantize_stage(ctx: Context, exp: ExportResult) -> QuantizeResult:
    """int8 from the exported ONNX file through the target's -int8 twin, kept only when faster."""
    from ..data.arrays import calibration_from_dataset
    from ..quantize import quantize_model, quantize_source

    cfg = ctx.cfg
    if cfg.quantize == "off":
        return QuantizeResult(status="skipped", reason="off (--quantize off)")
    if cfg.quantize == "fp16":
        return QuantizeResult(status="done", reason=f"fp16 is built by the {ctx.plan.target.name} backend at export")
    t8 = ctx.plan.int8_target
    if cfg.qat != "off" and cfg.qat_epochs > 0:
        return _qad_stage(ctx, exp, t8)
    calib = calibration_from_dataset(ctx.bundle.train, 300, seed=cfg.seed)
    x, y = ctx.val_arrays()
    try:
        rep = quantize_model(quantize_source(t8, ctx.out / exp.onnx, ctx.out / exp.checkpoint), t8,
                             ctx.out / t8.name, calib, (x, y), rounds=2)
    except VerdictError as exc:
        r = getattr(exc, "report", None)
        _drop_if_empty(ctx.out / t8.name)
        return QuantizeResult(status="not kept", reason=exc.one_line(), report=r.to_dict() if r else None)
    art = rep.artifact
    return QuantizeResult(status="kept", artifact=ctx.rel(art.path), target=t8.name,
                          extra=tuple(ctx.rel(p) for p in art.extra_paths), report=rep.to_dict())


def _qad_stage(ctx: Context, exp: ExportResult, t8) -> QuantizeResult:
    """PTQ, then quantization-aware distillation of the exported student when PTQ misses
    --max-drop (--qat auto) or always; a killed run continues in OUT/<int8 target>/qad/. The
    report is the kept side's comparison plus both sides ("ptq", "qad")."""
    from ..models.checkpoint import load_checkpoint
    from ..quantize.qad import qad_model

    cfg = ctx.cfg
    student, _ = load_checkpoint(ctx.out / exp.checkpoint)
    try:
        rep = qad_model(student, ctx.teacher, ctx.bundle, t8, ctx.out / t8.name, qat=cfg.qat,
                        epochs=cfg.qat_epochs, loss=cfg.loss, loss_options=dict(cfg.loss_options),
                        max_drop=cfg.max_drop, rounds=2, seed=cfg.seed, resume=True,
                        train_kw={"batch_size": cfg.batch_size}, progress=ctx.show)
    except VerdictError as exc:
        r = getattr(exc, "report", None)
        _drop_if_empty(ctx.out / t8.name)
        both = {**r.final.to_dict(), **_both(r)} if r is not None else None
        return QuantizeResult(status="not kept", reason=exc.one_line(), report=both)
    art = rep.artifact
    return QuantizeResult(status="kept", artifact=ctx.rel(art.path), target=t8.name,
                          extra=tuple(ctx.rel(p) for p in art.extra_paths),
                          report={**rep.final.to_dict(), **_both(rep)})


def _both(rep) -> dict:
    d = rep.to_dict()
    return {"chosen": d["chosen"], "qat_reason": d["reason"], "ptq": d["ptq"], "qad": d["qad"],
            "qad_train": d["train"], "qad_parity": d["parity"]}


def final_artifact(ctx: Context, exp: ExportResult, q: QuantizeResult) -> tuple[Path, Any]:
    """The artifact verify judges and its target: the int8 one when kept, else the export's."""
    if q.kept:
        return ctx.out / q.artifact, ctx.plan.int8_target
    return ctx.out / exp.artifact, ctx.plan.target


def _drop_if_empty(folder: Path) -> None:
    """Remove ``folder`` when a refused step left it empty (nothing in OUT that ships nothing)."""
    try:
        folder.rmdir()
    except OSError:
        pass


def verify_stage(ctx: Context, pru: PruneStageResult, exp: ExportResult, q: QuantizeResult) -> VerifyStageResult:
    """Verify the artifact to ship. A kept INT8 artifact that verify rejects on parity or
    accuracy (the quantize stage judged it on other samples) is not shipped: the fp32 export is
    verified and shipped instead, and ``fallback`` in the result says why."""
    from ..verify import verify_artifact

    cfg = ctx.cfg

    def judge(art, target):
        return verify_artifact(art, target, ctx.bundle, budget_ms=cfg.budget_ms, min_accuracy=cfg.min_accuracy,
                               max_drop=cfg.max_drop, reference=deployed_checkpoint(ctx.out, pru),
                               metric=cfg.metric, check_manifest=False, max_size_kb=cfg.max_size_kb,
                               max_peak_mb=cfg.max_peak_mb)

    art, target = final_artifact(ctx, exp, q)
    rep, fallback = judge(art, target), None
    bad = [c for c in rep.failures() if c.name not in ("latency", "size", "peak_memory") and c.verdict == "fail"]
    if q.kept and bad:
        fallback = (f"the int8 artifact for {target.name} failed verify ("
                    + "; ".join(f"{c.name}: {c.detail}" for c in bad)
                    + f"), so the fp32 artifact for {ctx.plan.target.name} is shipped instead")
        if ctx.show:
            ctx.echo(f"[verify] {fallback}")
        art, target = final_artifact(ctx, exp, QuantizeResult(status="not kept"))
        rep = judge(art, target)
    d = rep.to_dict(include_samples=True)
    d["artifact"] = ctx.rel(art)
    if fallback:
        d["fallback"] = fallback
    return VerifyStageResult.from_dict(d)


def shipped_target(ctx: Context, ver: VerifyStageResult):
    """The target of the artifact verify judged last, the one shipped."""
    t8 = ctx.plan.int8_target
    return t8 if t8 is not None and ver.report.get("target") == t8.name else ctx.plan.target


def report_stage(ctx: Context, state: dict, dis: DistillResult, pru: PruneStageResult, exp: ExportResult,
                 q: QuantizeResult, ver: VerifyStageResult) -> ReportResult:
    """manifest.json (sha256 of every file made), then report.json/.md/.html from the run's state."""
    from ..manifest import write_manifest
    from ..report import write_reports

    files = [(ctx.out / dis.checkpoint, "torch student")]
    deployed = deployed_checkpoint(ctx.out, pru)
    if deployed.name != "student.pt":
        files.append((deployed, "pruned torch student"))
    for stage, artifact, target, extra in (("export", exp.artifact, exp.target, exp.extra),
                                           ("quantize", q.artifact, q.target, q.extra or ())):
        if artifact:
            files.append((ctx.out / artifact, f"{stage} artifact ({target})"))
            files += [(ctx.out / p, f"{stage} side file") for p in extra]
    if exp.onnx and exp.onnx != exp.artifact:
        files.append((ctx.out / exp.onnx, "onnx"))
    shipped = {"verdict": ver.verdict, "shipped": ver.artifact}
    if ver.report.get("fallback"):
        shipped["fallback"] = ver.report["fallback"]
    write_manifest(ctx.out, files, config=ctx.cfg.model_dump(mode="json"),
                   target=shipped_target(ctx, ver).model_dump(mode="json"),
                   data_fingerprint=dis.data_fingerprint, created=state["created"], extra=shipped)
    return ReportResult(paths={k: ctx.rel(v) for k, v in write_reports(ctx.out, state).items()})


def summary(name: str, r) -> str:
    """The few words after "[stage] done in N s"."""
    if isinstance(r, SelectResult):
        return f": {r.spec}" + (" (no candidate meets the budget: the prune stage will shrink it)"
                                if r.needs_pruning else "")
    if isinstance(r, DistillResult):
        return f": student {r.student_accuracy:.4f}, teacher {r.teacher_accuracy:.4f}"
    if isinstance(r, (PruneStageResult, QuantizeResult)) and r.reason:
        return f": {r.status}: {r.reason}"
    if isinstance(r, VerifyStageResult):
        return ((" (fp32 shipped: the int8 artifact failed verify)" if r.report.get("fallback") else "")
                + f": {r.verdict.upper()} accuracy {r.accuracy:.4f}, {r.metric} "
                f"{r.latency_ms:.4f} ms (budget {r.budget_ms:g} ms)")
    return ""
