"""How to train: TrainConfig (validated once, frozen), its closed sets, and the one place the
training defaults live; plus the rule for which settings may change on --resume."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import BadInputError


class Optimizer(str, Enum):
    sgd = "sgd"
    adamw = "adamw"


class Schedule(str, Enum):
    cosine = "cosine"
    step = "step"


class Augment(str, Enum):
    none = "none"
    padcrop = "padcrop"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


# The one place training defaults live.
DEFAULT_LR = {Optimizer.sgd: 0.05, Optimizer.adamw: 2e-3}


class TrainConfig(BaseModel):
    """How to train. Validated once; ``lr=None`` means the optimizer's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimizer: Optimizer = Optimizer.sgd
    lr: Optional[float] = Field(None, gt=0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Schedule = Schedule.cosine
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up epochs")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=2)
    seed: int = Field(0, ge=0)
    augment: Augment = Augment.none
    eval_every: int = Field(1, ge=1, description="validate every N epochs (and at the last)")
    device: Device = Device.cpu
    use_cache: bool = Field(True, description="cache teacher logits when the view is fixed")
    grad_clip: Optional[float] = Field(None, gt=0, description="clip the global gradient norm "
                                       "to this value after backward (None = no clipping)")

    @model_validator(mode="before")
    @classmethod
    def _fill_lr(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("lr") is None:
            opt = Optimizer(data.get("optimizer", Optimizer.sgd))
            data = {**data, "lr": DEFAULT_LR[opt]}
        return data

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be below "
                             f"epochs={self.epochs}")
        return self

    @classmethod
    def make(cls, **kwargs: Any) -> "TrainConfig":
        """Build from keyword arguments (None = default); a bad value is a BadInputError."""
        try:
            return cls(**{k: v for k, v in kwargs.items() if v is not None or k == "lr"})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "config"
            raise BadInputError(f"bad training setting {where}={err.get('input')!r}: "
                                f"{err.get('msg')}", hint="see `edgekd distill --help`") from None



# Settings that may differ on --resume (they do not change what is computed).
_RESUME_FREE = ("device", "eval_every", "use_cache")


def check_resume_config(saved: dict, now: dict, path: Path) -> None:
    """Refuse to resume with other settings. A setting missing from ``saved`` was added to
    TrainConfig after that run was written; such a run trained with the setting's default."""
    for k, v in now.items():
        if k in _RESUME_FREE:
            continue
        if k not in saved:
            was = TrainConfig.model_fields[k].default
            if v != was:
                raise BadInputError(
                    f"--resume with {k}={v!r}, but the run in {path} predates that setting "
                    f"and trained with {k}={was!r}", hint=f"resume without changing {k}, or "
                    "start again with --force")
        elif saved[k] != v:
            raise BadInputError(f"--resume with {k}={v!r}, but the saved run used "
                                f"{k}={saved[k]!r}", hint="resume with the same settings "
                                "or start again with --force")
