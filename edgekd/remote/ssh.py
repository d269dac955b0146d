"""An SSH connection to a target device through the system OpenSSH client.

Every remote command line is built here from pieces, each one `shlex.quote`d (a leading ``~/``
becomes ``"$HOME"/`` so it still expands); nothing the user typed reaches the remote shell
unquoted. ssh always runs with BatchMode=yes (never a password prompt), a ConnectTimeout, the
target's StrictHostKeyChecking (default accept-new, with a known_hosts under the edgekd cache
dir) and a bounded wall-clock limit per command. A target's ``ssh_options`` pass only when they
are connection settings, or when EDGEKD_SSH_ALLOW names them (``targets.checked_ssh_options``).

One command's ssh sessions to a device share one connection (OpenSSH ControlMaster, a
private socket under a temp folder, closed with ``ssh -O exit`` when the process ends): only the
first pays the handshake. A user's own ControlPath (ssh_options, ~/.ssh/config) is left alone,
and EDGEKD_SSH_SHARE=0 turns sharing off.

Files go over with ``ssh HOST 'cat > TMP'``, are sha256-checked on the device, and only then
renamed into place: a path under ``<workdir>/files/<sha256>/`` is therefore complete whenever it
exists, and the next copy of the same content is skipped.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..errors import (BadInputError, EdgeKDError, InconclusiveError, RuntimeMissingError, VerdictError,
                      WorkInterrupted)
from ..targets import RemoteSpec, checked_ssh_options

log = logging.getLogger(__name__)

SSH = "ssh"
# Remote exit codes of edgekd itself -> the same error class here.
_REMOTE_ERRORS: dict[int, type[EdgeKDError]] = {1: VerdictError, 2: BadInputError, 3: InconclusiveError,
                                                4: RuntimeMissingError, 130: WorkInterrupted}
# ssh's own failure (exit 255): stderr text -> the cause in words and how to fix it.
_SSH_CAUSES: tuple[tuple[str, str, str], ...] = (
    ("permission denied", "the key was refused (Permission denied)",
     "check remote.user and remote.identity_file, and that the public key is in the device's "
     "~/.ssh/authorized_keys"),
    ("connection refused", "connection refused", "is sshd running on the device, and is remote.port right?"),
    ("timed out", "no answer (connection timed out)", "is the device on and reachable from here?"),
    ("could not resolve hostname", "the host name does not resolve", "check remote.host"),
    ("no route to host", "no route to host", "check the network between here and the device"),
    ("network is unreachable", "the network is unreachable", "check the network between here and the device"),
    ("host key verification failed", "its host key does not match the known one",
     "if the device was reinstalled, remove its line from the known_hosts file"),
    ("identification has changed", "its host key changed",
     "if the device was reinstalled, remove its line from the known_hosts file"),
    ("no such identity", "the identity file does not exist", "check remote.identity_file"),
)


def _cache_dir() -> Path:
    from ..util_io import cache_root

    return cache_root()


def rquote(path: str) -> str:
    """Quote a remote path for a POSIX shell, keeping a leading ``~`` / ``~/`` expandable."""
    path = str(path)
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"/' + shlex.quote(rest) if rest else '"$HOME"/'
    return shlex.quote(path)


def rjoin(*parts: str) -> str:
    """Join remote path parts with '/', whatever this machine's separator is."""
    out = str(parts[0]).rstrip("/") or "/"
    for p in parts[1:]:
        out = out.rstrip("/") + "/" + str(p).strip("/")
    return out


class Remote(str):
    """A remote path given as a command argument: quoted with `rquote`, not `shlex.quote`."""


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: str
    elapsed_s: float

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")


class SSHTarget:
    """How to run commands on, and copy files to, one device."""

    def __init__(self, spec: RemoteSpec, name: str = "", source: str | None = None):
        self.spec = spec
        self.name = name
        self.source = source  # the target file, named when one of its ssh_options is refused
        self.found: dict[str, str] = {}  # remote path -> the sha256 a check found there ("" none)
        self._digests: dict[tuple, str] = {}

    # ------------------------------------------------------------------ naming and arguments

    @property
    def label(self) -> str:
        s = self.spec
        who = f"{s.user}@{s.host}" if s.user else s.host
        return f"{who}:{s.port}" if s.port != 22 else who

    @property
    def workdir(self) -> str:
        return self.spec.workdir.rstrip("/") or "/"

    def known_hosts(self) -> Path:
        if self.spec.known_hosts_file:
            return Path(self.spec.known_hosts_file).expanduser()
        p = _cache_dir() / "ssh" / "known_hosts"
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def ssh_argv(self) -> list[str]:
        s = self.spec
        opts = {
            "BatchMode": "yes",
            "ConnectTimeout": str(max(1, int(round(s.connect_timeout_s)))),
            "StrictHostKeyChecking": s.strict_host_key_checking,
            "UserKnownHostsFile": str(self.known_hosts()),
            "ServerAliveInterval": "15",
            "ServerAliveCountMax": "4",
            "LogLevel": "ERROR",
            **checked_ssh_options(s, self.name, self.source),  # only connection settings, or opted in
        }
        argv = [SSH, "-T", "-p", str(s.port)]
        if s.user:
            argv += ["-l", s.user]
        if s.identity_file:
            ident = Path(s.identity_file).expanduser()
            if not ident.is_file():
                raise BadInputError(f"remote.identity_file {ident} of target '{self.name}' does not exist",
                                    hint="give the path of the private key that the device accepts")
            argv += ["-i", str(ident), "-o", "IdentitiesOnly=yes"]
        for k, v in opts.items():
            argv += ["-o", f"{k}={v}"]
        return argv + ["--", s.host]

    def shared_argv(self) -> list[str]:
        """`ssh_argv` through this process's one connection to the device (remote.share)."""
        from .share import shared_argv

        argv = self.ssh_argv()
        own = {k.lower() for k in checked_ssh_options(self.spec, self.name, self.source)}
        return shared_argv(argv, self.label, self.spec.connect_timeout_s, own,
                           lambda err, s: self.ssh_error(Completed(255, b"", err, s)))

    def command_words(self) -> list[str]:
        words = shlex.split(self.spec.command)
        if not words:
            raise BadInputError(f"remote.command of target '{self.name}' is empty",
                                hint="set it to the device's edgekd, e.g. 'edgekd' or '/opt/venv/bin/edgekd'")
        return words

    def edgekd_line(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
        """`env K=V ... <remote.command> ARGS`, every piece quoted."""
        env = {**dict(self.spec.env), **dict(env or {})}
        prefix = ["env", *(shlex.quote(f"{k}={v}") for k, v in env.items())] if env else []
        words = [rquote(w) if w.startswith("~") else shlex.quote(w) for w in self.command_words()]
        rest = [rquote(a) if isinstance(a, Remote) else shlex.quote(str(a)) for a in args]
        return " ".join(prefix + words + rest)

    # ------------------------------------------------------------------ running

    def run(self, line: str, *, stdin: "bytes | Path | None" = None, timeout_s: float | None = None,
            what: str = "command", check_ssh: bool = True, stderr_lines=None) -> Completed:
        """Run one shell LINE (already quoted) on the device; RuntimeMissingError if ssh fails.

        ``stderr_lines`` (a callable) receives each stderr line as it arrives.
        """
        limit = (timeout_s if timeout_s is not None else self.spec.command_timeout_s) + self.spec.connect_timeout_s
        argv = self.shared_argv() + [line]
        log.debug("ssh %s: %s", self.label, line)
        t0 = time.monotonic()
        fin = None
        try:
            if isinstance(stdin, Path):
                fin = open(stdin, "rb")
            proc = subprocess.Popen(argv, stdin=fin if fin else (subprocess.PIPE if stdin is not None
                                                                  else subprocess.DEVNULL),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except FileNotFoundError as exc:
            if fin:
                fin.close()
            raise RuntimeMissingError("the OpenSSH client 'ssh' is not installed here",
                                      hint="install it (apt-get install openssh-client)") from exc
        try:
            out, err = _communicate(proc, stdin if isinstance(stdin, bytes) else None, limit, stderr_lines)
        except subprocess.TimeoutExpired as exc:
            _kill(proc)
            raise RuntimeMissingError(f"{what} on {self.label} did not finish within {limit:.0f} s",
                                      hint="raise remote.command_timeout_s or check the device") from exc
        except KeyboardInterrupt:
            _kill(proc)
            raise
        finally:
            if fin:
                fin.close()
        res = Completed(proc.returncode, out, err, time.monotonic() - t0)
        if check_ssh and res.returncode == 255:
            raise self.ssh_error(res)
        return res

    def ssh_error(self, res: Completed) -> RuntimeMissingError:
        low = res.stderr.lower()
        for needle, cause, fix in _SSH_CAUSES:
            if needle in low:
                err = RuntimeMissingError(f"cannot reach device {self.label} over ssh: {cause}"
                                          f" (after {res.elapsed_s:.1f} s)", hint=fix)
                err.ssh_fatal = True
                return err
        last = _last_line(res.stderr) or "ssh exited with 255"
        return RuntimeMissingError(f"cannot reach device {self.label} over ssh: {last} "
                                   f"(after {res.elapsed_s:.1f} s)", hint="run the same ssh by hand to see why")

    def remote_error(self, res: Completed, what: str) -> EdgeKDError:
        """The error for a remote edgekd (or shell) that exited non-zero."""
        if res.returncode == 255:
            return self.ssh_error(res)
        msg = _edgekd_message(res.stderr)
        if res.returncode in (126, 127) and not msg:
            cmd = self.spec.command
            return RuntimeMissingError(f"edgekd is not installed on {self.label}: '{cmd}' "
                                       f"{'was not found' if res.returncode == 127 else 'cannot run'} there",
                                       hint="pip install edgekd on the device, or set remote.command to its path")
        cls = _REMOTE_ERRORS.get(res.returncode, RuntimeMissingError)
        text = msg or _last_line(res.stderr) or f"exit status {res.returncode}"
        return cls(f"{what} on {self.label}: {text}")

    # ------------------------------------------------------------------ files

    def plan(self, local: "str | Path", *, name: str | None = None, key: str | None = None) -> tuple[str, str]:
        """(where `push` puts LOCAL on the device, its sha256)."""
        from ..util_io import sha256_file

        local = Path(local)
        st = local.stat()
        memo = (str(local.resolve()), st.st_size, st.st_mtime_ns)
        digest = self._digests.get(memo) or self._digests.setdefault(memo, sha256_file(local))
        return rjoin(self.workdir, "files", key or digest, safe_name(name or local.name)), digest

    def checks_line(self, planned: Sequence[tuple[str, str]]) -> str:
        """A shell line printing ``edgekd-have I SHA256`` for each (dest, digest) present, for
        `read_checks`: every file a command needs is checked in one round trip."""
        return "; ".join(f"f={rquote(dest)}; if [ -f \"$f\" ]; then echo \"edgekd-have {i} $({_sha_cmd(_F)}"
                         f" | cut -d' ' -f1)\"; fi" for i, (dest, _) in enumerate(planned))

    def read_checks(self, planned: Sequence[tuple[str, str]], text: str) -> None:
        """Note what `checks_line` found in TEXT (``found``), so `push` needs no round trip of its own."""
        got = dict.fromkeys(range(len(planned)), "")
        for ln in text.splitlines():
            parts = ln.split()
            if len(parts) == 3 and parts[0] == "edgekd-have" and parts[1].isdigit() and int(parts[1]) in got:
                got[int(parts[1])] = parts[2]
        for i, (dest, _) in enumerate(planned):
            self.found[dest] = got[i]

    def push(self, local: "str | Path", *, name: str | None = None, key: str | None = None,
             attempts: int | None = None) -> str:
        """Copy LOCAL to ``<workdir>/files/<sha256>/<name>`` unless it is already there; return that path.

        ``key`` overrides the content key (e.g. one key for an .xml and its .bin, so they share a
        directory). The file is written under a temporary name, sha256-checked on the device, and
        only then renamed; a failed or interrupted copy is retried up to ``copy_retries`` times.
        Whether it is there is asked in a round trip of its own unless `read_checks` just said.
        """
        local = Path(local)
        dest, digest = self.plan(local, name=name, key=key)
        if dest not in self.found:
            res = self.run(self.checks_line([(dest, digest)]), timeout_s=60 + local.stat().st_size / 1e6,
                           what="checking a file")
            self.read_checks([(dest, digest)], res.text if res.returncode == 0 else "")
        if self.found.get(dest) == digest:
            log.info("%s already on %s", dest.rsplit("/", 1)[1], self.label)
            return dest
        self.copy_to(local, dest, digest, attempts=attempts)
        self.found[dest] = digest
        return dest

    def copy_to(self, local: Path, dest: str, digest: str, *, attempts: int | None = None) -> None:
        """Copy LOCAL to the remote path DEST atomically (temp name, sha256 check, rename), with retries."""
        attempts = attempts or self.spec.copy_retries
        size = local.stat().st_size
        errors: list[str] = []
        for i in range(attempts):
            try:
                got = self._copy_once(local, dest, digest, size)
            except RuntimeMissingError as exc:
                if getattr(exc, "ssh_fatal", False):
                    raise  # a refused key or a host that does not answer: retrying will not help
                got = exc.one_line()
            if got is None:
                return
            errors.append(got)
            log.warning("copy of %s to %s failed (attempt %d/%d): %s", local.name, self.label, i + 1,
                        attempts, got)
            time.sleep(min(2.0, 0.2 * (i + 1)))
        raise RuntimeMissingError(f"copying {local.name} to {self.label} failed {attempts} times; last: {errors[-1]}",
                                  hint="check the device's free disk space and the connection, then retry")

    def _copy_once(self, local: Path, dest: str, digest: str, size: int) -> str | None:
        """One attempt; None on success, else why it failed (the temp file is removed)."""
        parent, base = dest.rsplit("/", 1)
        tmp = rjoin(parent, f".{base}.{secrets.token_hex(4)}.part")
        line = (f"d={rquote(parent)}; t={rquote(tmp)}; f={rquote(dest)}; "
                f"mkdir -p \"$d\" || exit 3; "
                f"find \"$d\" -maxdepth 1 -name '.*.part' -mmin +120 -exec rm -f {{}} + 2>/dev/null; "
                f"cat > \"$t\" || {{ rm -f \"$t\"; exit 4; }}; "
                f"h=$({_sha_cmd(_T)} | cut -d' ' -f1); "
                f"if [ \"$h\" = {shlex.quote(digest)} ]; then mv -f \"$t\" \"$f\" && echo edgekd-copy-ok; "
                f"else rm -f \"$t\"; echo \"edgekd-copy-bad $h\"; exit 5; fi")
        res = self._send(local, line, timeout_s=120 + size / 2e5)
        if res.returncode == 0 and "edgekd-copy-ok" in res.text:
            return None
        if res.returncode == 5:
            return "the copy arrived with another sha256 (cut short or corrupted)"
        if res.returncode == 3:
            return f"cannot create {parent} on the device: {_last_line(res.stderr)}"
        return _last_line(res.stderr) or f"exit status {res.returncode}"

    def _send(self, local: Path, line: str, timeout_s: float) -> Completed:
        return self.run(line, stdin=local, timeout_s=timeout_s, what=f"copying {local.name}")

    def write_text(self, text: str, name: str) -> str:
        """Put TEXT in a content-addressed file on the device; return its remote path."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="edgekd-remote-") as tmp:
            p = Path(tmp) / safe_name(name)
            p.write_text(text, encoding="utf-8")
            return self.push(p)

    def fetch(self, path: str, *, what: str = "reading a file") -> bytes:
        res = self.run(f"cat {rquote(path)}", what=what, timeout_s=300)
        if res.returncode != 0:
            raise RuntimeMissingError(f"cannot read {path} on {self.label}: {_last_line(res.stderr)}")
        return res.stdout


# ---------------------------------------------------------------------- helpers


_F, _T = '"$f"', '"$t"'


def _sha_cmd(path_expr: str) -> str:
    """A POSIX-shell command printing '<sha256>  ...' for PATH_EXPR (coreutils, BSD or python3)."""
    return (f"{{ sha256sum {path_expr} 2>/dev/null || shasum -a 256 {path_expr} 2>/dev/null || "
            f"python3 -c 'import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],\"rb\").read()).hexdigest())' "
            f"{path_expr}; }}")


def safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", Path(name).name).lstrip(".")
    return name or "file"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _edgekd_message(stderr: str) -> str:
    for ln in reversed(stderr.splitlines()):
        for lead in ("edgekd: error: ", "edgekd: internal error: ", "Error: "):
            if ln.startswith(lead):
                return ln[len(lead):].strip()
    return ""


def _kill(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _communicate(proc: subprocess.Popen, data: bytes | None, limit: float, stderr_lines) -> tuple[bytes, str]:
    """communicate() with a limit; stderr is streamed line by line when asked."""
    if stderr_lines is None:
        out, err = proc.communicate(input=data, timeout=limit)
        return out, err.decode("utf-8", errors="replace")
    import threading

    err_chunks: list[str] = []

    def pump():
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            err_chunks.append(line)
            try:
                stderr_lines(line.rstrip("\n"))
            except Exception:  # noqa: BLE001 - a progress callback must not kill the transfer
                log.debug("stderr callback failed", exc_info=True)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    if data is not None and proc.stdin:
        proc.stdin.write(data)
        proc.stdin.close()
    deadline = time.monotonic() + limit
    out_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    if reader.is_alive():
        raise subprocess.TimeoutExpired(proc.args, limit)
    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    t.join(5)
    return b"".join(out_chunks), "".join(err_chunks)


def quote_all(words: Iterable[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)
