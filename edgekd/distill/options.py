"""Loss options: a loss's defaults overridden by what the user gives (strings parsed to the
default's type), the loss names the criterion can train, and ``--loss-opt KEY=VALUE`` pairs."""
from __future__ import annotations

from typing import Any, Iterable

from ..errors import BadInputError
from . import losses as L

CE_INFO = L.LossInfo("ce", {"w_ce": 1.0}, "logit", True, "plain training (no teacher)")
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def _parse(loss: str, key: str, raw: Any, default: Any) -> Any:
    bad = BadInputError(f"option {key}={raw!r} of loss '{loss}' is not a valid "
                        f"{type(default).__name__}", hint=f"give it like {key}={default!r}")
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise bad
    if isinstance(default, int):
        if isinstance(raw, bool):
            raise bad
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise bad from None
        if value != int(value):
            raise bad
        return int(value)
    if isinstance(default, float):
        if isinstance(raw, bool):
            raise bad
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise bad from None
    return str(raw)


def resolve_options(info: L.LossInfo, options: dict | None, ls: bool = False) -> dict[str, Any]:
    """Defaults of ``info`` overridden by ``options`` (strings parsed to the default's type;
    ``T`` is accepted for the temperature).

    With logit standardization on (``ls=True`` or option ``ls=true``) the temperature defaults to
    2 and, for ``kd``, w_kd=9 and w_ce=0.1 (the CVPR'24 recipe); values the user gives win.
    """
    options = dict(options or {})
    if "T" in options:  # the papers' symbol: T means the loss's temperature (tau for dist)
        key = "temperature" if "temperature" in info.defaults else "tau"
        if key in info.defaults and key not in options:
            options[key] = options.pop("T")
    unknown = sorted(k for k in options if k not in info.defaults)
    if unknown:
        valid = ", ".join(sorted(info.defaults)) or "(none)"
        raise BadInputError(f"unknown option '{unknown[0]}' for loss '{info.name}'",
                            hint=f"valid options: {valid}")
    resolved = {k: _parse(info.name, k, options[k], d) if k in options else d
                for k, d in info.defaults.items()}
    if ls and "ls" not in info.defaults:
        raise BadInputError(f"logit standardization (ls) does not apply to the {info.kind} "
                            f"loss '{info.name}'", hint="use it with a logit loss such as kd or dkd")
    if ls:
        resolved["ls"] = True
    if resolved.get("ls"):
        ls_defaults = {"temperature": 2.0, "tau": 2.0}
        if info.name == "kd":
            ls_defaults.update(w_kd=9.0, w_ce=0.1)
        for k, v in ls_defaults.items():
            if k in resolved and k not in options:
                resolved[k] = v
    return resolved


def valid_names() -> list[str]:
    return ["ce"] + L.LOSSES.names()


def loss_info(name: str) -> L.LossInfo:
    """The LossInfo of ``name`` ("ce" or a registered loss), or BadInputError listing them."""
    if name == "ce":
        return CE_INFO
    if name in L.LOSSES:
        return L.LOSSES.get(name)
    raise BadInputError(L.LOSSES.unknown_message(name).replace("; known:", "; valid: ce,"))


def parse_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """('T=4', 'w_ce=0.1', 'ls=true') -> {'T': 4, 'w_ce': 0.1, 'ls': True}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise BadInputError(f"--loss-opt '{pair}' is not key=value",
                                hint="write it as --loss-opt T=4")
        raw = raw.strip()
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    continue
        out[key.strip()] = value
    return out
