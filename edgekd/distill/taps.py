"""Feature taps: read intermediate tensors by module path with forward hooks, so models need no
changes. A path is a name from ``model.named_modules()`` ("layer2", "layer2.1.conv2"); the suffix
``:input`` captures the module's (first) input instead of its output, which is how the
penultimate features are read: the input of the classifier Linear."""
from __future__ import annotations

import difflib
from typing import Any

from ..errors import BadInputError

INPUT_SUFFIX = ":input"


def _split(path: str) -> tuple[str, bool]:
    if path.endswith(INPUT_SUFFIX):
        return path[: -len(INPUT_SUFFIX)], True
    return path, False


def resolve_module(model, path: str):
    """``model.get_submodule(path)`` with an error that lists the nearest module names."""
    name, _ = _split(path)
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    known = [n for n in modules if n]
    near = difflib.get_close_matches(name, known, n=5, cutoff=0.3) or known[:5]
    raise BadInputError(
        f"module path '{name}' not found in {type(model).__name__}",
        hint=f"nearest module names: {', '.join(near) if near else '(model has no submodules)'}")


def _first_tensor(value: Any):
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        for v in value.values():
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


class FeatureTaps:
    """Forward hooks on ``paths`` of ``model``; ``.features[path]`` holds the latest tensor.

    Tensors are kept with their autograd graph (the student's features need gradients); the
    teacher runs under ``torch.no_grad()`` so its features carry none. Use as a context manager
    or call ``remove()`` when done.
    """

    def __init__(self, model, paths: list[str]):
        self.model = model
        self.paths = list(paths)
        self.features: dict[str, Any] = {}
        self._handles = []
        try:
            for path in self.paths:
                module = resolve_module(model, path)
                self._handles.append(self._hook(module, path))
        except BadInputError:
            self.remove()
            raise

    def _hook(self, module, path: str):
        _, want_input = _split(path)
        features = self.features

        if want_input:
            def pre_hook(_mod, args):
                features[path] = _first_tensor(args)
            return module.register_forward_pre_hook(pre_hook)

        def hook(_mod, _args, output):
            features[path] = _first_tensor(output)
        return module.register_forward_hook(hook)

    def __getitem__(self, path: str):
        try:
            return self.features[path]
        except KeyError:
            raise BadInputError(
                f"no feature captured at '{path}'",
                hint="run the model forward once after creating the taps") from None

    def clear(self) -> None:
        self.features.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.features.clear()

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def strip_hooks(model, hook_ids: set[int]) -> None:
    """Remove the forward (pre-)hooks whose ids are ``hook_ids`` from every module of ``model``
    (e.g. from a deep copy of a tapped model, whose hooks keep their ids)."""
    for m in model.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks):
            for hid in list(hooks):
                if hid in hook_ids:
                    del hooks[hid]


def last_linear(model, num_classes: int | None = None):
    """(path, module) of the last ``nn.Linear`` in registration order (the last one with
    ``out_features == num_classes`` when given and present), or raise BadInputError."""
    import torch.nn as nn

    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]
    if num_classes is not None:
        linears = [lm for lm in linears if lm[1].out_features == num_classes] or linears
    found = linears[-1] if linears else None
    if found is None:
        raise BadInputError(f"{type(model).__name__} has no nn.Linear classifier",
                            hint="this loss reads the classifier's input; use a logit loss "
                                 "(kd, dkd, ...) for this model")
    return found


def penultimate_path(model, num_classes: int | None = None) -> str:
    """Guess the penultimate features: the input of the last ``nn.Linear`` (the classifier),
    returned as ``"<path>:input"`` for :class:`FeatureTaps`."""
    name, _ = last_linear(model, num_classes)
    return name + INPUT_SUFFIX
