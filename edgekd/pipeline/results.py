"""What each compress stage returns: one frozen dataclass per stage.

Every result writes itself into OUT/state.json with ``to_dict()`` and reads itself back with
``from_dict()``; the two round-trip exactly (``from_dict(r.to_dict()) == r``, and
``from_dict(d).to_dict() == d`` for every state.json this schema (edgekd.compress-state/v1) has
written), so ``--resume`` hands the remaining stages the same typed objects a straight run does.

Fields the pipeline itself reads are typed. Records that belong to another module and that no
stage reads (a Selection's, a parity check's, a quantization comparison's, the prune search's,
the rest of a VerifyReport) are kept as that module's JSON document, so the file keeps the shape
those modules give it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union


def _tuple(v: Any) -> tuple:
    return tuple(v or ())


@dataclass(frozen=True)
class Cost:
    """A model's multiply-accumulates and parameters."""

    macs: int
    params: int

    def to_dict(self) -> dict:
        return {"macs": self.macs, "params": self.params}

    @classmethod
    def from_dict(cls, d: Optional[Mapping]) -> Optional["Cost"]:
        return None if d is None else cls(macs=d["macs"], params=d["params"])


@dataclass(frozen=True)
class SelectResult:
    """The student to distill: given (``source="given"``) or chosen from a latency profile."""

    spec: str
    source: str  # "given" | "profile"
    needs_pruning: Optional[bool]  # None: given, so selection did not judge it
    profile: Optional[str] = None  # the profile chosen from (source "profile")
    selection: Optional[dict] = None  # latency.select.Selection.to_dict()
    note: Optional[str] = None  # why no candidate met the budget (needs_pruning)

    def to_dict(self) -> dict:
        d: dict = {"spec": self.spec, "source": self.source}
        if self.profile is not None:
            d.update(profile=self.profile, selection=self.selection)
        d["needs_pruning"] = self.needs_pruning
        if self.profile is not None:
            d["note"] = self.note
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "SelectResult":
        return cls(spec=d["spec"], source=d["source"], needs_pruning=d.get("needs_pruning"),
                   profile=d.get("profile"), selection=d.get("selection"), note=d.get("note"))


@dataclass(frozen=True)
class DistillResult:
    """The distilled student (OUT/student.pt) and how it and the teacher score."""

    spec: str
    student_accuracy: float
    best_epoch: int
    epochs: int
    teacher_accuracy: float
    teacher_cost: Optional[Cost]  # None when the teacher is no torch module (ONNX, ...)
    student_cost: Cost
    cache: str
    checkpoint: str  # relative to OUT
    log: str  # train.jsonl, relative to OUT
    data: dict = field(default_factory=dict)  # DataBundle.to_dict()

    @property
    def data_fingerprint(self) -> Optional[str]:
        return self.data.get("fingerprint")

    def to_dict(self) -> dict:
        return {"spec": self.spec, "student_accuracy": self.student_accuracy, "best_epoch": self.best_epoch,
                "epochs": self.epochs, "teacher_accuracy": self.teacher_accuracy,
                "teacher_cost": self.teacher_cost.to_dict() if self.teacher_cost else None,
                "student_cost": self.student_cost.to_dict(), "cache": self.cache,
                "checkpoint": self.checkpoint, "log": self.log, "data": self.data}

    @classmethod
    def from_dict(cls, d: Mapping) -> "DistillResult":
        return cls(spec=d["spec"], student_accuracy=d["student_accuracy"], best_epoch=d["best_epoch"],
                   epochs=d["epochs"], teacher_accuracy=d["teacher_accuracy"],
                   teacher_cost=Cost.from_dict(d.get("teacher_cost")),
                   student_cost=Cost.from_dict(d["student_cost"]), cache=d["cache"],
                   checkpoint=d["checkpoint"], log=d["log"], data=dict(d.get("data") or {}))


_PRUNE_KEYS = ("status", "reason", "budget_needs_pruning", "measured_ms", "why", "finetune_epochs", "checkpoint")


@dataclass(frozen=True)
class PruneStageResult:
    """Whether the distilled student was pruned, and why.

    Three shapes: off (status, reason); measured and within the budget (+ budget_needs_pruning
    False, measured_ms); searched (+ budget_needs_pruning True, why, finetune_epochs, checkpoint
    -- None when no ratio was kept -- and the prune module's record of the search in ``search``).
    """

    status: str  # "skipped" | "pruned"
    reason: str
    budget_needs_pruning: Optional[bool] = None
    measured_ms: Optional[float] = None
    why: Optional[str] = None  # set when a search ran
    finetune_epochs: Optional[int] = None
    checkpoint: Optional[str] = None  # pruned.pt, relative to OUT
    search: dict = field(default_factory=dict)  # prune.PruneResult.to_dict(): ratio, before, after, ...

    def to_dict(self) -> dict:
        d = dict(self.search)
        d["status"] = self.status
        for k in ("budget_needs_pruning", "measured_ms", "why", "finetune_epochs"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.why is not None or self.checkpoint is not None:
            d["checkpoint"] = self.checkpoint
        d["reason"] = self.reason
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "PruneStageResult":
        return cls(status=d["status"], reason=d["reason"], budget_needs_pruning=d.get("budget_needs_pruning"),
                   measured_ms=d.get("measured_ms"), why=d.get("why"), finetune_epochs=d.get("finetune_epochs"),
                   checkpoint=d.get("checkpoint"), search={k: v for k, v in d.items() if k not in _PRUNE_KEYS})


@dataclass(frozen=True)
class ExportResult:
    """The ONNX hub file and the target's artifact, parity-checked (paths relative to OUT)."""

    artifact: str
    extra: tuple[str, ...]
    checkpoint: str  # the torch checkpoint exported
    onnx: str
    format: str
    target: str
    sha256: str
    parity: dict  # export.ParityReport.to_dict()

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "extra": list(self.extra), "checkpoint": self.checkpoint,
                "onnx": self.onnx, "format": self.format, "target": self.target, "sha256": self.sha256,
                "parity": self.parity}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ExportResult":
        return cls(artifact=d["artifact"], extra=_tuple(d.get("extra")), checkpoint=d["checkpoint"],
                   onnx=d["onnx"], format=d["format"], target=d["target"], sha256=d["sha256"],
                   parity=d["parity"])


@dataclass(frozen=True)
class QuantizeResult:
    """status "skipped" / "done" (fp16, built at export) with a reason; "kept" with the int8
    artifact; "not kept" with the reason. ``report`` is quantize's comparison (QuantReport.to_dict())."""

    status: str
    reason: Optional[str] = None
    artifact: Optional[str] = None  # relative to OUT (kept)
    target: Optional[str] = None  # the int8 target (kept)
    extra: Optional[tuple[str, ...]] = None  # side files (kept)
    report: Optional[dict] = None

    @property
    def kept(self) -> bool:
        return self.status == "kept"

    def to_dict(self) -> dict:
        d: dict = {"status": self.status}
        if self.reason is not None:
            d["reason"] = self.reason
        for k in ("artifact", "target"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.extra is not None:
            d["extra"] = list(self.extra)
        if self.status in ("kept", "not kept"):
            d["report"] = self.report
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "QuantizeResult":
        return cls(status=d["status"], reason=d.get("reason"), artifact=d.get("artifact"), target=d.get("target"),
                   extra=None if d.get("extra") is None else _tuple(d["extra"]), report=d.get("report"))


_VERIFY_KEYS = ("artifact", "verdict", "accuracy", "metric", "budget_ms", "latency")


@dataclass(frozen=True)
class VerifyStageResult:
    """verify's judgement of the final artifact on its target. ``report`` holds the rest of
    verify.VerifyReport.to_dict(include_samples=True): checks, sha256, parity, samples, ..."""

    artifact: str  # relative to OUT
    verdict: str  # "pass" | "fail" | "inconclusive"
    accuracy: float
    metric: str
    budget_ms: Optional[float]
    latency: dict  # LatencyStats.to_dict()
    report: dict = field(default_factory=dict)

    @property
    def latency_ms(self) -> float:
        return self.latency[self.metric]

    def failures(self) -> list[str]:
        """'name: detail' of every check that did not pass."""
        return [f"{c['name']}: {c['detail']}" for c in self.report.get("checks", []) if c["verdict"] != "pass"]

    def to_dict(self) -> dict:
        d = {"artifact": self.artifact, **self.report}
        d.update(verdict=self.verdict, accuracy=self.accuracy, metric=self.metric, budget_ms=self.budget_ms,
                 latency=self.latency)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "VerifyStageResult":
        return cls(artifact=d["artifact"], verdict=d["verdict"], accuracy=d["accuracy"], metric=d["metric"],
                   budget_ms=d.get("budget_ms"), latency=d["latency"],
                   report={k: v for k, v in d.items() if k not in _VERIFY_KEYS})


@dataclass(frozen=True)
class ReportResult:
    """The reports written: kind (json, md, html) -> path relative to OUT."""

    paths: dict[str, str]

    def to_dict(self) -> dict:
        return {"paths": dict(self.paths)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ReportResult":
        return cls(paths=dict(d["paths"]))


StageResult = Union[SelectResult, DistillResult, PruneStageResult, ExportResult, QuantizeResult,
                    VerifyStageResult, ReportResult]

RESULT_TYPES: dict[str, type] = {"select": SelectResult, "distill": DistillResult, "prune": PruneStageResult,
                                 "export": ExportResult, "quantize": QuantizeResult, "verify": VerifyStageResult,
                                 "report": ReportResult}
STAGES: tuple[str, ...] = tuple(RESULT_TYPES)


def result_from_dict(stage: str, d: Mapping) -> StageResult:
    """The typed result of ``stage`` from its state.json record."""
    return RESULT_TYPES[stage].from_dict(d)
