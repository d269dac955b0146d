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
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (17 or newer).")
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension.")
@click.option("--num-classes", type=int, default=10, show_default=True, help="Classes, when MODEL is a student spec.")
@click.option("--in-channels", type=int, default=1, show_default=True, help="Input channels, when MODEL is a student spec.")
@json_option
def export_cmd(model, target_name, out_dir, shape, opset, dynamic_batch, num_classes, in_channels, as_json):
    """Export MODEL for a target: ONNX (always kept as DIR/model.onnx), then the target's own
    artifact (OpenVINO IR .xml/.bin, TensorRT engine), with a parity check of the artifact
    against torch on sample inputs (max abs diff, cosine, top-1 agreement).

    MODEL is a student spec (e.g. 'mobilenetv2:width=0.5,res=32'), an edgekd checkpoint, a
    TorchScript/.pt2 file, or an .onnx file (then only the runtime artifact is built).
    The output directory is written only when everything succeeded.
    """
    import shutil
    import tempfile
    from pathlib import Path

    import numpy as np

    from ..backends import require_backend
    from ..backends.resolve import open_model
    from ..errors import BadInputError
    from ..export import check_parity, export_for_target, run_batched

    target = resolve_target(target_name)
    require_backend(target)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise BadInputError(f"output directory {out} is not empty", hint="choose a new --out or empty it")
    sample_shape = parse_shape(shape) if shape else None
    staging = Path(tempfile.mkdtemp(prefix=".edgekd-export-", dir=str(out.parent.resolve()) if out.parent.exists() else None))
    try:
        module, parity = None, None
        if Path(model).suffix.lower() == ".onnx":
            opened = open_model(model, target, work_dir=staging, sample_shape=sample_shape)
            if not (staging / "model.onnx").exists():
                shutil.copyfile(model, staging / "model.onnx")
            artifact = opened.artifact
            if Path(artifact.path).resolve() == Path(model).resolve():
                artifact = type(artifact).from_file(staging / "model.onnx", artifact.format, target=target.name,
                                                    precision=artifact.precision, tool_versions=artifact.tool_versions)
        else:
            module, per_sample = _load_module(model, sample_shape, num_classes, in_channels)
            import torch

            gen = torch.Generator().manual_seed(0)
            sample = torch.randn((target.batch, *per_sample), generator=gen)
            parity_x = torch.randn((16, *per_sample), generator=gen)  # run_batched copes with a fixed batch
            artifact, parity = export_for_target(module, sample, target, staging, opset=opset,
                                                 dynamic_batch=dynamic_batch, parity_samples=parity_x,
                                                 metadata={"edgekd.spec": getattr(module, "edgekd_spec", "")})
            if target.runtime.value == "torch":
                import torch as _t

                scripted = _t.jit.trace(module.eval(), sample)
                _t.jit.save(scripted, str(staging / "model.ts"))
                artifact = type(artifact).from_file(staging / "model.ts", "torchscript", target=target.name,
                                                    precision=target.precision.value)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    rel = lambda p: out / Path(p).name  # noqa: E731 - artifacts moved with the staging dir
    result = {"target": target.name, "format": artifact.format, "path": str(rel(artifact.path)),
              "extra_paths": [str(rel(p)) for p in artifact.extra_paths], "sha256": artifact.sha256,
              "onnx": str(out / "model.onnx") if (out / "model.onnx").exists() else None,
              "parity": parity.to_dict() if parity else None, "tool_versions": dict(artifact.tool_versions)}
    if as_json:
        emit_json(result)
        return
    click.echo(f"exported for {target.name} ({artifact.format}): {result['path']}")
    for p in result["extra_paths"]:
        click.echo(f"  + {p}")
    click.echo(f"  sha256 {artifact.sha256}")
    if parity:
        click.echo(f"  parity: {parity.one_line()}")


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
    from ..models import build_model, input_shape

    module = build_model(model, num_classes=num_classes, in_channels=in_channels).eval()
    shape = tuple(input_shape(model, in_channels))
    if sample_shape and tuple(sample_shape) != shape:
        raise BadInputError(f"--shape {tuple(sample_shape)} contradicts the spec, whose input is {shape}",
                            hint="set the spec's res knob instead")
    return module, shape
