"""The one fit-restore-deploy entry point, and a training run written to a directory.

    distill(student, teacher, bundle, out_dir, config=..., loss="kd") -> Distilled
        build the criterion, fit, restore the best epoch's weights (the last when no epoch
        was best), return the deployable module in eval mode, close the criterion.
        Used by `edgekd distill` / `edgekd train`, prune's fine-tuning, compress's distill
        stage and the demo's teacher.
    train_to_dir(kind=..., model_spec=..., data=..., out=...) -> TrainRun | None
        `edgekd distill` / `edgekd train`: load the data and teacher, distill, then write
        OUT/<stem>.pt (edgekd checkpoint), OUT/<stem>.onnx (parity-checked) and
        OUT/summary.json next to the trainer's OUT/train.jsonl and OUT/checkpoints/.

Under torchrun only rank 0 restores, deploys and writes.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from ..errors import BadInputError
from .runstate import dist_info, restore_weights, seed_everything
from .train_config import TrainConfig
from .trainer import TrainResult

FINISHED = "summary.json"


@dataclass
class Distilled(TrainResult):
    """What :func:`distill` returns: the training run's result plus ``model``, the deployable
    student in eval mode (None on torchrun ranks other than 0, which leave restoring and
    writing to rank 0), and the ``config`` it trained with."""

    model: Any = None
    config: Optional[TrainConfig] = None

    def save(self, path: "str | Path", *, spec: str, bundle, loss: Optional[str] = None) -> Path:
        """Write the deployable model as an edgekd checkpoint rebuilt from ``spec``; its extra
        holds the best validation accuracy, the data's fingerprint and ``loss`` (when given)."""
        from ..models.checkpoint import save_checkpoint

        extra = {"val_acc": self.best_acc, **({"loss": loss} if loss is not None else {}),
                 "data": bundle.fingerprint}
        return save_checkpoint(path, self.model, spec=spec, num_classes=bundle.num_classes,
                               in_channels=bundle.in_channels,
                               input_shape=tuple(bundle.input_shape), extra=extra)


def distill(student, teacher, bundle, out_dir: "str | Path", *,
            config: "TrainConfig | dict | None" = None, loss: str = "kd",
            loss_options: Optional[dict] = None, ls: bool = False, resume: bool = False,
            progress: bool = True, log_json: bool = True) -> Distilled:
    """Train ``student`` from ``teacher`` on ``bundle`` into ``out_dir`` and deploy it.

    ``student`` is an ``nn.Module`` or a student spec string; a spec is built for the bundle's
    classes and channels right after seeding python/numpy/torch with ``config.seed``.
    ``config`` is a TrainConfig or its keyword arguments (None: the defaults). ``loss``,
    ``loss_options`` and ``ls`` go to build_criterion ("ce" trains on labels alone, teacher
    None); ``resume``, ``progress`` and ``log_json`` to fit (``resume=True`` continues the run
    saved in ``out_dir``, or starts one)."""
    from ..models import build_model
    from .criterion import build_criterion
    from .trainer import fit

    if not isinstance(config, TrainConfig):
        config = TrainConfig.make(**dict(config or {}))
    if isinstance(student, str):
        seed_everything(config.seed)
        student = build_model(student, num_classes=bundle.num_classes,
                              in_channels=bundle.in_channels)
    criterion = build_criterion(loss, dict(loss_options or {}), num_classes=bundle.num_classes,
                                student=student, teacher=teacher, epochs=config.epochs, ls=ls)
    try:
        result = fit(student, criterion, bundle, config, out_dir, teacher=teacher,
                     resume=resume, progress=progress, log_json=log_json)
        deploy = None
        if dist_info()[0] == 0:
            best = result.paths["best"]
            restore_weights(best if best.exists() else result.paths["last"], student, criterion)
            deploy = criterion.deployable(student).eval()
    finally:
        criterion.close()
    return Distilled(**vars(result), model=deploy, config=config)


# --------------------------------------------------------------------------- a run in a directory

@dataclass
class TrainRun:
    """What :func:`train_to_dir` wrote: ``summary`` (also in ``summary_path``) and the name of
    the data it trained on."""

    summary: dict
    data_name: str
    summary_path: Path


def prepare_out(out: Path, resume: bool, force: bool) -> None:
    """Refuse an ``out`` holding a finished or unfinished run unless resuming; ``force``
    (without ``resume``) clears the previous run's files first."""
    last = out / "checkpoints" / "last.pt"
    finished = (out / FINISHED).exists()
    ours = finished or (out / "checkpoints").is_dir() or (out / "train.jsonl").exists()
    if out.is_dir() and not ours and any(out.iterdir()):
        raise BadInputError(f"--out {out} is not empty and holds no edgekd training run",
                            hint="choose a new or empty directory")
    if force and not resume:
        if dist_info()[0] == 0:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            for name in (FINISHED, "train.jsonl"):
                (out / name).unlink(missing_ok=True)
        return
    if resume:
        return
    if finished:
        raise BadInputError(f"--out {out} already holds a finished run",
                            hint="pass --resume to reuse it or --force to start again")
    if last.exists():
        raise BadInputError(f"--out {out} holds an unfinished run",
                            hint="pass --resume to continue it or --force to start again")


def export_with_parity(model, bundle, out: Path, stem: str, spec: str) -> dict:
    """ONNX export of the deployable model plus a parity check against torch on val images."""
    import torch

    from ..export import check_parity, export_onnx

    n = min(32, len(bundle.val))
    samples = torch.stack([bundle.val[i][0] for i in range(n)])
    path = export_onnx(model, samples[:1], out / f"{stem}.onnx", opset=17, dynamic_batch=True,
                       metadata={"edgekd.spec": spec})
    parity = check_parity(model, path, samples)
    return {"onnx": str(path), "parity": parity.to_dict()}


def train_to_dir(*, kind: str, model_spec: str, data: str, out: "str | Path",
                 teacher_spec: Optional[str] = None, teacher_weights: Optional[str] = None,
                 trust_pickle: bool = False, resolution: Optional[int] = None,
                 loss: str = "kd", loss_options: "dict | Iterable[str] | None" = None,
                 ls: bool = False, labelled_fraction: float = 1.0, resume: bool = False,
                 force: bool = False, export: bool = True, train_kw: Optional[dict] = None,
                 progress: bool = True) -> Optional[TrainRun]:
    """`edgekd distill` (``kind="distill"``, writes student.*) or `edgekd train` (``kind=
    "train"``, writes model.*). ``loss_options`` is a dict or "key=value" strings (values parsed
    as bool/int/float where they read as one). None on torchrun ranks other than 0."""
    from ..data import load_data
    from ..models.cost import cost_or_none
    from ..util_io import atomic_write_json
    from .options import parse_pairs

    config = TrainConfig.make(**dict(train_kw or {}))
    out_dir = Path(out)
    prepare_out(out_dir, resume, force)
    options = dict(loss_options) if isinstance(loss_options, dict) else parse_pairs(
        tuple(loss_options or ()))
    bundle = load_data(data, resolution=resolution, seed=config.seed,
                       labelled_fraction=labelled_fraction)
    teacher = None
    if teacher_spec:
        from ..models.teacher import check_teacher_matches, load_teacher

        teacher = load_teacher(teacher_spec, weights=teacher_weights, trust_pickle=trust_pickle,
                               num_classes=bundle.num_classes, in_channels=bundle.in_channels)
        check_teacher_matches(teacher, bundle)
    result = distill(model_spec, teacher, bundle, out_dir, config=config, loss=loss,
                     loss_options=options, ls=ls, resume=resume, progress=progress)
    if result.model is None:
        return None
    stem = "student" if kind == "distill" else "model"
    deploy = result.model
    result.save(out_dir / f"{stem}.pt", spec=model_spec, bundle=bundle, loss=loss)
    exported = export_with_parity(deploy, bundle, out_dir, stem, model_spec) if export else {}
    teacher_cost = None
    if teacher is not None and getattr(teacher, "module", None) is not None:
        teacher_cost = cost_or_none(teacher.module, bundle.input_shape)
    hist = result.history
    summary = {
        "command": kind, "model": model_spec, "teacher": teacher_spec, "data": data,
        "data_fingerprint": bundle.fingerprint, "labelled_fraction": labelled_fraction,
        "loss": loss, "loss_options": options, "ls": ls,
        "config": config.model_dump(mode="json"),
        "val_acc": result.best_acc, "best_epoch": result.best_epoch,
        "last_acc": result.last_acc, "epochs": len(hist), "cache": result.cache,
        "epoch_time_s": (sum(h["train_time_s"] for h in hist) / len(hist)) if hist else None,
        "student_cost": cost_or_none(deploy, bundle.input_shape), "teacher_cost": teacher_cost,
        "checkpoint": str(out_dir / f"{stem}.pt"), **exported,
        "log": str(result.paths["log"]),
    }
    atomic_write_json(out_dir / FINISHED, summary)
    return TrainRun(summary=summary, data_name=bundle.name, summary_path=out_dir / FINISHED)
