"""Run state for the trainer: torchrun detection and collectives, RNG snapshots, and the
training-state file (written atomically, read with weights_only=True)."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from ..errors import BadInputError, RuntimeMissingError
from ..util_io import atomic_path

STATE_FORMAT = "edgekd-train-state"
STATE_VERSION = 1


# --------------------------------------------------------------------------- distributed

def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment; (0, 1, 0) without it."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise BadInputError("RANK/WORLD_SIZE/LOCAL_RANK must be integers",
                            hint="launch with torchrun") from None


def setup_dist(device: str) -> tuple[int, int, str, bool]:
    import torch
    import torch.distributed as dist

    rank, world, local = dist_info()
    dev = "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeMissingError("device 'cuda' was asked for but no CUDA GPU is visible",
                                      hint="use --device cpu or install a CUDA build of torch")
        dev = f"cuda:{local}" if world > 1 else "cuda"
        if world > 1:
            torch.cuda.set_device(local)
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        created = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return rank, world, dev, created


def allreduce_sum(values: list[float], dev: str) -> list[float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.tolist()


def average_grads(params: list, world: int) -> None:
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    off = 0
    for g in grads:
        g.copy_(flat[off:off + g.numel()].view_as(g))
        off += g.numel()


def broadcast_module(module, dev: str, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and buffers (BatchNorm statistics) to every rank."""
    import torch.distributed as dist

    tensors = list(module.buffers()) + ([] if buffers_only else list(module.parameters()))
    for t in tensors:
        dist.broadcast(t.data, src=0)


# --------------------------------------------------------------------------- RNG and state

def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (call before building the student)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": [py[0], list(py[1]), py[2]]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_state(path: Path) -> dict:
    """A training state written by fit (weights_only loading)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise BadInputError(f"cannot read the training state {path} ({exc})",
                            hint="delete it and start again without --resume") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise BadInputError(f"{path} is not an edgekd training state",
                            hint="point --out at a directory written by edgekd distill/train")
    return state


def restore_weights(path: Path, student, criterion=None) -> dict:
    """Load the student (and criterion extras) saved in a training state; return the state."""
    state = load_state(Path(path))
    student.load_state_dict(state["student"])
    if criterion is not None and state.get("criterion"):
        criterion.load_state_dict(state["criterion"])
    return state
