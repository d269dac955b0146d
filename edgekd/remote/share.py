"""One ssh connection per device for all of a process's sessions (OpenSSH connection sharing).

A remote command opens several ssh sessions (probe, copies, the run); each new connection pays
the handshake. The first session to a device therefore starts a master connection in the
background (``ControlMaster=yes``, ``ControlPersist``, ``-f -N``) on a socket in a private temp
folder (mode 0700), and every session, this one included, goes through it with
``ControlMaster=no``: should the socket be gone or dead, ssh connects directly, as without
sharing. The master gets its own stdin/stdout (/dev/null) and a temp file for stderr, so it never
holds a caller's pipes open; it ends with ``ssh -O exit`` when this process exits (or after
idling ``ControlPersist`` seconds, then the next session starts a new one).

Left alone: a user's own sharing (a ControlMaster/ControlPath/ControlPersist in ssh_options, or a
ControlPath that ~/.ssh/config gives this host, as ``ssh -G`` reports it), Windows (whose
OpenSSH has no connection sharing), and EDGEKD_SSH_SHARE=0, which turns it off.
"""
from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from typing import Callable, Collection

log = logging.getLogger(__name__)

SHARE_ENV = "EDGEKD_SSH_SHARE"
_USERS_OWN = frozenset({"controlmaster", "controlpath", "controlpersist"})
_LOCK = threading.Lock()
_KEY_LOCKS: dict[tuple, threading.Lock] = {}
_MASTERS: dict[tuple, str] = {}  # ssh argv -> the socket of this process's master for it ("" none)
_FOLDER: list[str] = []  # the private temp folder, once made


def sharing_on() -> bool:
    return os.name != "nt" and os.environ.get(SHARE_ENV, "1").strip().lower() not in ("0", "no", "false", "off")


def shared_argv(argv: list[str], label: str, connect_timeout_s: float, options: Collection[str],
                ssh_error: Callable[[str, float], Exception]) -> list[str]:
    """ARGV (``ssh ... -- HOST``) through this process's master connection for it, started on
    first use; ARGV itself where sharing does not apply. OPTIONS: the lower-case names of the
    target's ssh_options. ``ssh_error(stderr, seconds)`` is raised when ssh cannot get in."""
    if not sharing_on() or _USERS_OWN & set(options):
        return argv
    key = tuple(argv)
    with _LOCK:
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:  # one master per device, also with a thread per target
        path = _MASTERS.get(key)
        if path is None or (path and not os.path.exists(path)):  # none yet, or it ended after idling
            path = _MASTERS[key] = _start_master(argv, label, connect_timeout_s, ssh_error)
        if not path:  # not shared, as decided once for this process
            return argv
    return argv[:-2] + ["-o", "ControlMaster=no", "-o", f"ControlPath={path}"] + argv[-2:]


def _users_own_path(argv: list[str]) -> bool | None:
    """Whether ~/.ssh/config gives this host a ControlPath (``ssh -G``); None if ssh cannot say."""
    try:
        cfg = subprocess.run(argv[:-2] + ["-G"] + argv[-2:], stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if cfg.returncode != 0:
        return None
    return any(ln.split()[:1] == ["controlpath"] for ln in cfg.stdout.splitlines())


def _start_master(argv: list[str], label: str, connect_timeout_s: float,
                  ssh_error: Callable[[str, float], Exception]) -> str:
    """Start a master for ARGV; its socket path, or "" where sharing does not apply."""
    import atexit
    import tempfile

    if _users_own_path(argv) is not False:
        return ""
    with _LOCK:
        if not _FOLDER:
            _FOLDER.append(tempfile.mkdtemp(prefix="edgekd-ssh-"))
            atexit.register(close_shared, os.getpid())
        path = os.path.join(_FOLDER[0], f"c{len(_KEY_LOCKS)}-{os.urandom(3).hex()}")
    if len(path) > 100:  # a unix socket's path must be short
        return ""
    persist = max(60, int(connect_timeout_s) * 3)
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: nothing waits on the master's end
        try:
            res = subprocess.run(argv[:-2] + ["-o", "ControlMaster=yes", "-o", f"ControlPath={path}",
                                              "-o", f"ControlPersist={persist}", "-f", "-N"] + argv[-2:],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                 start_new_session=True, timeout=connect_timeout_s + 60)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        err.seek(0)
        text = err.read().decode("utf-8", errors="replace")
    if res.returncode == 255 and "option" not in text.lower():  # (an ssh without these options: unshared)
        raise ssh_error(text, time.monotonic() - t0)  # ssh's own failure, as a session reports it, once
    if res.returncode != 0 or not os.path.exists(path):
        log.debug("ssh %s: no shared connection (exit %s): %s", label, res.returncode, text.strip())
        return ""
    log.debug("ssh %s: one shared connection (%s)", label, path)
    return path


def masters() -> dict[tuple, str]:
    """This process's master connections: {ssh argv: socket path}."""
    with _LOCK:
        return {k: v for k, v in _MASTERS.items() if v}


def close_shared(pid: int | None = None) -> None:
    """End this process's master connections (``ssh -O exit``); at exit, also their folder."""
    import shutil

    if pid is not None and pid != os.getpid():
        return  # a forked child leaves its parent's connections alone
    with _LOCK:
        items = list(_MASTERS.items())
        _MASTERS.clear()
    for argv, path in items:
        if path and os.path.exists(path):
            try:
                subprocess.run(list(argv[:-2]) + ["-o", f"ControlPath={path}", "-O", "exit"] + list(argv[-2:]),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                log.debug("ssh -O exit failed for %s", path, exc_info=True)
    if pid is not None:
        with _LOCK:
            for d in _FOLDER:
                shutil.rmtree(d, ignore_errors=True)
            _FOLDER.clear()
