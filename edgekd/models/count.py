"""MACs and parameters of a torch model, counted with forward hooks on one sample.

Counted, per sample (batch 1):

- ``nn.Conv1d/2d/3d``: ``Cout * (Cin / groups) * prod(kernel) * prod(output spatial size)``
- ``nn.ConvTranspose*d``: ``Cin * (Cout / groups) * prod(kernel) * prod(input spatial size)``
- ``nn.Linear``: ``in_features * out_features`` per output row (once for an (N, in) input)

Not counted: bias additions, batch norm, activations, pooling, residual additions, and
functional calls (``F.conv2d``) made outside these modules. A module called twice is counted
twice. Parameters are ``sum(p.numel())`` over the model's unique parameters (buffers such as
batch-norm running statistics are not parameters).
"""
from __future__ import annotations

import math
from typing import Sequence

from ..errors import BadInputError


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs_params(model, input_shape: Sequence[int]) -> tuple[int, int]:
    """(MACs, params) of ``model`` for one input of ``input_shape`` (no batch, e.g. (C, H, W))."""
    import torch
    from torch import nn

    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"input shape {input_shape!r} is not a sequence of integers",
                            hint="pass (C, H, W) without the batch dimension") from exc
    if not shape or any(d < 1 for d in shape):
        raise BadInputError(f"input shape {shape} must be positive sizes",
                            hint="pass (C, H, W) without the batch dimension")

    total = [0]

    def conv_hook(m, inputs, output):
        total[0] += (output.numel() // output.shape[0]) * (m.in_channels // m.groups) * math.prod(
            m.kernel_size)

    def convt_hook(m, inputs, output):
        x = inputs[0]
        total[0] += (x.numel() // x.shape[0]) * (m.out_channels // m.groups) * math.prod(
            m.kernel_size)

    def linear_hook(m, inputs, output):
        rows = output.numel() // output.shape[-1] if output.dim() > 1 else 1
        batch = output.shape[0] if output.dim() > 1 else 1
        total[0] += (rows // batch) * m.in_features * m.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            handles.append(m.register_forward_hook(convt_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *shape), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total[0]), count_params(model)
