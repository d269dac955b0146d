"""manifest.json of a compress output directory: what was made, from what, with which tools.

It lists every artifact (path relative to the directory, sha256, size), the run's config, the
target, the versions of edgekd, torch and the runtimes, the data fingerprint and timestamps.
Whatever uses a file from a compress output (bench, gate, export, verify and its --reference,
through ``deploy.check_ref_manifest``) refuses one whose bytes no longer match the manifest
above it, and says so on stderr when the file sits in a compress output (a state.json of
edgekd's beside or above it) that has no manifest.json, or that its manifest does not list.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import BadInputError
from .util_io import atomic_write_json, read_versioned_json

SCHEMA = "edgekd.manifest/v1"
NAME = "manifest.json"
# OUT/state.json of a compress run (pipeline.state.STATE_SCHEMA is "edgekd.compress-state/v1").
STATE_NAME = "state.json"
STATE_SCHEMA_PREFIX = "edgekd.compress-state/"
log = logging.getLogger(__name__)
_said: set[str] = set()
# Packages whose versions are recorded (those installed).
VERSIONED = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt", "numpy")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def tool_versions() -> dict[str, str]:
    from importlib import metadata

    from ._version import __version__

    out = {"edgekd": __version__}
    for pkg in VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def file_entry(root: Path, path: Path, role: str) -> dict:
    from .util_io import sha256_file

    p = Path(path)
    return {"path": p.resolve().relative_to(root.resolve()).as_posix(), "role": role,
            "sha256": sha256_file(p), "bytes": p.stat().st_size}


def write_manifest(root: "str | Path", files: Iterable[tuple[Path, str]], *, config: Mapping,
                   target: Mapping, data_fingerprint: str | None, created: str,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Hash ``files`` ((path, role) pairs under ``root``) and write root/manifest.json."""
    root = Path(root)
    entries = [file_entry(root, Path(p), role) for p, role in files if Path(p).is_file()]
    doc = {"schema": SCHEMA, "created": created, "finished": now(), "config": dict(config),
           "target": dict(target), "versions": tool_versions(), "data_fingerprint": data_fingerprint,
           "artifacts": entries, **dict(extra or {})}
    return atomic_write_json(root / NAME, doc)


def _above(artifact: "str | Path", levels: int, name: str) -> Path | None:
    d = Path(artifact).resolve().parent
    for _ in range(levels + 1):
        cand = d / name
        if cand.is_file():
            return cand
        if d.parent == d:
            break
        d = d.parent
    return None


def find_manifest(artifact: "str | Path", levels: int = 2) -> Path | None:
    """The manifest.json in the artifact's directory or up to ``levels`` parents above it."""
    return _above(artifact, levels, NAME)


def find_compress_state(artifact: "str | Path", levels: int = 2) -> Path | None:
    """The state.json of a compress run in the artifact's directory or up to ``levels`` above it
    (one whose schema is edgekd's compress state; any other state.json is someone else's)."""
    p = _above(artifact, levels, STATE_NAME)
    if p is None:
        return None
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    schema = doc.get("schema") if isinstance(doc, dict) else None
    return p if isinstance(schema, str) and schema.startswith(STATE_SCHEMA_PREFIX) else None


def _say_once(key: str, message: str) -> None:
    if key not in _said:
        _said.add(key)
        log.warning("%s", message)


def read_manifest(path: "str | Path") -> dict:
    return read_versioned_json(path, SCHEMA, what="manifest",
                               hint="restore it, or re-run `edgekd compress --force`")


def check_against_manifest(artifact: "str | Path", extra_paths: Iterable[Path] = ()) -> Path | None:
    """BadInputError (exit 2) naming the file when the artifact, or a side file it loads (e.g.
    OpenVINO's .bin), no longer matches the manifest beside it. Returns the manifest used, or
    None when there is none (or it does not list the artifact)."""
    from .util_io import sha256_file

    art = Path(artifact).resolve()
    mpath = find_manifest(art)
    if mpath is None:
        state = find_compress_state(art)
        if state is not None:
            _say_once(str(art), f"{art} sits in a compress output ({state}) that has no {NAME}: "
                                f"its bytes cannot be checked (re-run `edgekd compress` to make one)")
        return None
    root = mpath.parent.resolve()
    doc = read_manifest(mpath)
    listed = {e["path"]: e for e in doc.get("artifacts", []) if isinstance(e, dict) and "path" in e}
    rel = art.relative_to(root).as_posix()
    if rel not in listed:
        _say_once(str(art), f"{art} is not listed in {mpath}: that compress run did not make it, "
                            f"and its bytes cannot be checked")
        return None
    for p in [art, *[Path(x).resolve() for x in extra_paths]]:
        r = p.relative_to(root).as_posix() if p.is_relative_to(root) else None
        entry = listed.get(r) if r else None
        if entry is None:
            continue
        if not p.is_file():
            raise BadInputError(f"{p} is listed in {mpath} but is missing",
                                hint="restore it, or re-run `edgekd compress`")
        got = sha256_file(p)
        if got != entry.get("sha256"):
            raise BadInputError(f"{p} does not match {mpath}: sha256 {got[:16]}... but the manifest "
                                f"says {str(entry.get('sha256'))[:16]}...; the file was modified",
                                hint="restore the original file, or re-run `edgekd compress`")
    return mpath


def verify_directory(root: "str | Path") -> list[str]:
    """Problems with a whole output directory (missing or changed artifacts); empty = consistent."""
    from .util_io import sha256_file

    root = Path(root)
    doc = read_manifest(root / NAME)
    problems = []
    for e in doc.get("artifacts", []):
        p = root / e["path"]
        if not p.is_file():
            problems.append(f"{e['path']}: missing")
        elif sha256_file(p) != e["sha256"]:
            problems.append(f"{e['path']}: sha256 differs")
    return problems
