"""An hf- student with the input-size-dependent parts of its forward fixed for its resolution,
so that torch.fx can trace it (quantization-aware distillation traces the student).

transformers' ResNet stem checks the input's channel count in Python before its convolution;
the copy skips the check (a student's channels are fixed when it is built).

transformers' MobileViT cuts a feature map into patches with sizes read from the input's shape in
Python (``features.shape``, ``math.ceil`` of it), and its attention unpacks ``hidden_states.shape``:
the copy's MobileViT blocks take their map's height, width and channels as constants read at the
student's resolution (the batch stays free), and its attention splits and joins heads by the
head count, which it knows.

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


def _patching_layers(model) -> list:
    """transformers' MobileViT blocks, which unfold a map into patches by its size."""
    return [m for m in model.modules() if type(m).__name__ == "MobileViTLayer"
            and hasattr(m, "unfolding") and hasattr(m, "folding") and hasattr(m, "conv_1x1")]


def _shape_reading_attention(model) -> list:
    """transformers' MobileViT self-attention, which unpacks its input's shape in Python."""
    return [m for m in model.modules() if type(m).__name__ == "MobileViTSelfAttention"
            and hasattr(m, "num_attention_heads") and hasattr(m, "attention_head_size")]


def _embeddings_forward(self, pixel_values):
    """ResNetEmbeddings' forward without the channel check (the student's channels are its own)."""
    return self.pooler(self.embedder(pixel_values))


def static_for_tracing(model, input_shape: Sequence[int]) -> Any:
    """``model`` itself when nothing in it depends on the input's size or checks its shape in
    Python, else a copy whose TF-"SAME" paddings are the constants they take at
    ``input_shape`` (C, H, W) and whose ResNet stem skips its channel check."""
    import torch

    if not (_dynamic_padding_layers(model) or _checking_embeddings(model)
            or _patching_layers(model) or _shape_reading_attention(model)):
        return model
    model = copy.deepcopy(model)
    static: dict[type, type] = {}

    def swap(m, methods: dict) -> None:
        base = type(m)
        if base not in static:
            static[base] = type(f"Static{base.__name__}", (base,), methods)
        m.__class__ = static[base]

    for m in _checking_embeddings(model):
        swap(m, {"forward": _embeddings_forward})
    for m in _shape_reading_attention(model):
        swap(m, {"forward": _attention_forward})
    layers = _dynamic_padding_layers(model)
    patching = _patching_layers(model)
    sizes: dict[int, tuple[int, int]] = {}
    maps: dict[int, tuple[int, int, int]] = {}  # MobileViT block -> the (C, H, W) it unfolds
    hooks = [m.register_forward_pre_hook(
        lambda mod, args: sizes.__setitem__(id(mod), tuple(int(d) for d in args[0].shape[-2:])))
        for m in layers]
    hooks += [m.conv_1x1.register_forward_hook(
        lambda mod, args, out, block=m: maps.__setitem__(id(block), tuple(int(d) for d in out.shape[1:])))
        for m in patching]
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
        swap(m, {"forward": _static_forward})
    for m in patching:
        if id(m) in maps:
            m.static_map = maps[id(m)]
            swap(m, _static_patching())
    return model


def _static_patching() -> dict:
    """A MobileViT block's ``unfolding``/``folding`` with the map's size a constant
    (``self.static_map``, (C, H, W)); the same reshapes as transformers', batch left as -1."""
    import torch.nn.functional as F

    def unfolding(self, features):
        c, h, w = self.static_map
        ph, pw = self.patch_height, self.patch_width
        nh, nw = -(-h // ph), -(-w // pw)
        if (nh * ph, nw * pw) != (h, w):
            features = F.interpolate(features, size=(nh * ph, nw * pw), mode="bilinear",
                                     align_corners=False)
        patches = features.reshape(-1, ph, nw, pw).transpose(1, 2)
        patches = patches.reshape(-1, c, nh * nw, ph * pw).transpose(1, 3)
        return patches.reshape(-1, nh * nw, c), {}

    def folding(self, patches, info_dict):
        c, h, w = self.static_map
        ph, pw = self.patch_height, self.patch_width
        nh, nw = -(-h // ph), -(-w // pw)
        features = patches.contiguous().view(-1, ph * pw, nh * nw, c).transpose(1, 3)
        features = features.reshape(-1, nw, ph, pw).transpose(1, 2)
        features = features.reshape(-1, c, nh * ph, nw * pw)
        if (nh * ph, nw * pw) != (h, w):
            features = F.interpolate(features, size=(h, w), mode="bilinear", align_corners=False)
        return features

    return {"unfolding": unfolding, "folding": folding}


def _attention_forward(self, hidden_states):
    """MobileViT self-attention split into heads by the head count, not the input's shape."""
    import math

    import torch

    heads = (self.num_attention_heads, self.attention_head_size)
    query = self.query(hidden_states).unflatten(-1, heads).transpose(1, 2)
    key = self.key(hidden_states).unflatten(-1, heads).transpose(1, 2)
    value = self.value(hidden_states).unflatten(-1, heads).transpose(1, 2)
    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
    probs = self.dropout(torch.nn.functional.softmax(scores, dim=-1))
    context = torch.matmul(probs, value).permute(0, 2, 1, 3).contiguous()
    return context.flatten(-2)


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
