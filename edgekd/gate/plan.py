"""What one gate run checks: the (model, target, Budget) triples of a budgets.yaml or of one
--budget-ms for every model given, with folders expanded to the model files they hold."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..config import Budget, load_budgets
from ..errors import BadInputError

MODEL_GLOBS = ("*.onnx", "*.xml")
DEFAULT_TARGET = "ort-cpu"


def expand_models(paths: Sequence[str]) -> list[tuple[str, bool]]:
    """(model path, named explicitly?) for each argument; a folder gives its .onnx/.xml files."""
    out: list[tuple[str, bool]] = []
    for a in paths:
        p = Path(a)
        if p.is_dir():
            files = sorted({f for g in MODEL_GLOBS for f in p.rglob(g) if f.is_file()})
            if not files:
                raise BadInputError(f"folder {p} holds no model files (*.onnx, *.xml)", hint="check the path")
            out += [(str(f), False) for f in files]
        elif p.is_file():
            out.append((str(p), True))
        else:
            raise BadInputError(f"model {a} does not exist", hint="give model files or folders holding them")
    return out


def runs_on(model: str, target_name: str) -> bool:
    """Whether a file found in a folder belongs on this target (an OpenVINO .xml only on openvino)."""
    from ..targets import Runtime, load_target

    if Path(model).suffix.lower() != ".xml":
        return True
    return load_target(target_name).runtime == Runtime.openvino


def plan_gate(paths: Sequence[str], *, budgets_path: "str | None" = None, target_name: "str | None" = None,
              budget_ms: "float | None" = None, metric: str = "p90", confidence: float = 0.95,
              max_regression: float = 1.05) -> tuple[list[tuple[str, str, Budget]], list[str]]:
    """([(model, target, Budget)], notes) from budgets.yaml or from --target/--budget-ms; a note
    says which model found in a folder has no budget and is skipped."""
    models = expand_models(paths) if paths else None
    if budgets_path:
        if budget_ms is not None:
            raise BadInputError("give either --budgets or --budget-ms, not both")
        cfg = load_budgets(budgets_path)
        if models is None:
            plan = cfg.pairs(None, target=target_name)
            if not plan:
                raise BadInputError(f"{budgets_path}: no model file matches its globs"
                                    + (f" for target {target_name}" if target_name else ""),
                                    hint="globs are relative to the budgets file's folder")
            return plan, []
        plan, notes = [], []
        for m, explicit in models:
            pairs = [x for x in cfg.pairs([m], target=target_name) if explicit or runs_on(m, x[1])]
            if not pairs:
                if explicit:
                    raise BadInputError(f"no budget for {m} in {budgets_path}",
                                        hint="add an entry whose models glob matches it")
                notes.append(f"no budget for {m} in {budgets_path}: skipped")
            plan += pairs
        return plan, notes
    if budget_ms is None:
        raise BadInputError("no budget given", hint="use --budgets budgets.yaml, or --target T --budget-ms B")
    if models is None:
        raise BadInputError("no models given", hint="name model files or folders, e.g. `edgekd gate models/ --target ort-cpu --budget-ms 2`")
    try:
        budget = Budget(budget_ms=budget_ms, metric=metric, confidence=confidence, max_regression=max_regression)
    except ValueError as exc:
        raise BadInputError(f"bad budget options: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from exc
    target = target_name or DEFAULT_TARGET
    return [(m, target, budget) for m, explicit in models if explicit or runs_on(m, target)], []
