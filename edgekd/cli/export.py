"""`edgekd export MODEL --target T --out DIR`: the target's artifact, via the hub ONNX file."""
from __future__ import annotations

import click

from .common import emit_json, json_option, resolve_target, sample_shape, trust_code_option


@click.command("export", short_help="Export a model to a target's runtime, parity-checked.")
@click.argument("model")
@click.option("--target", "-t", "target_name", required=True,
              help="Target name (see `edgekd targets`) or the path of a target YAML file.")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory: model.onnx plus the target's artifact (IR, engine).")
@click.option("--shape", default=None, metavar="C,H,W", help="Per-sample input shape (for checkpoints/TorchScript or dynamic inputs).")
@click.option("--resolution", type=int, default=None, metavar="N",
              help="Square input of N×N with --in-channels channels (the same as --shape C,N,N).")
@click.option("--opset", type=int, default=17, show_default=True,
              help="ONNX opset to export with (17 or newer; the dynamo fallback uses at least 18).")
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension (the target's batch is used for the parity run).")
@click.option("--num-classes", type=int, default=10, show_default=True, help="Classes, when MODEL is a student spec.")
@click.option("--in-channels", type=int, default=1, show_default=True, help="Input channels, when MODEL is a student spec.")
@json_option
@trust_code_option
def export_cmd(model, target_name, out_dir, shape, resolution, opset, dynamic_batch, num_classes, in_channels, as_json):
    """Export MODEL for a target: ONNX (always kept as DIR/model.onnx), then the target's own
    artifact (OpenVINO IR .xml/.bin, TensorRT engine, TorchScript model.ts for torch targets),
    loaded back and checked for parity against torch on 16 seeded random inputs (max abs diff,
    cosine, top-1 agreement; fp16/int8 artifacts: top-1 only). Prints every file's sha256.

    MODEL is a student spec (e.g. 'mobilenetv2:width=0.5,res=32'), an edgekd checkpoint, a
    TorchScript/.pt2 file, or an .onnx file (then the artifact is built from it and checked
    against onnxruntime running the same file). DIR must be new or empty; it is filled only
    when everything succeeded (exit 1 when parity fails, and DIR is left untouched).

    Example:

    \b
        edgekd export out/dkd/student.pt -t openvino-cpu --out out/ov
    """
    from ..deploy import export_ref

    result = export_ref(model, resolve_target(target_name), out_dir,
                        sample_shape=sample_shape(shape, resolution, in_channels), opset=opset,
                        dynamic_batch=dynamic_batch, num_classes=num_classes, in_channels=in_channels)
    doc = result.to_dict()
    if as_json:
        emit_json(doc)
        return
    click.echo(f"exported {model} for {doc['target']} ({doc['format']}, input {tuple(doc['input_shape'])}): {doc['path']}")
    for f in doc["files"]:
        click.echo(f"  {f['path']}  sha256 {f['sha256']}")
    if result.parity:
        click.echo(f"  parity vs {result.parity_reference}: {result.parity.one_line()}")
    else:
        click.echo("  parity: not needed (the artifact is the ONNX file itself)")
