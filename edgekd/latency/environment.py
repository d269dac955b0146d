"""The environment fingerprint recorded with every measurement (docs/LATENCY.md).

A profile or baseline only applies where the fingerprint matches on MATCH_KEYS.
"""
from __future__ import annotations

import os
import platform
import socket
from functools import lru_cache
from typing import Any, Mapping

from .._version import __version__

# What must be equal for two measurements to be comparable.
MATCH_KEYS = ("cpu", "logical_cores", "threads", "runtime", "runtime_version", "precision", "batch",
              "device")


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def fingerprint(*, runtime: str, runtime_version: str, precision: str, threads: int | None,
                batch: int, input_shape: tuple | list | None, device: str = "cpu",
                target: str | None = None) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "device": device,
        "runtime": runtime,
        "runtime_version": runtime_version,
        "precision": precision,
        "batch": batch,
        "input_shape": list(input_shape) if input_shape is not None else None,
        "target": target,
        "edgekd_version": __version__,
        "host": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def compare(a: Mapping[str, Any], b: Mapping[str, Any], keys=MATCH_KEYS) -> list[str]:
    """The keys on which two fingerprints differ (empty: they match)."""
    return [k for k in keys if a.get(k) != b.get(k)]


def describe_mismatch(a: Mapping[str, Any], b: Mapping[str, Any], keys=MATCH_KEYS) -> str:
    diff = compare(a, b, keys)
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in diff)
