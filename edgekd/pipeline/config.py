"""CompressConfig: everything that decides what compress() makes, validated at load.

The pipeline's defaults live here and nowhere else: the config's field defaults, the student
family used when no profile applies, and how far under the budget pruning aims.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BadInputError

DEFAULT_FAMILY = "convnet"  # --family auto without a usable profile here
PRUNE_MARGIN = 0.05  # pruning aims this far under the budget: verify wants the p90 interval within it

# The budget's statistic: the two of edgekd.verdict.Metric a compress budget may name. A Literal,
# not the Metric enum: cfg.metric stays a plain str (state.json, the digest and error messages
# are unchanged) and pydantic names exactly these two when another is given.
BudgetMetric = Literal["p50", "p90"]  # edgekd.verdict.PREDICTED_METRICS, spelled out for pydantic


class CompressConfig(BaseModel):
    """Everything that decides what compress() makes. Defaults live here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher: str
    teacher_weights: Optional[str] = None
    trust_pickle: bool = False
    data: str
    resolution: Optional[int] = Field(None, ge=4)
    target: str
    budget_ms: float = Field(gt=0)
    metric: BudgetMetric = "p90"
    student: str = "auto"
    family: str = "auto"
    grid: str = "small"
    loss: str = "kd"
    prune: Literal["auto", "off"] = "auto"
    quantize: Literal["int8", "fp16", "off"] = "off"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: Optional[float] = Field(None, gt=0)
    seed: int = Field(0, ge=0)
    min_accuracy: Optional[float] = Field(None, ge=0, le=1)
    max_drop: Optional[float] = Field(None, ge=0, le=1)
    profile_min_time_s: float = Field(0.3, ge=0, description="timing per candidate when profiling")
    prune_epochs: Optional[int] = Field(None, ge=0, description="KD fine-tuning epochs after pruning "
                                        "(None: max(2, epochs // 2))")

    @property
    def finetune_epochs(self) -> int:
        return self.prune_epochs if self.prune_epochs is not None else max(2, self.epochs // 2)

    @classmethod
    def make(cls, **kw: Any) -> "CompressConfig":
        """The config from keyword settings; None means "the default". Bad values raise
        BadInputError naming the setting."""
        try:
            return cls(**{k: v for k, v in kw.items() if v is not None})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "config"
            raise BadInputError(f"bad compress setting {where}={err.get('input')!r}: {err.get('msg')}",
                                hint="see `edgekd compress --help`") from None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]
