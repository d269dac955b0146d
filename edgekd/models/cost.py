"""A model's cost as plain data: ``{"macs": ..., "params": ...}`` for one input (see count.py)."""
from __future__ import annotations

from typing import Optional, Sequence

from .count import count_macs_params


def cost(model, input_shape: Sequence[int]) -> dict:
    """``{"macs", "params"}`` of ``model`` for one input of ``input_shape`` (no batch)."""
    macs, params = count_macs_params(model, tuple(input_shape))
    return {"macs": int(macs), "params": int(params)}


def cost_or_none(model, input_shape: Sequence[int]) -> Optional[dict]:
    """:func:`cost`, or None when the model cannot be counted (an EdgeKDError says why)."""
    from ..errors import EdgeKDError

    try:
        return cost(model, input_shape)
    except EdgeKDError:
        return None
