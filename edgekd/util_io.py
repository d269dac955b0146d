"""Atomic file writes: write to a temporary name in the same directory, then rename."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


_PROC_STATUS = "/proc/self/status"


def _proc_umask() -> "int | None":
    """The process umask as the kernel reports it (Linux 4.7+), read without changing it."""
    try:
        with open(_PROC_STATUS, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_at_import() -> int:
    """Where /proc does not say: the umask read once, here at import. os.umask can only read
    it by setting it, so this is the one place it is set (and put back at once)."""
    mask = _proc_umask()
    if mask is None:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_IMPORT_UMASK = _umask_at_import()


def _umask() -> int:
    """The process umask, read without changing it: setting it to 0 even for an instant would
    let a file another thread creates meanwhile come out world-writable."""
    mask = _proc_umask()
    return _IMPORT_UMASK if mask is None else mask


@contextlib.contextmanager
def atomic_path(path: "str | os.PathLike", suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` when the block succeeds."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a finished file gets the usual mode
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: "str | os.PathLike", data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: "str | os.PathLike", text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: "str | os.PathLike", obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def _read_text(p: Path, message: str, hint: str) -> str:
    """The file's text; BadInputError ``message (reason)`` when it cannot be read as UTF-8."""
    from .errors import BadInputError

    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BadInputError(f"{message} ({reason})", hint=hint) from None


def read_versioned_json(path: "str | os.PathLike", schema: "str | tuple[str, ...]", *, what: str,
                        hint: str) -> dict:
    """Read a JSON object whose ``"schema"`` is ``schema`` (or one of them).

    Every failure is one BadInputError naming the file and what it should be (``what``, e.g.
    "manifest"), with ``hint`` as the fix: a missing file, an unreadable one, bad JSON (with
    line and column), a top level that is not an object, or another schema (found and expected).
    """
    from .errors import BadInputError

    p = Path(path)
    expected = (schema,) if isinstance(schema, str) else tuple(schema)
    want = " or ".join(repr(s) for s in expected)
    if not p.exists():
        raise BadInputError(f"{what} {p} does not exist", hint=hint)
    text = _read_text(p, f"{what} {p} is unreadable", hint)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{what} {p} is truncated or not valid JSON: {exc.msg} at line {exc.lineno} "
                            f"column {exc.colno}", hint=hint) from None
    if not isinstance(doc, dict):
        raise BadInputError(f"{p} is not an edgekd {what}: its top level is a JSON "
                            f"{type(doc).__name__}, expected an object with schema {want}",
                            hint=hint)
    got = doc.get("schema")
    if got not in expected:
        found = "no schema" if got is None else f"schema {got!r}"
        raise BadInputError(f"{p} is not an edgekd {what}: {found}, expected {want}", hint=hint)
    return doc


def read_yaml_mapping(path: "str | os.PathLike", *, what: str, read_hint: str,
                      shape: str = "a mapping of fields", shape_hint: str = "") -> "tuple[dict, str]":
    """(data, text) of a YAML file whose top level must be a mapping (``yaml.safe_load``).

    One BadInputError naming the file for each failure: unreadable, bad YAML (with the line),
    or a top level that is not a mapping (``shape`` says what it should hold)."""
    import yaml

    from .errors import BadInputError

    p = Path(path)
    text = _read_text(p, f"cannot read {what} {p}", read_hint)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise BadInputError(f"{p}{where}: {what} is not valid YAML "
                            f"({getattr(exc, 'problem', None) or 'syntax error'})",
                            hint="fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{p}: {what} must be {shape}", hint=shape_hint or None)
    return data, text


def sha256_file(path: "str | os.PathLike", chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


CACHE_ENV = "EDGEKD_CACHE_DIR"


def cache_root() -> Path:
    """The edgekd cache directory: $EDGEKD_CACHE_DIR, else ~/.cache/edgekd."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgekd"


def check_file(path: "str | Path", what: str, suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` as a Path when it is a non-empty file with one of ``suffixes``; else BadInputError."""
    from .errors import BadInputError

    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{what} {p} does not exist", hint="check the path")
    if not p.is_file():
        raise BadInputError(f"{what} {p} is not a file", hint="pass the model file itself")
    if p.stat().st_size == 0:
        raise BadInputError(f"{what} {p} is empty", hint="re-export the model")
    if suffixes and p.suffix.lower() not in suffixes:
        raise BadInputError(f"{what} {p} has suffix '{p.suffix}', expected one of {', '.join(suffixes)}")
    return p


def check_output_location(path: "str | os.PathLike", option: str, *, kind: str = "file") -> Path:
    """Refuse, before any work, an output location that cannot be written: a file (or a
    directory) in the way, a file standing where a parent folder must be, or a folder this
    process may not create files in (a read-only mount, /proc). ``kind`` is "file" or "dir";
    ``option`` names the setting (e.g. "--out") in the one-line BadInputError. Nothing is left
    behind: the probe file is removed at once. Returns the path as given, as a Path."""
    from .errors import BadInputError

    p = Path(path).expanduser()
    if str(path).strip() == "":
        raise BadInputError(f"{option} is empty", hint=f"give {option} a path")
    if p.exists():
        if kind == "dir" and not p.is_dir():
            raise BadInputError(f"{option} {p} is a file, not a directory", hint=f"choose another {option}")
        if kind == "file" and p.is_dir():
            raise BadInputError(f"{option} {p} is a directory, not a file", hint=f"give {option} a file name")
    probe_dir = p if kind == "dir" and p.is_dir() else None
    if probe_dir is None:
        anc = p.absolute().parent
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            raise BadInputError(f"{option} {p} cannot be written: {anc} is a file, not a directory",
                                hint=f"choose another {option}")
        probe_dir = anc
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgekd-probe-", dir=probe_dir)
    except OSError as exc:
        raise BadInputError(f"{option} {p} cannot be written: no file can be created in {probe_dir} "
                           f"({exc.strerror or exc})",
                            hint=f"choose a writable {option}") from None
    os.close(fd)
    os.unlink(probe)
    if kind == "file" and p.is_file() and not os.access(p, os.W_OK):
        raise BadInputError(f"{option} {p} is read-only", hint=f"choose a writable {option}")
    return p
