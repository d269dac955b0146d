"""What the stages of one compress run share: where it writes, its config and plan, how it
reports progress, and the data and teacher, loaded on first use so that a resumed run rebuilds
only what the remaining stages need. Stage results are not here: each stage is handed the typed
results it reads."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from ..errors import BadInputError
from .config import CompressConfig
from .plan import Plan


class Context:
    def __init__(self, out: Path, cfg: CompressConfig, plan: Plan, *, show: bool = True,
                 echo: Callable[[str], None] = print, latency_fn: Optional[Callable] = None):
        self.out, self.cfg, self.plan, self.show, self.echo = out, cfg, plan, show, echo
        self.latency_fn = latency_fn  # module -> stats; replaces the prune stage's measuring (tests)
        self._bundle = self._teacher = self._val = None

    @property
    def bundle(self):
        if self._bundle is None:
            from ..data import load_data

            self._bundle = load_data(self.cfg.data, resolution=self.plan.resolution, seed=self.cfg.seed)
        return self._bundle

    @property
    def teacher(self):
        if self._teacher is None:
            from ..models.teacher import check_teacher_matches, load_teacher

            b = self.bundle
            self._teacher = load_teacher(self.cfg.teacher, weights=self.cfg.teacher_weights,
                                         trust_pickle=self.cfg.trust_pickle, num_classes=b.num_classes,
                                         in_channels=b.in_channels)
            check_teacher_matches(self._teacher, b)
        return self._teacher

    def val_arrays(self):
        """The labelled validation samples as numpy (x, y)."""
        if self._val is None:
            from ..data.arrays import dataset_arrays

            x, y = dataset_arrays(self.bundle.val)
            if len(x) == 0:
                raise BadInputError(f"data '{self.bundle.name}' has no labelled validation samples",
                                    hint="give data with a validation split")
            self._val = (x, y)
        return self._val

    def rel(self, p) -> str:
        """``p`` relative to OUT, as state.json stores paths."""
        return Path(p).resolve().relative_to(self.out.resolve()).as_posix()
