"""The `edgekd` command: a click group whose subcommands live one per module and load lazily.

Only this layer turns EdgeKDError into exit codes; no traceback unless EDGEKD_DEBUG=1.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from .._version import __version__
from ..errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EdgeKDError

# command name -> "module:function" (module under edgekd.cli). Add a command = add a line.
COMMANDS: dict[str, str] = {
    "targets": "targets:targets_cmd",
    "export": "export:export_cmd",
    "bench": "bench:bench_cmd",
    "calibrate": "calibrate:calibrate_cmd",
    "profile": "profile:profile_cmd",
    "select": "select:select_cmd",
    "distill": "distill:distill_cmd",
    "train": "distill:train_cmd",
    "quantize": "quantize:quantize_cmd",
    "compress": "compress:compress_cmd",
    "verify": "verify:verify_cmd",
    "doctor": "doctor:doctor_cmd",
    "gate": "gate:gate_cmd",
    "prune": "prune:prune_cmd",
}


def debug_enabled() -> bool:
    return os.environ.get("EDGEKD_DEBUG", "") not in ("", "0", "false", "no")


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        ref = COMMANDS.get(name)
        if ref is None:
            return None
        mod, _, attr = ref.partition(":")
        from .common import with_output_checks
        from .complete import with_completion

        return with_completion(with_output_checks(getattr(importlib.import_module(f"edgekd.cli.{mod}"), attr)))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="edgekd")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """edgekd: put a neural network on an edge device within a measured latency budget.

    Distill a student from a teacher, prune and quantize it, export it to the target's
    runtime (ONNX Runtime, OpenVINO, TensorRT) and verify accuracy and latency there.

    Exit codes: 0 ok, 1 requirement not met, 2 bad input, 3 inconclusive measurement,
    4 runtime missing, 130 interrupted. Set EDGEKD_DEBUG=1 to see tracebacks.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _quiet_third_party() -> None:
    import warnings

    if not debug_enabled():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so it takes Ctrl-C's path: whatever saves its work
    on KeyboardInterrupt does, and the command exits 130 with a message (not 143)."""


_TERM_PID: list[int] = []  # the process that installed the handler


def _raise_terminated(signum, frame):
    import os
    import signal

    if _TERM_PID and os.getpid() != _TERM_PID[0]:
        # a fork of this process (a library's helper, e.g. OpenVINO's and NNCF's telemetry
        # sender, which is terminated when its request times out): end as the signal would end
        # it, not with this command's KeyboardInterrupt path and a traceback on the user's stderr
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def _sigterm_as_interrupt():
    """Install the SIGTERM handler (main thread only); returns the previous handler, or None."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        old = signal.signal(signal.SIGTERM, _raise_terminated)
    except (ValueError, OSError):
        return None
    _TERM_PID[:] = [os.getpid()]
    return old


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    import signal

    _quiet_third_party()
    old_term = _sigterm_as_interrupt()
    try:
        rv = cli.main(args=argv, prog_name="edgekd", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else 0
    except EdgeKDError as exc:
        if debug_enabled():
            raise
        click.echo(f"edgekd: error: {exc.one_line()}", err=True)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:  # click turns Ctrl-C into Abort
        cause = exc if isinstance(exc, KeyboardInterrupt) else (exc.__cause__ or exc.__context__)
        how = " by SIGTERM" if isinstance(cause, Terminated) else ""
        click.echo(f"edgekd: interrupted{how}", err=True)
        return EXIT_INTERRUPTED
    except click.UsageError as exc:  # one line, like every other error, with where to look
        where = exc.ctx.command_path if exc.ctx is not None else "edgekd"
        click.echo(f"edgekd: error: {_one_line(exc.format_message()).rstrip('.')}; see '{where} --help'", err=True)
        return EXIT_BAD_INPUT
    except click.ClickException as exc:
        click.echo(f"edgekd: error: {_one_line(exc.format_message())}", err=True)
        return EXIT_BAD_INPUT if exc.exit_code == 2 else exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # an unexpected failure: one line, not a traceback
        if debug_enabled():
            raise
        click.echo(f"edgekd: internal error: {type(exc).__name__}: {exc} "
                   f"(rerun with EDGEKD_DEBUG=1 for the traceback)", err=True)
        return 70
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def run() -> None:
    sys.exit(main())
