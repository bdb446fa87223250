"""One job, start to finish: stage, run the implementation, compare -> one report row.

A failing kernel is a status, never an exception: only the implementation call is guarded,
so an exception anywhere else is a bug in diffcheck and propagates (exit 3). Where a job runs
(this process or a worker) and its time limit are diffcheck.executors' business.
"""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from diffcheck import backend, tags
from diffcheck.buffers import FILLINGS, Staged, stage
from diffcheck.case import Case
from diffcheck.compare import Comparison, Finding, RegionLocator, compare_output, describe
from diffcheck.impls import Implementation
from diffcheck.modes import Mode
from diffcheck.oob import extents, from_fillings, from_sandbox
from diffcheck.paths import get_path
from diffcheck.report import ReportRow
from diffcheck.sandbox import Sandbox
from diffcheck.status import Status, worst


@dataclass(frozen=True)
class Job:
    case: Case
    impl: Implementation
    mode: Mode


@dataclass
class RunSettings:
    device: torch.device
    run_id: str
    run_seed: int
    #: --invalid-fill when given explicitly: overrides the fill stored in case files
    fill_override: int | None = None
    #: bounds-check every interpreter load and store (CPU only)
    interpreter_check: bool = True
    #: red-zone fillings to run each case under (1: constant only; 2: constant and tags)
    fillings: int = 2
    #: seconds one job may take (all its fillings) before it ends as `timeout`; 0: no limit
    timeout: float = 60.0
    #: where jobs run: "none" (this process) or "process" (a worker that may die)
    isolation: str = "none"
    _loaded: dict[str, Callable] = field(default_factory=dict)
    _references: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict
    )

    def implementation(self, impl: Implementation) -> Callable:
        if impl.name not in self._loaded:
            self._loaded[impl.name] = impl.load()
        return self._loaded[impl.name]


    def config(self) -> dict:
        """The plain settings, to start a worker with the same ones."""
        return {f: getattr(self, f) for f in (
            "device", "run_id", "run_seed", "fill_override", "interpreter_check", "fillings",
            "timeout", "isolation")}


@dataclass
class Outcome:
    """A finished job: its report row and the findings behind it (for --details)."""

    row: ReportRow
    findings: tuple[Finding, ...] = ()


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


def fill_of(case: Case, settings: RunSettings) -> int:
    return case.fill if settings.fill_override is None else settings.fill_override


def reference(case: Case, fill: int, out_size: int, settings: RunSettings):
    """(expected, mask) of the case's intended batch on the run's device, computed once."""
    key = (f"{case.source}|{case.case_id}", fill)
    if key not in settings._references:
        spec = get_path(case.path)
        intended = {n: t.to(settings.device) for n, t in case.intended_inputs().items()}
        out = torch.empty(out_size, dtype=torch.int32, device=settings.device)
        ref = spec.reference_fn()(*spec.call_args(intended), **spec.scalars(case.k),
                                  out=out, fill=fill)
        settings._references[key] = ref
    return settings._references[key]


def invoke_call(job: Job, staged: Staged, fn: Callable, fill: int) -> Callable[[], object]:
    spec = get_path(job.case.path)
    kwargs = dict(spec.scalars(job.case.k), out=staged.out.view)
    if job.impl.accepts_fill:
        kwargs["fill"] = fill
    args = spec.call_args(staged.tensors())
    return lambda: fn(*args, **kwargs)


def reproduce(job: Job, settings: RunSettings, fill: int) -> str:
    case = job.case
    words = ["diffcheck", "compare", "--path", case.path]
    if case.source:
        words += ["--cases", case.source]
    else:
        words += ["--suite", case.suite, "--case", case.case_id, "--seed", str(settings.run_seed)]
    words += ["--impl", job.impl.name, "--mode", job.mode.name, "--invalid-fill", str(fill),
              "--device", settings.device.type]
    if not settings.interpreter_check:
        words.append("--no-interpreter-check")
    if settings.fillings != 2:
        words += ["--fillings", str(settings.fillings)]
    if settings.timeout != RunSettings.timeout:
        words += ["--timeout", f"{settings.timeout:g}"]
    return shlex.join(words)


@dataclass
class Execution:
    """One run of a job under one red-zone filling."""

    staged: Staged
    accesses: list = field(default_factory=list)
    error: str = ""
    #: the error was a device fault: nothing more may run in this process's context
    fault: bool = False
    elapsed_ms: float = 0.0


def execute(job: Job, settings: RunSettings, fill: int, filling: str, out_size: int) -> Execution:
    """Stage the case under ``filling`` and run the mode once, sandboxed on the interpreter."""
    case, spec = job.case, get_path(job.case.path)
    staged = stage(case.inputs, case.columns, out_size, settings.device, filling, spec.tensors)
    run = Execution(staged)
    sandbox = None
    if settings.interpreter_check and backend.interpreted(settings.device):
        ids = {name: i for i, name in enumerate(staged.names())}
        sandbox = Sandbox(extents(staged), tag=lambda name, off: tags.encode(ids[name], off))
    start = time.perf_counter()
    try:
        fn = settings.implementation(job.impl)
        staged.poison_out()
        with sandbox if sandbox is not None else contextlib.nullcontext():
            result = job.mode.execute(invoke_call(job, staged, fn, fill), settings.device)
        if isinstance(result, torch.Tensor) and result.data_ptr() != staged.out.view.data_ptr():
            raise RuntimeError("returned a tensor other than the out= workspace it was given")
    except KeyboardInterrupt:
        raise
    except Exception as e:  # the implementation raised: a status, not a crash
        run.error = one_line(e)
        run.fault = is_device_fault(e)
    run.elapsed_ms = (time.perf_counter() - start) * 1e3
    run.accesses = sandbox.accesses if sandbox is not None else []
    return run


#: fillings rerun (by index) before a tag-less red-zone difference is called a read
RERUNS = (0, 1, 0)


def run_job(job: Job, settings: RunSettings) -> Outcome:
    case, spec = job.case, get_path(job.case.path)
    fill = fill_of(case, settings)
    out_size = spec.workspace_size(case.intended_inputs(), case.k)
    expected, mask = reference(case, fill, out_size, settings)
    runs = []
    for filling in FILLINGS[: max(1, settings.fillings)]:
        runs.append(execute(job, settings, fill, filling, out_size))
        if runs[-1].error:
            break
    if runs[-1].fault:  # the device is gone: nothing in its memory can be compared
        return ended(job, settings, Status.FAULT, runs[-1].error, runs[-1].elapsed_ms)
    first = runs[0]
    comparison = Comparison(0, ())
    notes: list[str] = []
    if not first.error:
        locate = RegionLocator(case.intended_inputs()[spec.regions], spec.row_label)
        comparison = compare_output(first.staged, expected, mask, locate, case.well_formed)
        extra = from_sandbox(first.accesses)
        if len(runs) > 1 and not runs[1].error and not any(
                f.kind == Status.OOB_READ for f in extra):
            by_filling = from_fillings(first.staged, runs[1].staged, locate)
            if by_filling is not None and by_filling.found_by == "redzone-diff":
                # No tag explains the difference: maybe the output is not deterministic
                # (programs racing to write one element). Reruns under each filling tell.
                for again_as in RERUNS:
                    again = execute(job, settings, fill, FILLINGS[again_as], out_size)
                    if again.fault:
                        return ended(job, settings, Status.FAULT, again.error, again.elapsed_ms)
                    if not again.error and not torch.equal(again.staged.out.view,
                                                           runs[again_as].staged.out.view):
                        notes.append("output differs between runs with the same red zones "
                                     "(racing writes?), so a red-zone read cannot be told")
                        by_filling = None
                        break
            extra += [by_filling] if by_filling else []
        comparison = Comparison(comparison.checked, comparison.findings + tuple(extra),
                                tuple(notes))
    row = make_row(job, settings, fill, comparison, first.error, first.elapsed_ms, len(runs))
    return Outcome(row, comparison.findings)


def ended(job: Job, settings: RunSettings, status: Status, why: str, elapsed_ms: float) -> Outcome:
    """The row of a job that did not finish: a device fault, a dead worker or a time-out."""
    row = make_row(job, settings, fill_of(job.case, settings), Comparison(0, ()), why,
                   elapsed_ms, 0, status)
    return Outcome(row)


def make_row(
    job: Job, settings: RunSettings, fill: int, comparison: Comparison, error: str,
    elapsed_ms: float, fillings: int, ended_as: Status = Status.ERROR,
) -> ReportRow:
    """``error`` (when set) ends the row as ``ended_as``: error, fault or timeout."""
    case, spec = job.case, get_path(job.case.path)
    requests, tokens = spec.counts(case.intended_inputs())
    statuses = [f.kind for f in comparison.findings] + ([ended_as] if error else [])
    region = comparison.of(Status.MISMATCH) or comparison.of(Status.STALE_SENSITIVE)
    stray = comparison.of(Status.STRAY_WRITE)
    oob = comparison.of(Status.OOB_WRITE)
    read = comparison.of(Status.OOB_READ)
    by_severity = sorted(comparison.findings, key=lambda f: -f.kind.severity)
    detail = " | ".join([describe(f, comparison.checked) for f in by_severity]
                        + list(comparison.notes)) or error
    return ReportRow(
        run_id=settings.run_id, path=case.path, implementation=job.impl.name,
        impl_safe=job.impl.safe, mode=job.mode.name, device=backend.describe(settings.device),
        suite=case.suite or "file", case_id=case.case_id,
        seed=case.seed if case.source else settings.run_seed, fill=fill,
        rows=requests, tokens=tokens, k=case.k, well_formed=case.well_formed,
        status=worst(statuses).value, elements_checked=comparison.checked,
        mismatches=region.count if region else 0,
        first_mismatch=region.location if region else "",
        first_expected=region.expected if region else None,
        first_actual=region.actual if region else None,
        stray_writes=stray.count if stray else 0, first_stray=stray.location if stray else "",
        oob_writes=sum(f.count for f in comparison.findings if f.kind == Status.OOB_WRITE),
        first_oob_write=oob.location if oob else "",
        oob_write_found_by=",".join(sorted({f.found_by for f in comparison.findings
                                            if f.kind == Status.OOB_WRITE})),
        oob_reads=read.count if read else 0, first_oob_read=read.location if read else "",
        oob_read_found_by=read.found_by if read else "", fillings=fillings, error=error,
        elapsed_ms=round(elapsed_ms, 3), detail=detail, reproduce=reproduce(job, settings, fill),
    )

