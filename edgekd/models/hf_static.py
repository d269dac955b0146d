"""An hf- student with the input-size-dependent parts of its forward fixed for its resolution,
so that torch.fx can trace it (quantization-aware distillation traces the student).

transformers' ResNet stem checks the input's channel count in Python before its convolution;
the copy skips the check (a student's channels are fixed when it is built).

transformers' MobileNetV2 pads every convolution TensorFlow's "SAME" way (``tf_padding``,
the config's default): the padding is computed in forward from the input's height and width
(``int(features.shape[-2])``), which a symbolic trace cannot do. An edgekd student is built for
one resolution (its spec's ``res``), where each of those paddings is a constant:
:func:`static_for_tracing` reads them in one forward pass at that size and returns a copy of
the model whose layers pad by those constants. Same parameters and state-dict keys, the same
outputs at that resolution (and the same ONNX graph: the exporter folds the computed padding
into a constant Pad as well).
"""
from __future__ import annotations

import copy
from typing import Any, Sequence


def _dynamic_padding_layers(model) -> list:
    """The layers whose forward pads by the input's size: transformers' conv layers with a
    ``config.tf_padding`` that is on and a ``convolution`` to pad for."""
    return [m for m in model.modules()
            if getattr(getattr(m, "config", None), "tf_padding", False) and hasattr(m, "convolution")
            and hasattr(m, "normalization") and hasattr(m, "activation")]


def _checking_embeddings(model) -> list:
    """transformers' ResNet stems, whose forward compares the input's channel count with the
    config's (a Python ``if`` on a traced value) before the convolution and the pooling."""
    return [m for m in model.modules() if type(m).__name__ == "ResNetEmbeddings"
            and hasattr(m, "embedder") and hasattr(m, "pooler")]


def _embeddings_forward(self, pixel_values):
    """ResNetEmbeddings' forward without the channel check (the student's channels are its own)."""
    return self.pooler(self.embedder(pixel_values))


def static_for_tracing(model, input_shape: Sequence[int]) -> Any:
    """``model`` itself when nothing in it depends on the input's size or checks its shape in
    Python, else a copy whose TF-"SAME" paddings are the constants they take at
    ``input_shape`` (C, H, W) and whose ResNet stem skips its channel check."""
    import torch

    if not _dynamic_padding_layers(model) and not _checking_embeddings(model):
        return model
    model = copy.deepcopy(model)
    static: dict[type, type] = {}

    def swap(m, forward) -> None:
        base = type(m)
        if base not in static:
            static[base] = type(f"Static{base.__name__}", (base,), {"forward": forward})
        m.__class__ = static[base]

    for m in _checking_embeddings(model):
        swap(m, _embeddings_forward)
    layers = _dynamic_padding_layers(model)
    sizes: dict[int, tuple[int, int]] = {}
    hooks = [m.register_forward_pre_hook(
        lambda mod, args: sizes.__setitem__(id(mod), tuple(int(d) for d in args[0].shape[-2:])))
        for m in layers]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *[int(d) for d in input_shape]))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    for m in layers:
        if id(m) not in sizes:  # not run at this size (a branch not taken): left as it is
            continue
        m.static_padding = _same_padding(*sizes[id(m)], m.convolution)
        swap(m, _static_forward)
    return model


def _static_forward(self, features):
    """transformers' conv layer forward with the padding a constant (``self.static_padding``)."""
    import torch.nn.functional as F

    features = self.convolution(F.pad(features, self.static_padding))
    if self.normalization is not None:
        features = self.normalization(features)
    if self.activation is not None:
        features = self.activation(features)
    return features


def _same_padding(h: int, w: int, conv) -> tuple[int, int, int, int]:
    """(left, right, top, bottom): TensorFlow's "SAME" padding of ``conv`` on an h×w input."""
    (sh, sw), (kh, kw), (dh, dw) = conv.stride, conv.kernel_size, conv.dilation
    ph = max(kh - (sh if h % sh == 0 else h % sh), 0)
    pw = max(kw - (sw if w % sw == 0 else w % sw), 0)
    return (pw // 2 * dw, (pw - pw // 2) * dw, ph // 2 * dh, (ph - ph // 2) * dh)
