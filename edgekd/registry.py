"""One generic registry: decorator registration, lazy "module:attr" entries and entry points."""
from __future__ import annotations

import difflib
import importlib
import threading
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

from .errors import BadInputError

T = TypeVar("T")


def import_object(ref: str):
    """Import ``"package.module:attr"`` (attr may be dotted)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise BadInputError(f"'{ref}' is not a 'module:attribute' reference",
                            hint="write it as package.module:name")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadInputError(f"cannot import module '{module_name}' ({exc})",
                            hint="check the module path and that it is on PYTHONPATH") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise BadInputError(f"module '{module_name}' has no attribute '{attr}'",
                                hint="check the name after the colon") from exc
    return obj


class Registry(Generic[T]):
    """Named objects of one kind (losses, families, backends).

    Entries are registered with ``@registry.register("name")``, lazily with
    ``registry.register_lazy("name", "module:attr")`` (imported on first use), or by third
    parties through the entry-point group ``entry_point_group``.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._entry_points_loaded = False
        # get() may run in several threads at once (profiling devices in parallel): a lazy
        # entry is imported under the lock and only leaves _lazy once it is in _items.
        self._lock = threading.RLock()

    def register(self, name: str | None = None, *, overwrite: bool = False) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError("a registered object needs a name")
            if not overwrite and (key in self._items or key in self._lazy):
                raise ValueError(f"{self.kind} '{key}' is already registered")
            self._items[key] = obj
            self._lazy.pop(key, None)
            return obj

        return deco

    def register_lazy(self, name: str, ref: str) -> None:
        if name not in self._items:
            self._lazy[name] = ref

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or not self.entry_point_group:
            return
        with self._lock:
            if self._entry_points_loaded:
                return
            for ep in metadata.entry_points(group=self.entry_point_group):
                if ep.name not in self._items:
                    self._lazy.setdefault(ep.name, ep.value)
            self._entry_points_loaded = True

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(set(self._items) | set(self._lazy))

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        self._load_entry_points()
        if name in self._items:
            return self._items[name]
        with self._lock:
            if name in self._items:
                return self._items[name]
            if name in self._lazy:
                obj = import_object(self._lazy[name])
                self._items[name] = obj
                del self._lazy[name]
                return obj
        raise BadInputError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        did = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.kind} '{name}'{did}; known: {', '.join(known)}"
