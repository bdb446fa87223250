"""The differential run: every selected (case, implementation, mode) -> one ReportRow.

A failing kernel is a status, never an exception: only the implementation call is guarded,
so an exception anywhere else is a bug in diffcheck and propagates (exit 3).
"""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from diffcheck import backend, tags
from diffcheck.buffers import FILLINGS, Staged, stage
from diffcheck.case import Case
from diffcheck.compare import Comparison, RegionLocator, compare_output, describe
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
    _loaded: dict[str, Callable] = field(default_factory=dict)
    _references: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict
    )

    def implementation(self, impl: Implementation) -> Callable:
        if impl.name not in self._loaded:
            self._loaded[impl.name] = impl.load()
        return self._loaded[impl.name]


class Interrupted(Exception):
    """Ctrl-C during a run; ``rows`` holds every row finished before it."""

    def __init__(self, rows: list[ReportRow]) -> None:
        super().__init__(f"interrupted after {len(rows)} rows")
        self.rows = rows


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
    return shlex.join(words)


@dataclass
class Execution:
    """One run of a job under one red-zone filling."""

    staged: Staged
    accesses: list = field(default_factory=list)
    error: str = ""
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
    run.elapsed_ms = (time.perf_counter() - start) * 1e3
    run.accesses = sandbox.accesses if sandbox is not None else []
    return run


def run_job(job: Job, settings: RunSettings) -> ReportRow:
    case, spec = job.case, get_path(job.case.path)
    fill = fill_of(case, settings)
    out_size = spec.workspace_size(case.intended_inputs(), case.k)
    expected, mask = reference(case, fill, out_size, settings)
    runs = []
    for filling in FILLINGS[: max(1, settings.fillings)]:
        runs.append(execute(job, settings, fill, filling, out_size))
        if runs[-1].error:
            break
    first = runs[0]
    comparison = Comparison(0, ())
    if not first.error:
        locate = RegionLocator(case.intended_inputs()[spec.regions], spec.row_label)
        comparison = compare_output(first.staged, expected, mask, locate, case.well_formed)
        extra = from_sandbox(first.accesses)
        if len(runs) > 1 and not runs[1].error and not any(
                f.kind == Status.OOB_READ for f in extra):
            by_filling = from_fillings(first.staged, runs[1].staged, locate)
            extra += [by_filling] if by_filling else []
        comparison = Comparison(comparison.checked, comparison.findings + tuple(extra))
    return make_row(job, settings, fill, comparison, first.error, first.elapsed_ms, len(runs))


def make_row(
    job: Job, settings: RunSettings, fill: int, comparison: Comparison, error: str,
    elapsed_ms: float, fillings: int,
) -> ReportRow:
    case, spec = job.case, get_path(job.case.path)
    requests, tokens = spec.counts(case.intended_inputs())
    statuses = [f.kind for f in comparison.findings] + ([Status.ERROR] if error else [])
    region = comparison.of(Status.MISMATCH) or comparison.of(Status.STALE_SENSITIVE)
    stray = comparison.of(Status.STRAY_WRITE)
    oob = comparison.of(Status.OOB_WRITE)
    read = comparison.of(Status.OOB_READ)
    detail = " | ".join(describe(f, comparison.checked) for f in comparison.findings) or error
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


def run_all(
    jobs: Iterable[Job],
    settings: RunSettings,
    on_row: Callable[[ReportRow], None] = lambda row: None,
) -> list[ReportRow]:
    """Run every job in order; Ctrl-C raises Interrupted carrying the finished rows."""
    rows: list[ReportRow] = []
    try:
        for job in jobs:
            row = run_job(job, settings)
            rows.append(row)
            on_row(row)
    except KeyboardInterrupt:
        raise Interrupted(rows) from None
    return rows
