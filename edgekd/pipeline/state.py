"""OUT/state.json: the record of a compress run, written atomically when each stage starts and
finishes, and what ``--resume`` continues from.

Schema edgekd.compress-state/v1::

    {"schema", "config" (CompressConfig, JSON), "config_digest", "created", "updated",
     "resolved" (the config with local paths made absolute: what --resume compares),
     "plan" (Plan.to_dict()), "context" (optional, the caller's),
     "stages": {name: {"status": "running" | "done", "started", "resumed",
                       "finished", "wall_s", "result" (the stage's result, to_dict())}}}
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from ..errors import BadInputError
from ..manifest import now
from ..util_io import atomic_write_json
from .config import CompressConfig
from .results import STAGES, StageResult, result_from_dict
from .validate import resolved_settings

STATE = "state.json"
STATE_SCHEMA = "edgekd.compress-state/v1"

__all__ = ["STATE", "STATE_SCHEMA", "STAGES", "read_state", "prepare_out", "save_state", "finished_results",
           "stage_status", "record_start", "record_done"]


def read_state(out: Path) -> Optional[dict]:
    """OUT/state.json, or None when there is none; BadInputError when it is no compress state."""
    p = Path(out) / STATE
    if not p.is_file():
        return None
    try:
        st = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{p} is unreadable ({exc})", hint="start again with --force") from exc
    if st.get("schema") != STATE_SCHEMA:
        raise BadInputError(f"{p} is not an edgekd compress state", hint="use another --out")
    return st


def prepare_out(out: Path, cfg: CompressConfig, *, resume: bool, force: bool) -> dict:
    """The state to continue from; refuses a directory holding another run (or anything else)."""
    state = read_state(out) if out.exists() else None
    if state is not None:
        diff = _changed_settings(state, cfg)
        # a run that stopped before finishing any stage (refused, killed early) blocks nothing
        nothing_done = not finished_results(state)
        if resume and not (diff and nothing_done):
            if diff:
                raise BadInputError(f"--resume: {out} holds a run with other settings ({', '.join(diff)})",
                                    hint="resume with the same options, or start again with --force")
            _clean_partials(out)
            return state
        if not force and not nothing_done:
            raise BadInputError(f"--out {out} already holds a compress run",
                                hint="pass --resume to continue it or --force to start again")
        shutil.rmtree(out)
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInputError(f"--out {out} is not an empty directory and holds no edgekd compress run",
                            hint="choose a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    config = cfg.model_dump(mode="json")
    return {"schema": STATE_SCHEMA, "config": config, "config_digest": cfg.digest(),
            "resolved": resolved_settings(config), "created": now(), "updated": now(), "stages": {}}


def _changed_settings(state: dict, cfg: CompressConfig) -> list[str]:
    """The settings that differ between the run in ``state`` and ``cfg``, local paths compared
    resolved (./teacher.pt and /abs/teacher.pt are the same file)."""
    if state.get("config_digest") == cfg.digest():
        return []
    old = state.get("resolved") or resolved_settings(state.get("config", {}))
    new = resolved_settings(cfg.model_dump(mode="json"))
    return [k for k, v in new.items() if old.get(k) != v]


def _clean_partials(out: Path) -> None:
    """Remove what a killed run left half-written: atomic writes' temporary files and staging dirs."""
    for p in sorted(out.rglob(".*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_file() and (p.name.endswith(".tmp") or ".tmp." in p.name):
            p.unlink(missing_ok=True)
        elif p.is_dir() and p.name.startswith(".edgekd-quant-"):
            shutil.rmtree(p, ignore_errors=True)


def save_state(out: Path, state: dict) -> None:
    state["updated"] = now()
    atomic_write_json(out / STATE, state)


def stage_status(state: dict, stage: str) -> Optional[str]:
    """"running" / "done" / None (not started)."""
    return (state["stages"].get(stage) or {}).get("status")


def finished_results(state: dict) -> dict[str, StageResult]:
    """The typed results of the stages ``state`` records as done, by stage."""
    return {name: result_from_dict(name, state["stages"][name]["result"])
            for name in STAGES if stage_status(state, name) == "done"}


def record_start(state: dict, stage: str) -> bool:
    """Mark ``stage`` running; True when it was running before (a killed run resumes it)."""
    again = stage_status(state, stage) == "running"
    state["stages"][stage] = {"status": "running", "started": now(), "resumed": again}
    return again


def record_done(state: dict, stage: str, result: StageResult, wall_s: float) -> None:
    state["stages"][stage].update(status="done", finished=now(), wall_s=round(wall_s, 3), result=result.to_dict())
