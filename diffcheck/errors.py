"""Exit codes and the one exception hierarchy; the CLI maps these to exit codes in one place.

A kernel that fails verification is a status in the report, never an exception: exceptions are
for misuse (bad options, bad case files) and for bugs in diffcheck itself.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    #: every selected row passed (or failed only with statuses outside --fail-on)
    OK = 0
    #: at least one row failed verification
    FAILURES = 1
    #: interrupted (Ctrl-C); the report holds every row finished before it
    INTERRUPTED = 2
    #: a bug in diffcheck itself; the report holds every row finished before it
    INTERNAL = 3
    #: bad usage or bad input: unknown name, unreadable or malformed case file, no device
    USAGE = 4
    #: the selection was empty: no (case, implementation, mode) to run
    NO_ROWS = 5


class DiffcheckError(Exception):
    """Misuse or bad input. The message is one line that says what, where and how to fix."""

    exit_code = ExitCode.USAGE


class Interrupted(DiffcheckError):
    """The user stopped the run; what it had found so far is saved, as the message says."""

    exit_code = ExitCode.INTERRUPTED


class UsageError(DiffcheckError):
    """A bad option value; fix the command line as the message says."""


class UnknownNameError(DiffcheckError):
    """An unknown path, implementation or suite; the message lists the known names."""


class CaseFileError(DiffcheckError):
    """A case file is missing, unreadable or breaks the path's schema; regenerate or fix it."""


class ImplementationLoadError(DiffcheckError):
    """An implementation does not import or does not fit its path's call signature."""


class DeviceError(DiffcheckError):
    """The requested device is not usable here (no CUDA, or a broken interpreter setup)."""


class NothingSelectedError(DiffcheckError):
    """The filters selected no rows; widen --path, --impl, --suite, --case or --max-cases."""

    exit_code = ExitCode.NO_ROWS


class CaseTimeout(BaseException):
    """Raised by the in-process timer; a BaseException so no ``except Exception`` of a kernel
    wrapper (or of diffcheck's guard around it) eats it."""


class CaseTooLarge(Exception):
    """diffcheck could not stage a case for lack of memory: the job's rows say so and the run
    goes on (diffcheck.runner); never an implementation's own error."""
