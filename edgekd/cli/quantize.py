"""`edgekd quantize MODEL --target T --data SPEC --out DIR`: INT8 that is kept only if it pays."""
from __future__ import annotations

import sys

import click

from .common import emit_json, json_option, resolve_target


@click.command("quantize", short_help="INT8 for a target, kept only if faster.")
@click.argument("model")
@click.option("--target", "-t", "target_name", required=True,
              help="An int8 target (ort-cpu-int8, openvino-cpu-int8, tensorrt-int8) or a YAML path.")
@click.option("--data", "-d", "data_spec", required=True,
              help="Data spec for calibration and validation (digits, shapes[:knobs], folder:DIR, npz:FILE, py:MOD:FN).")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile", "mean-minmax"]),
              default="minmax", show_default=True,
              help="How activation ranges are read from the calibration data. minmax (every runtime): "
                   "the least and largest value over all calibration samples; entropy, percentile: "
                   "ONNX Runtime and TensorRT; mean-minmax: OpenVINO only, NNCF's own default (the mean "
                   "of each calibration batch's extremes; narrower, and it clips on a batch-1 model).")
@click.option("--preset", type=click.Choice(["performance", "mixed"]), default="performance",
              show_default=True, help="NNCF preset for OpenVINO (mixed: asymmetric activations).")
@click.option("--calib-size", type=int, default=300, show_default=True,
              help="Calibration samples taken from the training split.")
@click.option("--val-size", type=int, default=None,
              help="Validation samples used for accuracy (default: the whole validation split).")
@click.option("--max-drop", type=float, default=None,
              help="Largest allowed top-1 drop (0.01 = one point); OpenVINO uses NNCF accuracy control.")
@click.option("--rounds", type=int, default=3, show_default=True,
              help="Interleaved fp32/int8 latency rounds.")
@click.option("--keep-slower", "--force", "force", is_flag=True,
              help="Keep the INT8 model even when it is not faster or drops more than --max-drop "
                   "(--force: the older name).")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the INT8 artifact and its report JSON.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the calibration subset.")
@click.option("--qat", type=click.Choice(["auto", "off", "always"]), default=None,
              help="Quantization-aware distillation after PTQ: auto (when PTQ drops more than "
                   "--max-drop, default 0.01), always, or off. Default: auto with --teacher, else off.")
@click.option("--teacher", "teacher_spec", default=None,
              help="Teacher for QAD (file, py:MOD:FN, family:k=v with --teacher-weights, hf:DIR).")
@click.option("--teacher-weights", default=None, help="Weights for a family-spec teacher.")
@click.option("--qat-epochs", type=int, default=3, show_default=True, help="QAD fine-tuning epochs.")
@click.option("--loss", default="kd", show_default=True,
              help="QAD loss: any distillation loss (kd, dkd, ...) or ce (labels only, no teacher).")
@click.option("--loss-opt", "loss_opts", multiple=True, help="Loss option key=value (repeatable).")
@click.option("--labelled-fraction", type=float, default=1.0, show_default=True,
              help="Fraction of training labels QAD may use (the KD loss needs none).")
@click.option("--lr", type=float, default=None, help="QAD peak learning rate (default 0.005, SGD).")
@click.option("--batch-size", type=int, default=None, help="QAD batch size (default 64).")
@click.option("--resume", is_flag=True, help="Continue a killed QAD run in --out.")
@click.option("--trust-code", "trust_code", is_flag=True,
              help="Allow model files that hold code (pickles, TorchScript) for QAD.")
@json_option
def quantize_cmd(model, target_name, data_spec, method, preset, calib_size, val_size, max_drop,
                 rounds, force, out_dir, seed, qat, teacher_spec, teacher_weights, qat_epochs, loss,
                 loss_opts, labelled_fraction, lr, batch_size, resume, trust_code, as_json):
    """Quantize MODEL to INT8 for a target, then compare it with fp32 on the same runtime.

    MODEL is an .onnx file or an edgekd checkpoint (.pt). Accuracy (top-1 on the validation
    split) and p50/p90 latency are measured through the target's runtime for both models; an
    INT8 model that is not faster is not kept (exit 1) unless --keep-slower.

    With --teacher (or --qat always) a PTQ drop above --max-drop is trained back by
    quantization-aware distillation of the student (an edgekd checkpoint), exported into the
    same INT8 graph (docs/QAD.md).

    Example:

    \b
        edgekd quantize out/dkd/student.onnx -t ort-cpu-int8 --data digits --out out/int8
    """
    from ..errors import VerdictError
    from ..quantize import quantize_ref

    target = resolve_target(target_name)
    mode = qat or ("auto" if teacher_spec else "off")
    if mode != "off":  # quantization-aware distillation after PTQ (docs/QAD.md)
        from ..distill.options import parse_pairs
        from ..quantize.qad import qad_ref

        train_kw = {k: v for k, v in (("lr", lr), ("batch_size", batch_size)) if v is not None}
        call = lambda: qad_ref(model, target, data_spec, out_dir, teacher_spec=teacher_spec,  # noqa: E731
                               teacher_weights=teacher_weights, trust_code=trust_code,
                               labelled_fraction=labelled_fraction, seed=seed, qat=mode,
                               epochs=qat_epochs, loss=loss, loss_options=parse_pairs(loss_opts),
                               train_kw=train_kw, calib_size=calib_size, val_size=val_size,
                               max_drop=max_drop, force=force, rounds=rounds, method=method,
                               preset=preset, resume=resume, progress=not as_json)
    else:
        call = lambda: quantize_ref(model, target, data_spec, out_dir, calib_size=calib_size,  # noqa: E731
                                    val_size=val_size, seed=seed, method=method, preset=preset,
                                    max_drop=max_drop, force=force, rounds=rounds)
    try:
        report = _run(call, as_json, target.name)
    except VerdictError as err:
        rep = getattr(err, "report", None)
        if rep is not None:
            if as_json:
                emit_json(rep.to_dict())
            else:
                _print_any(rep, model, err=True)
        raise
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_any(report, model)


def _print_any(r, model: str, err: bool = False) -> None:
    """A PTQ report, or PTQ and QAD side by side."""
    if not hasattr(r, "ptq"):
        return _print_table(r, model, err=err)
    from rich.console import Console

    c = Console(stderr=err)
    for name, side in (("PTQ", r.ptq), ("QAD", r.qad)):
        if side is not None:
            _print_table(side, f"{model} [{name}]", err=err)
    c.print(f"QAD: {r.reason}; kept {r.chosen.upper()}"
            + (f"; parity vs fake-quant torch: cosine {r.parity['cosine']:.4f}, top-1 agreement "
               f"{r.parity['top1_agreement']:.3f}" if r.parity else ""))
    if r.train:
        c.print(f"QAD training: {r.train['epochs']} epoch(s), loss {r.train['loss']}, "
                f"fake-quant val {r.train['fake_quant_val_acc']:.4f}, cache {r.train['cache']}")
    for n in r.notes:
        c.print(f"[yellow]note:[/] {n}")


def _run(fn, quiet: bool, target_name: str):
    if quiet or not sys.stderr.isatty():
        return fn()
    from rich.console import Console

    with Console(stderr=True).status(f"quantizing and measuring on {target_name} ..."):
        return fn()


def _fmt(v, spec: str) -> str:
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(v, spec)


def _print_table(r, model: str, err: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{model}: fp32 ({r.fp32.target}) vs int8 ({r.target}), {r.method}")
    t.add_column("metric")
    t.add_column("fp32", justify="right")
    t.add_column("int8", justify="right")
    t.add_column("int8/fp32", justify="right")
    acc = lambda v: "n/a" if v is None else f"{v * 100:.2f}%"  # noqa: E731
    t.add_row("params", _fmt(r.fp32.params, ","), _fmt(r.int8.params, ","), "")
    t.add_row("accuracy (top-1)", acc(r.fp32.accuracy), acc(r.int8.accuracy),
              "n/a" if r.accuracy_drop is None else f"{-r.accuracy_drop * 100 + 0.0:+.2f} pt")
    t.add_row("p50 ms", _fmt(r.fp32.p50, ".4f"), _fmt(r.int8.p50, ".4f"), _fmt(r.p50_ratio, ".3f"))
    t.add_row("p90 ms", _fmt(r.fp32.p90, ".4f"), _fmt(r.int8.p90, ".4f"),
              _fmt(1 / r.speedup_p90 if r.speedup_p90 else None, ".3f"))
    t.add_row("size bytes", _fmt(r.fp32.size_bytes, ","), _fmt(r.int8.size_bytes, ","),
              _fmt(r.size_ratio, ".3f"))
    c = Console(stderr=err)
    c.print(t)
    c.print(f"speed-up p50 {_fmt(r.speedup_p50, '.2f')}x, p90 {_fmt(r.speedup_p90, '.2f')}x; "
            f"{r.calib_samples} calibration / {r.val_samples} validation samples")
    if r.kept and r.artifact is not None:
        c.print(f"kept: {r.artifact.path}" + (" (forced)" if r.forced and r.notes else ""))
    for n in r.notes:
        c.print("[yellow]note:[/] " + n.replace("[", "\\["))  # a note may quote "edgekd[openvino]"
