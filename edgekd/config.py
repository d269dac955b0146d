"""Pydantic models for user files, validated once at load (docs/ARCHITECTURE.md).

budgets.yaml (the CI gate):

    defaults: {metric: p90, confidence: 0.95, max_regression: 1.05}
    budgets:
      - models: "models/*.onnx"          # glob(s), relative to the budgets file's folder
        targets: [ort-cpu, openvino-cpu]
        budget_ms: 2.5
        metric: p50                        # optional, overrides defaults
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import BadInputError
from .verdict import Metric

# A budget's metric is validated as a verdict.Metric and kept as its plain name ("p90"), so that
# dumps (YAML, JSON) read as the file did.
_BUDGET = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)


class BudgetDefaults(BaseModel):
    model_config = _BUDGET

    metric: Metric = "p90"
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    max_regression: float = Field(1.05, ge=1.0)


class BudgetRule(BaseModel):
    """One entry: model globs x targets -> a budget; unset fields take the file's defaults."""

    model_config = _BUDGET

    models: list[str]
    targets: list[str]
    budget_ms: float = Field(gt=0)
    metric: Optional[Metric] = None
    confidence: Optional[float] = Field(None, gt=0.5, lt=1.0)
    max_regression: Optional[float] = Field(None, ge=1.0)

    @field_validator("models", "targets", mode="before")
    @classmethod
    def _listify(cls, v):
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not items or any(not isinstance(s, str) or not s.strip() for s in items):
            raise ValueError("must be a non-empty string or list of strings")
        return items


class Budget(BaseModel):
    """The budget one model x target is held to."""

    model_config = _BUDGET

    budget_ms: float = Field(gt=0)
    metric: Metric = "p90"
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    max_regression: float = Field(1.05, ge=1.0)


class BudgetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: BudgetDefaults = BudgetDefaults()
    budgets: list[BudgetRule] = Field(min_length=1)
    source: Optional[str] = None

    @property
    def base_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()

    def _resolve(self, rule: BudgetRule) -> Budget:
        d = self.defaults
        return Budget(budget_ms=rule.budget_ms, metric=rule.metric or d.metric,
                      confidence=rule.confidence or d.confidence,
                      max_regression=rule.max_regression or d.max_regression)

    def _matches(self, pattern: str, model: "str | os.PathLike") -> bool:
        p = Path(model)
        names = {p.as_posix(), p.name}
        try:
            names.add(p.resolve().relative_to(self.base_dir.resolve()).as_posix())
        except ValueError:
            pass
        return any(fnmatch.fnmatchcase(n, pattern) for n in names)

    def budget_for(self, model: "str | os.PathLike", target: str) -> Budget | None:
        """The last matching entry wins (put specific entries after general ones)."""
        found = None
        for rule in self.budgets:
            if target in rule.targets and any(self._matches(g, model) for g in rule.models):
                found = self._resolve(rule)
        return found

    def pairs(self, models: "list[str] | None" = None, target: str | None = None) -> list[tuple[str, str, Budget]]:
        """(model, target, budget) for the given models (default: every file the globs match under
        the budgets file's folder), restricted to ``target`` when given."""
        if models is None:
            found: list[str] = []
            for rule in self.budgets:
                for g in rule.models:
                    for m in sorted(self.base_dir.glob(g)):
                        s = str(m) if self.source else m.as_posix()
                        if m.is_file() and s not in found:
                            found.append(s)
            models = found
        targets: list[str] = []
        for rule in self.budgets:
            targets += [t for t in rule.targets if t not in targets]
        out = []
        for m in models:
            for t in targets:
                if target is not None and t != target:
                    continue
                b = self.budget_for(m, t)
                if b is not None:
                    out.append((m, t, b))
        return out


def _line_of(text: str, loc: tuple) -> int | None:
    """Best-effort line of a validation error: the n-th entry under 'budgets' or the key's line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if node is None:
            break
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(part):
                    nxt, line = v, k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
            line = nxt.start_mark.line + 1
        node = nxt
    return line


def load_budgets(path: "str | os.PathLike") -> BudgetsFile:
    """Read and validate budgets.yaml; BadInputError naming file:line and the field on any problem."""
    from .util_io import read_yaml_mapping

    p = Path(path)
    data, text = read_yaml_mapping(p, what="budgets file", read_hint="check the --budgets path",
                                   shape="a mapping with a 'budgets' list",
                                   shape_hint="see the budgets.yaml example in docs/CI.md")
    try:
        return BudgetsFile.model_validate({**data, "source": str(p)})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        line = _line_of(text, loc)
        field = ".".join(str(x) for x in loc) or "(top)"
        where = f"{p}:{line}" if line else str(p)
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise BadInputError(f"{where}: field '{field}': {err['msg']}{more}",
                            hint="fix that field; budgets need models, targets and budget_ms > 0") from exc
