"""Teacher-logit cache for fixed-view training.

When the student sees the same input every epoch (no random augmentation) and the loss needs
only the teacher's logits, the teacher's answer for sample i never changes: compute it once,
in order, over the train set, keep it on disk under ``$EDGEKD_CACHE_DIR/teacher_logits``
(default ``~/.cache/edgekd``) and index it by sample index during training. The key covers the
teacher fingerprint, the data fingerprint and a description of the transform, so a changed
teacher, dataset or resolution is a cache miss, never a stale hit. The entry's .json beside it
records those and the sha256 of the .npy's bytes: an entry whose bytes or record do not match
(changed on disk, cut short, written by someone else) is not used, and is computed again.

With random augmentation, or with feature losses, the cache does not apply: the teacher has to
run live on the student's exact view (the trainer does that).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..util_io import CACHE_ENV, atomic_path, atomic_write_json, cache_root  # noqa: F401 - CACHE_ENV re-exported

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: the .json records the sha256 of the .npy, checked on every load


class IndexedDataset:
    """Wrap a dataset of ``(x, y)`` so that item ``j`` is ``(x, y, i)``, where ``i`` is the
    sample's index in the wrapped dataset; ``indices`` optionally restricts it to a subset."""

    def __init__(self, base: Any, indices: Optional[list[int]] = None):
        self.base = base
        self.indices = list(range(len(base))) if indices is None else [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        x, y = self.base[i][:2]
        return x, y, i

    def batch(self, js: list[int]):
        """Items ``js`` stacked: (x N×C×H×W float32, y int64, base indices int64)."""
        import torch

        idx = torch.as_tensor([self.indices[j] for j in js], dtype=torch.long)
        return (*take(self.base, idx), idx)


def take(dataset: Any, idx):
    """Samples ``idx`` of ``dataset`` stacked as (x float32, y int64). In-memory datasets that
    hold tensors ``x`` and ``y`` are indexed in one go; any other dataset sample by sample."""
    import torch

    try:
        from ..data.base import ArrayDataset
    except ImportError:  # pragma: no cover - the data package is part of edgekd
        ArrayDataset = ()
    if isinstance(dataset, ArrayDataset):
        x = dataset.x.index_select(0, idx)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return x, dataset.y.index_select(0, idx).long()
    items = [dataset[int(i)] for i in idx]
    return (torch.stack([it[0] for it in items]),
            torch.as_tensor([int(it[1]) for it in items], dtype=torch.long))


def cache_key(teacher_fingerprint: str, data_fingerprint: str, transform: str, n: int) -> str:
    """Stable key of one cache entry (hex, 32 characters)."""
    blob = json.dumps({"format": CACHE_FORMAT, "teacher": str(teacher_fingerprint),
                       "data": str(data_fingerprint), "transform": str(transform), "n": int(n)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class LogitCache:
    """Teacher logits for every train sample, row i = sample i (float32, N×C)."""

    logits: Any  # torch.Tensor
    hit: bool
    key: Optional[str]
    path: Optional[Path]

    def lookup(self, index):
        """Rows for a tensor of sample indices."""
        return self.logits.index_select(0, index.long().cpu())


def compute_teacher_logits(teacher: Callable, dataset: Any, *, batch_size: int = 256,
                           device: str = "cpu"):
    """Teacher logits over ``dataset`` in order (no augmentation), as a float32 CPU tensor."""
    import torch

    from ..errors import BadInputError

    rows = []
    n = len(dataset)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            x = take(dataset, torch.arange(start, min(n, start + batch_size)))[0].to(device)
            out = teacher(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            rows.append(torch.as_tensor(out).detach().float().cpu())
    logits = torch.cat(rows) if rows else torch.zeros(0, 0)
    if logits.ndim != 2 or logits.shape[0] != n:
        raise BadInputError(f"the teacher returned logits of shape {tuple(logits.shape)} for {n} "
                            f"samples", hint="a teacher must map N×C×H×W to N×classes")
    if not torch.isfinite(logits).all():
        raise BadInputError("the teacher produced non-finite logits on the train set",
                            hint="check the teacher weights and the input normalisation")
    return logits.contiguous()


def _record_matches(path: Path, meta: dict) -> bool:
    """Whether the .json beside ``path`` records ``meta`` and the sha256 of ``path``'s bytes."""
    from ..util_io import sha256_file

    try:
        rec = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        digest = sha256_file(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("teacher-logit cache %s has no readable record beside it (%s); recomputing", path, exc)
        return False
    if not isinstance(rec, dict) or any(rec.get(k) != v for k, v in meta.items()):
        log.warning("teacher-logit cache %s was recorded for another teacher, data or format; "
                    "recomputing", path)
        return False
    if rec.get("sha256") != digest:
        log.warning("teacher-logit cache %s does not match the sha256 recorded beside it (changed "
                    "on disk); recomputing", path)
        return False
    return True


def _load(path: Path, n: int, num_classes: Optional[int], meta: Optional[dict] = None):
    import numpy as np
    import torch

    if meta is not None and not _record_matches(path, meta):
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.warning("teacher-logit cache %s is unreadable (%s); recomputing", path, exc)
        return None
    if arr.ndim != 2 or arr.shape[0] != n or (num_classes and arr.shape[1] != num_classes) \
            or arr.dtype != np.float32:
        log.warning("teacher-logit cache %s has shape %s, expected (%d, C); recomputing",
                    path, arr.shape, n)
        return None
    return torch.from_numpy(np.ascontiguousarray(arr))


def teacher_logit_cache(teacher: Callable, dataset: Any, *, teacher_fingerprint: Optional[str],
                        data_fingerprint: Optional[str], transform: str = "none",
                        num_classes: Optional[int] = None, batch_size: int = 256,
                        device: str = "cpu", root: Optional[Path] = None,
                        compute: bool = True) -> Optional[LogitCache]:
    """Load the teacher's logits for ``dataset`` from the cache, or compute and store them.

    Without both fingerprints nothing is stored (the logits are computed in memory for this
    run only). ``compute=False`` only loads and returns None on a miss (DDP ranks other than
    0 wait for rank 0 to write the entry, then load it).
    """
    import numpy as np

    n = len(dataset)
    if not teacher_fingerprint or not data_fingerprint:
        if not compute:
            return None
        logits = compute_teacher_logits(teacher, dataset, batch_size=batch_size, device=device)
        return LogitCache(logits, hit=False, key=None, path=None)
    from ..util_io import sha256_file

    key = cache_key(teacher_fingerprint, data_fingerprint, transform, n)
    path = (Path(root) if root else cache_root()) / "teacher_logits" / f"{key}.npy"
    meta = {"format": CACHE_FORMAT, "teacher": teacher_fingerprint, "data": data_fingerprint,
            "transform": transform}
    if path.exists():
        logits = _load(path, n, num_classes, meta)
        if logits is not None:
            log.info("teacher-logit cache hit: %s", path)
            return LogitCache(logits, hit=True, key=key, path=path)
    if not compute:
        return None
    logits = compute_teacher_logits(teacher, dataset, batch_size=batch_size, device=device)
    meta["shape"] = list(logits.shape)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, logits.numpy(), allow_pickle=False)
            meta["sha256"] = sha256_file(tmp)
        atomic_write_json(path.with_suffix(".json"), meta)
    except OSError as exc:  # a read-only cache dir must not stop training
        log.warning("cannot write the teacher-logit cache %s (%s); continuing without it",
                    path, exc)
        return LogitCache(logits, hit=False, key=key, path=None)
    log.info("teacher-logit cache written: %s", path)
    return LogitCache(logits, hit=False, key=key, path=path)
