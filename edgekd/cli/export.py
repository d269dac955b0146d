"""`edgekd export MODEL --target T --out DIR`: the target's artifact, via the hub ONNX file."""
from __future__ import annotations

import click

from .common import emit_json, json_option, parse_shape, resolve_target


@click.command("export")
@click.argument("model")
@click.option("--target", "-t", "target_name", required=True,
              help="Target name (see `edgekd targets`) or the path of a target YAML file.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory: model.onnx plus the target's artifact (IR, engine).")
@click.option("--shape", default=None, metavar="C,H,W", help="Per-sample input shape (for checkpoints/TorchScript or dynamic inputs).")
@click.option("--opset", type=int, default=17, show_default=True,
              help="ONNX opset to export with (17 or newer; the dynamo fallback uses at least 18).")
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension (the target's batch is used for the parity run).")
@click.option("--num-classes", type=int, default=10, show_default=True, help="Classes, when MODEL is a student spec.")
@click.option("--in-channels", type=int, default=1, show_default=True, help="Input channels, when MODEL is a student spec.")
@json_option
def export_cmd(model, target_name, out_dir, shape, opset, dynamic_batch, num_classes, in_channels, as_json):
    """Export MODEL for a target: ONNX (always kept as DIR/model.onnx), then the target's own
    artifact (OpenVINO IR .xml/.bin, TensorRT engine, TorchScript model.ts for torch targets),
    loaded back and checked for parity against torch on 16 seeded random inputs (max abs diff,
    cosine, top-1 agreement; fp16/int8 artifacts: top-1 only). Prints every file's sha256.

    MODEL is a student spec (e.g. 'mobilenetv2:width=0.5,res=32'), an edgekd checkpoint, a
    TorchScript/.pt2 file, or an .onnx file (then the artifact is built from it and checked
    against onnxruntime running the same file). DIR must be new or empty; it is filled only
    when everything succeeded (exit 1 when parity fails, and DIR is left untouched).
    """
    import shutil
    import tempfile
    from pathlib import Path

    from ..backends import require_backend
    from ..backends.base import sha256_file
    from ..errors import BadInputError
    from ..export import export_for_target

    target = resolve_target(target_name)
    require_backend(target)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInputError(f"output directory {out} is not empty", hint="choose a new --out or empty it")
    sample_shape = parse_shape(shape) if shape else None
    parent = out.absolute().parent
    made = [d for d in (parent, *parent.parents) if not d.exists()]  # removed again on failure
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".edgekd-export-", dir=str(parent)))
    try:
        if Path(model).suffix.lower() == ".onnx":
            artifact, parity, input_shape = _from_onnx_file(Path(model), target, staging, sample_shape)
        else:
            module, per_sample = _load_module(model, sample_shape, num_classes, in_channels)
            import torch

            gen = torch.Generator().manual_seed(0)
            sample = torch.randn((target.batch, *per_sample), generator=gen)
            parity_x = torch.randn((16, *per_sample), generator=gen)  # run_batched copes with a fixed batch
            artifact, parity = export_for_target(module, sample, target, staging, opset=opset,
                                                 dynamic_batch=dynamic_batch, parity_samples=parity_x,
                                                 metadata={"edgekd.spec": getattr(module, "edgekd_spec", "")})
            input_shape = tuple(sample.shape)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for d in made:  # deepest first; only directories this command created, if still empty
            try:
                d.rmdir()
            except OSError:
                break
        raise
    moved = lambda p: out / Path(p).name  # noqa: E731 - artifacts moved with the staging dir
    files = [{"path": str(f), "sha256": sha256_file(f)} for f in sorted(out.iterdir()) if f.is_file()]
    onnx = out / "model.onnx"
    result = {"model": model, "target": target.name, "runtime": target.runtime.value,
              "precision": target.precision.value, "format": artifact.format,
              "path": str(moved(artifact.path)), "extra_paths": [str(moved(p)) for p in artifact.extra_paths],
              "sha256": artifact.sha256, "onnx": str(onnx) if onnx.exists() else None,
              "onnx_sha256": sha256_file(onnx) if onnx.exists() else None, "input_shape": list(input_shape),
              "files": files, "parity": parity.to_dict() if parity else None,
              "parity_reference": None if parity is None else (
                  "onnxruntime" if Path(model).suffix.lower() == ".onnx" else "torch"),
              "tool_versions": dict(artifact.tool_versions)}
    if as_json:
        emit_json(result)
        return
    click.echo(f"exported {model} for {target.name} ({artifact.format}, input {tuple(input_shape)}): {result['path']}")
    for f in files:
        click.echo(f"  {f['path']}  sha256 {f['sha256']}")
    if parity:
        click.echo(f"  parity vs {result['parity_reference']}: {parity.one_line()}")
    else:
        click.echo("  parity: not needed (the artifact is the ONNX file itself)")


def _from_onnx_file(path, target, staging, sample_shape):
    """An .onnx MODEL: copied as the hub, built for the target, checked against onnxruntime."""
    import shutil
    from pathlib import Path

    import numpy as np

    from ..backends._common import validate_onnx
    from ..backends.resolve import open_model
    from ..export import check_parity
    from ..targets import Precision, Runtime, TargetSpec

    validate_onnx(path)
    opened = open_model(path, target, work_dir=staging, sample_shape=sample_shape)
    hub = staging / "model.onnx"
    if not hub.exists():
        shutil.copyfile(path, hub)
    if Path(opened.artifact.path).resolve() == path.resolve():  # runs as is: the hub copy is the artifact
        a = opened.artifact
        opened.artifact = type(a).from_file(hub, a.format, target=a.target, precision=a.precision,
                                            tool_versions=a.tool_versions)
    parity = None
    try:
        if target.runtime != Runtime.onnxruntime:
            from ..backends.onnxruntime import OrtSession

            ref = OrtSession(hub, TargetSpec(name="reference", runtime="onnxruntime", threads=1))
            x = np.random.default_rng(0).standard_normal((16, *opened.input_shape[1:])).astype(np.float32)
            exact = target.precision == Precision.fp32
            parity = check_parity(ref, opened.session, x, check_values=exact, min_top1=0.99 if exact else 0.9)
    finally:
        opened.session.close()
    return opened.artifact, parity, tuple(opened.input_shape)


def _load_module(model: str, sample_shape, num_classes: int, in_channels: int):
    from pathlib import Path

    from ..backends.resolve import TORCH_SUFFIXES, _checkpoint_shape, _looks_like_path
    from ..errors import BadInputError

    if _looks_like_path(model):
        p = Path(model)
        if not p.exists():
            raise BadInputError(f"model file {p} does not exist", hint="check the path")
        if p.suffix.lower() not in TORCH_SUFFIXES:
            raise BadInputError(f"cannot export {p.name}: expected .onnx, a torch file ({', '.join(TORCH_SUFFIXES)}) or a student spec")
        from ..backends.torch import load_torch_file

        module, _ = load_torch_file(p)
        shape = sample_shape or _checkpoint_shape(p)
        if not shape:
            raise BadInputError(f"exporting {p.name} needs the input shape", hint="pass --shape C,H,W")
        return module.eval(), tuple(shape)
    from ..backends.resolve import build_spec_model
    from ..models import input_shape

    module = build_spec_model(model, num_classes=num_classes, in_channels=in_channels)
    shape = tuple(input_shape(model, in_channels))
    if sample_shape and tuple(sample_shape) != shape:
        raise BadInputError(f"--shape {tuple(sample_shape)} contradicts the spec, whose input is {shape}",
                            hint="set the spec's res knob instead")
    return module, shape
