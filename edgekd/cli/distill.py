"""`edgekd distill` (teacher -> student) and `edgekd train` (no teacher: baselines, demo teachers).

Both train with edgekd.distill.trainer.fit, then write the deployable model as an edgekd
checkpoint and an ONNX file (with a parity check), train.jsonl and summary.json. Under torchrun
only rank 0 writes.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

import click

from ..errors import BadInputError
from .common import emit_json, json_option

FINISHED = "summary.json"


def _parse_opts(pairs: tuple[str, ...]) -> dict[str, Any]:
    """('T=4', 'w_ce=0.1', 'ls=true') -> {'T': 4, 'w_ce': 0.1, 'ls': True}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise BadInputError(f"--loss-opt '{pair}' is not key=value",
                                hint="write it as --loss-opt T=4")
        raw = raw.strip()
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    continue
        out[key.strip()] = value
    return out


def _prepare_out(out: Path, resume: bool, force: bool) -> None:
    from ..distill.trainer import dist_info

    last = out / "checkpoints" / "last.pt"
    finished = (out / FINISHED).exists()
    if force and not resume:
        if dist_info()[0] == 0:
            for name in ("checkpoints",):
                shutil.rmtree(out / name, ignore_errors=True)
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


def _macs(model, shape) -> Optional[dict]:
    from ..errors import EdgeKDError
    from ..models import count_macs_params

    try:
        macs, params = count_macs_params(model, tuple(shape))
    except EdgeKDError:
        return None
    return {"macs": int(macs), "params": int(params)}


def _export(model, bundle, out: Path, stem: str, spec: str) -> dict:
    """ONNX export of the deployable model plus a parity check against torch on val images."""
    import torch

    from ..export import check_parity, export_onnx

    n = min(32, len(bundle.val))
    samples = torch.stack([bundle.val[i][0] for i in range(n)])
    path = export_onnx(model, samples[:1], out / f"{stem}.onnx", opset=17, dynamic_batch=True,
                       metadata={"edgekd.spec": spec})
    parity = check_parity(model, path, samples)
    return {"onnx": str(path), "parity": parity.to_dict()}


def _run(*, kind: str, teacher_spec: Optional[str], teacher_weights: Optional[str],
         trust_pickle: bool, model_spec: str, data: str, resolution: Optional[int], loss: str,
         loss_opts: tuple[str, ...], ls: bool, labelled_fraction: float, out: str, resume: bool,
         force: bool, as_json: bool, export: bool, train_kw: dict) -> None:
    from ..data import load_data
    from ..distill.criterion import build_criterion
    from ..distill.trainer import TrainConfig, dist_info, fit, restore_weights, seed_everything
    from ..models import build_model
    from ..models.checkpoint import save_checkpoint
    from ..util_io import atomic_write_json

    config = TrainConfig.make(**train_kw)
    out_dir = Path(out)
    _prepare_out(out_dir, resume, force)
    options = _parse_opts(loss_opts)
    bundle = load_data(data, resolution=resolution, seed=config.seed,
                       labelled_fraction=labelled_fraction)
    teacher = None
    if teacher_spec:
        from ..models.teacher import check_teacher_matches, load_teacher

        teacher = load_teacher(teacher_spec, weights=teacher_weights, trust_pickle=trust_pickle,
                               num_classes=bundle.num_classes, in_channels=bundle.in_channels)
        check_teacher_matches(teacher, bundle)
    seed_everything(config.seed)
    student = build_model(model_spec, num_classes=bundle.num_classes,
                          in_channels=bundle.in_channels)
    criterion = build_criterion(loss, options, num_classes=bundle.num_classes, student=student,
                                teacher=teacher, epochs=config.epochs, ls=ls)
    if getattr(criterion, "needs_teacher", False) and teacher is None:
        raise BadInputError(f"--loss {loss} needs a teacher",
                            hint="use `edgekd distill --teacher ...`, or --loss ce")
    try:
        result = fit(student, criterion, bundle, config, out_dir, teacher=teacher,
                     resume=resume, progress=not as_json)
        if dist_info()[0] != 0:
            return
        stem = "student" if kind == "distill" else "model"
        best = result.paths["best"]
        restore_weights(best if best.exists() else result.paths["last"], student, criterion)
        deploy = criterion.deployable(student).eval()
        save_checkpoint(out_dir / f"{stem}.pt", deploy, spec=model_spec,
                        num_classes=bundle.num_classes, in_channels=bundle.in_channels,
                        input_shape=tuple(bundle.input_shape),
                        extra={"val_acc": result.best_acc, "loss": loss,
                               "data": bundle.fingerprint})
        exported = _export(deploy, bundle, out_dir, stem, model_spec) if export else {}
    finally:
        if hasattr(criterion, "close"):
            criterion.close()
    teacher_cost = None
    if teacher is not None and getattr(teacher, "module", None) is not None:
        teacher_cost = _macs(teacher.module, bundle.input_shape)
    hist = result.history
    summary = {
        "command": kind, "model": model_spec, "teacher": teacher_spec, "data": data,
        "data_fingerprint": bundle.fingerprint, "labelled_fraction": labelled_fraction,
        "loss": loss, "loss_options": options, "ls": ls,
        "config": config.model_dump(mode="json"),
        "val_acc": result.best_acc, "best_epoch": result.best_epoch,
        "last_acc": result.last_acc, "epochs": len(hist), "cache": result.cache,
        "epoch_time_s": (sum(h["train_time_s"] for h in hist) / len(hist)) if hist else None,
        "student_cost": _macs(deploy, bundle.input_shape), "teacher_cost": teacher_cost,
        "checkpoint": str(out_dir / f"{stem}.pt"), **exported,
        "log": str(result.paths["log"]),
    }
    atomic_write_json(out_dir / FINISHED, summary)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"{kind}: {model_spec} on {bundle.name}: val acc {result.best_acc:.4f} "
               f"(epoch {result.best_epoch}/{len(hist)}, last {result.last_acc:.4f}); "
               f"teacher logits: {result.cache}", err=False)
    click.echo(f"wrote {summary['checkpoint']}"
               + (f", {summary['onnx']}" if exported else "") + f", {out_dir / FINISHED}")


def _train_options(f):
    opts = [
        click.option("--data", required=True, help="Data spec: digits, folder:DIR, npz:FILE, "
                     "py:module:function."),
        click.option("--resolution", type=int, default=None, help="Resize images to N×N."),
        click.option("--epochs", type=int, default=None, help="Training epochs [default: 10]."),
        click.option("--batch-size", type=int, default=None, help="Batch size [default: 64]."),
        click.option("--lr", type=float, default=None,
                     help="Peak learning rate [default: 0.05 for sgd, 0.002 for adamw]."),
        click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=None,
                     help="Optimizer [default: sgd]."),
        click.option("--schedule", type=click.Choice(["cosine", "step"]), default=None,
                     help="Learning-rate schedule [default: cosine]."),
        click.option("--warmup-epochs", type=int, default=None, help="Linear warm-up epochs."),
        click.option("--weight-decay", type=float, default=None, help="[default: 5e-4]."),
        click.option("--seed", type=int, default=None, help="Random seed [default: 0]."),
        click.option("--augment", type=click.Choice(["none", "padcrop"]), default=None,
                     help="Random augmentation [default: none; 'none' enables the teacher-logit "
                     "cache]."),
        click.option("--grad-clip", type=float, default=None, metavar="NORM",
                     help="Clip the global gradient norm to NORM (> 0) after each backward "
                     "pass; steadies large-scale losses such as dist [default: no clipping]."),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
                     help="Training device [default: cpu]."),
        click.option("--no-cache", is_flag=True,
                     help="Run the teacher live even when its logits could be cached."),
        click.option("--labelled-fraction", type=float, default=1.0, show_default=True,
                     help="Keep labels on this fraction of the train set (the rest is -1)."),
        click.option("--out", required=True, type=click.Path(file_okay=False),
                     help="Output directory."),
        click.option("--resume", is_flag=True, help="Continue the run saved in --out."),
        click.option("--force", is_flag=True, help="Overwrite a run already in --out."),
        click.option("--no-export", is_flag=True, help="Skip the ONNX export."),
        json_option,
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _train_kw(kw: dict) -> dict:
    return {"epochs": kw["epochs"], "batch_size": kw["batch_size"], "lr": kw["lr"],
            "optimizer": kw["optimizer"], "schedule": kw["schedule"],
            "warmup_epochs": kw["warmup_epochs"], "weight_decay": kw["weight_decay"],
            "seed": kw["seed"], "augment": kw["augment"], "device": kw["device"],
            "use_cache": False if kw["no_cache"] else None, "grad_clip": kw["grad_clip"]}


@click.command("distill")
@click.option("--teacher", "teacher_spec", required=True,
              help="Teacher: an edgekd checkpoint, TorchScript/.pt2/ONNX file or model spec.")
@click.option("--teacher-weights", default=None, type=click.Path(dir_okay=False),
              help="State dict for a teacher given as a model spec.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a pickled whole model.")
@click.option("--student", "model_spec", required=True,
              help="Student spec, e.g. 'mobilenetv2:width=0.5,res=16'.")
@click.option("--loss", default="kd", show_default=True,
              help="Distillation loss (kd, dkd, nkd, dist, ...; see KD_METHODS.md).")
@click.option("--loss-opt", "loss_opts", multiple=True, metavar="KEY=VALUE",
              help="Loss option, repeatable (e.g. --loss-opt T=4).")
@click.option("--ls", is_flag=True, help="Logit standardisation before the logit loss.")
@_train_options
def distill_cmd(teacher_spec, teacher_weights, trust_pickle, model_spec, loss, loss_opts, ls,
                **kw):
    """Distill a student from a teacher on a dataset.

    Writes OUT/student.pt (edgekd checkpoint of the deployable student, best validation
    epoch), OUT/student.onnx (checked for parity), OUT/train.jsonl (one line per epoch) and
    OUT/summary.json. Interrupt with Ctrl-C and continue with --resume. Runs data-parallel
    under `torchrun --nproc_per_node N -m edgekd distill ...`.
    """
    _run(kind="distill", teacher_spec=teacher_spec, teacher_weights=teacher_weights,
         trust_pickle=trust_pickle, model_spec=model_spec, data=kw["data"],
         resolution=kw["resolution"], loss=loss, loss_opts=loss_opts, ls=ls,
         labelled_fraction=kw["labelled_fraction"], out=kw["out"], resume=kw["resume"],
         force=kw["force"], as_json=kw["as_json"], export=not kw["no_export"],
         train_kw=_train_kw(kw))


@click.command("train")
@click.option("--model", "model_spec", required=True,
              help="Model spec, e.g. 'resnet:width=16,blocks=2,res=16'.")
@_train_options
def train_cmd(model_spec, **kw):
    """Train a model on labels alone (a baseline, or a teacher for `edgekd distill`).

    Writes OUT/model.pt (edgekd checkpoint, best validation epoch; usable as --teacher),
    OUT/model.onnx, OUT/train.jsonl and OUT/summary.json. With --labelled-fraction < 1 only
    the labelled samples are used.
    """
    _run(kind="train", teacher_spec=None, teacher_weights=None, trust_pickle=False,
         model_spec=model_spec, data=kw["data"], resolution=kw["resolution"], loss="ce",
         loss_opts=(), ls=False, labelled_fraction=kw["labelled_fraction"], out=kw["out"],
         resume=kw["resume"], force=kw["force"], as_json=kw["as_json"],
         export=not kw["no_export"], train_kw=_train_kw(kw))
