"""Lazily loaded package APIs: a name maps to "module:attr" and is imported on first use, so
importing a package stays cheap (no torch, no runtimes) until a name is used."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_api(package: str, api: dict[str, str], namespace: dict[str, Any],
             extra: tuple[str, ...] = ()) -> tuple[Callable, Callable]:
    """(__getattr__, __dir__) for ``package`` whose public names are ``api``.

    ``api`` maps a public name to "module:attr" with the module relative to ``package``;
    a loaded value is cached in ``namespace`` (the package's globals()); ``extra`` names
    defined eagerly that ``dir()`` should list too.
    """

    def __getattr__(name: str) -> Any:
        ref = api.get(name)
        if ref is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        mod, _, attr = ref.partition(":")
        value = getattr(importlib.import_module(f"{package}.{mod}"), attr)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(api) | set(extra))

    return __getattr__, __dir__
