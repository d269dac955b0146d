"""Errors edgekd raises. Library code raises these; only edgekd.cli turns them into exit codes.

Every error carries a one-line message that names the bad value and, where there is one, the fix.
"""
from __future__ import annotations

# Exit codes (docs/ARCHITECTURE.md): 0 ok, 1 verdict not met, 2 bad input or usage,
# 3 inconclusive measurement, 4 runtime/environment missing, 130 interrupted.
EXIT_OK = 0
EXIT_VERDICT = 1
EXIT_BAD_INPUT = 2
EXIT_INCONCLUSIVE = 3
EXIT_RUNTIME_MISSING = 4
EXIT_INTERRUPTED = 130


class EdgeKDError(Exception):
    """Base class. ``str(err)`` is the one-line message; ``hint`` says how to fix it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str | None = None):
        self.message = message.strip()
        self.hint = hint.strip() if hint else None
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message}; {self.hint}"
        return " ".join(text.split())


class BadInputError(EdgeKDError):
    """A file, option or value the user gave is wrong (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class VerdictError(EdgeKDError):
    """A requirement (budget, accuracy) is not met (exit 1)."""

    exit_code = EXIT_VERDICT


class InconclusiveError(EdgeKDError):
    """A measurement could not decide (exit 3)."""

    exit_code = EXIT_INCONCLUSIVE


class RuntimeMissingError(EdgeKDError):
    """A runtime, package or device needed for a target is not available here (exit 4)."""

    exit_code = EXIT_RUNTIME_MISSING


class InterruptedError_(EdgeKDError):
    """Work was interrupted (SIGINT/SIGTERM) after saving what it could (exit 130)."""

    exit_code = EXIT_INTERRUPTED


# Public alias without the trailing underscore clash with the builtin.
WorkInterrupted = InterruptedError_


def missing_package(package: str, extra: str | None = None, what: str = "") -> RuntimeMissingError:
    """The one error for an uninstalled optional package."""
    how = f"pip install 'edgekd[{extra}]'" if extra else f"pip install {package}"
    lead = f"{what} needs the '{package}' package, which is not installed" if what else (
        f"the '{package}' package is not installed")
    return RuntimeMissingError(lead, hint=f"install it with: {how}")
