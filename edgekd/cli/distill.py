"""`edgekd distill` (teacher -> student) and `edgekd train` (no teacher: baselines, demo teachers).

Both call edgekd.distill.run.train_to_dir, which trains with edgekd.distill.trainer.fit, then
writes the deployable model as an edgekd checkpoint and an ONNX file (with a parity check),
train.jsonl and summary.json. Under torchrun only rank 0 writes.
"""
from __future__ import annotations

from typing import Optional

import click

from .common import emit_json, json_option, trust_code_option


def _run(*, kind: str, teacher_spec: Optional[str], teacher_weights: Optional[str],
         trust_pickle: bool, model_spec: str, data: str, resolution: Optional[int], loss: str,
         loss_opts: tuple[str, ...], ls: bool, labelled_fraction: float, out: str, resume: bool,
         force: bool, as_json: bool, export: bool, train_kw: dict) -> None:
    from ..distill.run import train_to_dir

    run = train_to_dir(kind=kind, model_spec=model_spec, data=data, out=out,
                       teacher_spec=teacher_spec, teacher_weights=teacher_weights,
                       trust_pickle=trust_pickle, resolution=resolution, loss=loss,
                       loss_options=loss_opts, ls=ls, labelled_fraction=labelled_fraction,
                       resume=resume, force=force, export=export, train_kw=train_kw,
                       progress=not as_json)
    if run is None:  # a torchrun rank other than 0: rank 0 reports
        return
    summary = run.summary
    if as_json:
        emit_json(summary)
        return
    click.echo(f"{kind}: {model_spec} on {run.data_name}: val acc {summary['val_acc']:.4f} "
               f"(epoch {summary['best_epoch']}/{summary['epochs']}, last "
               f"{summary['last_acc']:.4f}); teacher logits: {summary['cache']}", err=False)
    click.echo(f"wrote {summary['checkpoint']}"
               + (f", {summary['onnx']}" if "onnx" in summary else "") + f", {run.summary_path}")


def _train_options(f):
    opts = [
        click.option("--data", "-d", "data", required=True, help="Data spec: digits, shapes[:knobs], folder:DIR, npz:FILE, "
                     "py:module:function."),
        click.option("--resolution", type=int, default=None, help="Resize images to N×N."),
        click.option("--epochs", type=int, default=None, help="Training epochs [default: 10]."),
        click.option("--batch-size", type=int, default=None,
                     help="Global batch size: under torchrun each of N processes takes 1/N of it, so "
                     "the optimizer steps are those of one process [default: 64]."),
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
        click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False),
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


@click.command("distill", short_help="Distill a student from a teacher.")
@click.option("--teacher", "teacher_spec", required=True,
              help="Teacher: an edgekd checkpoint, TorchScript/.pt2/ONNX file or model spec.")
@click.option("--teacher-weights", default=None, type=click.Path(dir_okay=False),
              help="State dict for a teacher given as a model spec.")
@trust_code_option(pass_as="trust_pickle")
@click.option("--student", "model_spec", required=True,
              help="Student spec, e.g. 'mobilenetv2:width=0.5,res=16'.")
@click.option("--loss", default="kd", show_default=True,
              help="Distillation loss (kd, dkd, nkd, dist, ...; see docs/METHODS.md).")
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

    Example:

    \b
        edgekd distill --teacher out/teacher/model.pt --student convnet:width=8,res=16 \\
            --data digits --loss dkd --epochs 10 --out out/dkd
    """
    _run(kind="distill", teacher_spec=teacher_spec, teacher_weights=teacher_weights,
         trust_pickle=trust_pickle, model_spec=model_spec, data=kw["data"],
         resolution=kw["resolution"], loss=loss, loss_opts=loss_opts, ls=ls,
         labelled_fraction=kw["labelled_fraction"], out=kw["out"], resume=kw["resume"],
         force=kw["force"], as_json=kw["as_json"], export=not kw["no_export"],
         train_kw=_train_kw(kw))


@click.command("train", short_help="Train a model on labels alone (a baseline or teacher).")
@click.option("--model", "model_spec", required=True,
              help="Model spec, e.g. 'resnet:width=16,blocks=2,res=16'.")
@_train_options
def train_cmd(model_spec, **kw):
    """Train a model on labels alone (a baseline, or a teacher for `edgekd distill`).

    Writes OUT/model.pt (edgekd checkpoint, best validation epoch; usable as --teacher),
    OUT/model.onnx, OUT/train.jsonl and OUT/summary.json. With --labelled-fraction < 1 only
    the labelled samples are used.

    Example:

    \b
        edgekd train --model resnet:width=16,blocks=2,res=16 --data digits --epochs 12 --out out/teacher
    """
    _run(kind="train", teacher_spec=None, teacher_weights=None, trust_pickle=False,
         model_spec=model_spec, data=kw["data"], resolution=kw["resolution"], loss="ce",
         loss_opts=(), ls=False, labelled_fraction=kw["labelled_fraction"], out=kw["out"],
         resume=kw["resume"], force=kw["force"], as_json=kw["as_json"],
         export=not kw["no_export"], train_kw=_train_kw(kw))
