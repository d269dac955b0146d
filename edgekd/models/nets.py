"""Torch modules for the built-in block kinds, and models built from a plan.

Every model is a :class:`StudentNet`: ``features`` (an ``nn.Sequential`` of the body blocks,
``features.i`` is block i of the plan), ``pool`` (global average pool + flatten) and
``classifier`` (an ``nn.Linear``), so distillation taps have stable module paths.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import BadInputError
from .plan import BUILTIN_KINDS


def _act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    return nn.Identity()


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: str = "relu"):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            _act(act),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, hidden: int, expansion: float, kernel: int = 3,
                 stride: int = 1):
        super().__init__()
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNAct(cin, hidden, 1, 1, act="relu6"))
        layers.append(ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act="relu6"))
        layers.append(ConvBNAct(hidden, cout, 1, 1, act="none"))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_residual else y


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 3, stride, act="relu")
        self.conv2 = ConvBNAct(cout, cout, 3, 1, act="none")
        self.shortcut = (ConvBNAct(cin, cout, 1, stride, act="none")
                         if stride != 1 or cin != cout else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ClassifierHead(nn.Module):
    """Global average pool, flatten, Linear: the ``head`` block measured on its own."""

    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(x))


class StudentNet(nn.Module):
    """``classifier(pool(features(x)))``; ``num_features`` is the classifier's input width."""

    def __init__(self, features: nn.Sequential, num_features: int, num_classes: int):
        super().__init__()
        self.features = features
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier = nn.Linear(num_features, num_classes)
        self.num_features = num_features
        self.num_classes = num_classes
        self.edgekd_spec = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _builtin_block(sig: dict[str, Any]) -> nn.Module:
    kind = sig["kind"]
    if kind == "conv":
        return ConvBNAct(sig["cin"], sig["cout"], sig["k"], sig["s"], act=sig["act"])
    if kind == "ir":
        return InvertedResidual(sig["cin"], sig["cout"], sig["hidden"], sig["expansion"],
                                sig["k"], sig["s"])
    if kind == "basic":
        return BasicBlock(sig["cin"], sig["cout"], sig["s"])
    return ClassifierHead(sig["cin"], sig["classes"])


def build_block(signature: dict[str, Any]) -> tuple[nn.Module, tuple[int, ...]]:
    """The module for one block signature (initialised, eval mode) and its input shape
    ``(C, H, W)`` without batch, so the block can be measured alone."""
    if not isinstance(signature, dict) or "kind" not in signature or "in_shape" not in signature:
        raise BadInputError(f"not a block signature: {signature!r}",
                            hint="pass an entry of block_signatures(spec, in_channels)")
    kind = signature["kind"]
    if kind in BUILTIN_KINDS:
        try:
            module = _builtin_block(signature)
        except KeyError as exc:
            raise BadInputError(f"block signature '{signature.get('key', kind)}' lacks "
                                f"field {exc}", hint="pass an entry of block_signatures()") from exc
    else:
        from .spec import get_family

        family = signature.get("family")
        fam = get_family(family) if family else None
        if fam is None or fam.build_block is None:
            raise BadInputError(f"unknown block kind '{kind}'",
                                hint=f"built-in kinds: {', '.join(BUILTIN_KINDS)}; a family "
                                     f"with its own kinds must give Family.build_block")
        module = fam.build_block(signature)
    _init_weights(module)
    return module.eval(), tuple(int(d) for d in signature["in_shape"])


def build_from_plan(sigs: list[dict[str, Any]]) -> StudentNet:
    """A StudentNet whose body is the plan's blocks and whose head is its last (``head``)."""
    if not sigs or sigs[-1]["kind"] != "head":
        raise BadInputError("a student plan must end with a 'head' block",
                            hint="end Family.plan with plan.head_sig(...)")
    head = sigs[-1]
    body = []
    for sig in sigs[:-1]:
        module, _ = build_block(sig)
        body.append(module)
    net = StudentNet(nn.Sequential(*body), head["cin"], head["classes"])
    _init_weights(net.classifier)
    return net.train()
