"""What a finished job hands on: its rows and the findings behind them, and the rows of a job
that did not finish (a device fault, a dead worker, a time-out)."""

from __future__ import annotations

from dataclasses import dataclass, field

from diffcheck.calls import contract_of
from diffcheck.case import first_case
from diffcheck.findings import Comparison, Finding
from diffcheck.job import Job
from diffcheck.paths import get_path
from diffcheck.report import ReportRow, make_row
from diffcheck.settings import RunSettings
from diffcheck.status import Status


@dataclass
class Outcome:
    """A finished job: its report row and the findings behind it (for --details)."""

    row: ReportRow
    findings: tuple[Finding, ...] = ()
    #: seconds the job spent (on its first row only): implementation calls, references, total
    timing: dict[str, float] | None = None
    #: a call faulted the device although the row says why it matters more (a read the
    #: plausible fillings found): the context is gone all the same
    device_lost: bool = False
    #: ``kernel.NAME`` -> the values each @triton.heuristics took in the job's calls
    heuristics: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: device mutants of the case a screened pass also covered (fuzz --fast counts them)
    mutants: int = 0

    def lost_device(self) -> bool:
        return self.device_lost or self.row.status == Status.FAULT


#: words in an exception that mean the device itself failed (the context is lost)
DEVICE_FAULT_MARKERS = (
    "illegal memory access", "illegal address", "unspecified launch failure",
    "device-side assert", "misaligned address", "an illegal instruction",
    "CUDA error", "HIP error", "hipError", "cudaError",
)


def is_device_fault(error: BaseException) -> bool:
    """True when ``error`` reports a device fault rather than an exception of the wrapper."""
    if type(error).__name__ == "AcceleratorError":
        return True
    text = str(error)
    return any(marker in text for marker in DEVICE_FAULT_MARKERS)


def one_line(error: BaseException) -> str:
    """The implementation's exception as one line; the interpreter's wrapper is unwrapped."""
    cause = error.__cause__ if type(error).__name__ == "InterpreterError" else None
    shown = cause or error
    text = " ".join(str(shown).split())
    return f"{type(shown).__name__}: {text}"[:400]


def ended(job: Job, settings: RunSettings, status: Status, why: str,
          elapsed_ms: float) -> list[Outcome]:
    """The rows of a job that did not finish: a device fault, a dead worker or a time-out."""
    contract = contract_of(get_path(job.case.path), job.impl, first_case(job.case),
                           settings.fill_override)
    return [Outcome(make_row(job, case, settings, contract, Comparison(0, ()), why,
                             elapsed_ms, 0, status))
            for case in job.mode.rows(job.case)]


def timed_out(job: Job, settings: RunSettings, elapsed_ms: float) -> list[Outcome]:
    """The rows of a job stopped at the time limit."""
    why = (f"ran past the {settings.timeout:g} s time limit (--timeout); a loop bound or index "
           "read from outside a tensor can run away")
    return ended(job, settings, Status.TIMEOUT, why, elapsed_ms)
