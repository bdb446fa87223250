"""One run of a selection, start to finish: the library entry point the CLI, the API and the
pytest plugin call, from the options they were given (``RunOptions``) to the exit code.

Each finished row goes to every sink at once (the CSV first, so a crash keeps it), and every
sink is finished whatever ends the run: complete, interrupted, a lost device or a bug in
diffcheck. A run that did not write every selected row is never reported as passed: JUnit
and the markdown summary say "interrupted after 107 of 156 rows".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from diffcheck import tuning
from diffcheck.defaults import TIMEOUT
from diffcheck.errors import ExitCode, UsageError
from diffcheck.executors import Interrupted, run_all
from diffcheck.outcome import Outcome
from diffcheck.report import ReportRow
from diffcheck.selection import Selection
from diffcheck.settings import RunSettings
from diffcheck.status import Status


@dataclass
class RunResult:
    """The rows of a run, how many were selected, and why it ended early (if it did)."""

    rows: list[ReportRow]
    #: rows the selection holds
    total: int
    #: "" for a run that ran to its end; else "interrupted" or "stopped by <error>"
    stopped: str = ""
    #: (implementation, seconds spent) per job, for the time breakdown
    timings: list[tuple[str, dict]] = field(default_factory=list)
    #: ``kernel.NAME`` -> every value a heuristic took over the run's rows, in order
    heuristics: dict[str, list[str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.stopped and len(self.rows) == self.total

    def ending(self) -> str:
        """'' for a complete run, else 'interrupted after 107 of 156 rows'."""
        if self.complete:
            return ""
        why = self.stopped or "ended early"
        return f"{why} after {len(self.rows)} of {self.total} rows"

    def failed(self, fail_on: frozenset[Status]) -> bool:
        return any(Status(r.status) in fail_on for r in self.rows)

    def exit_code(self, fail_on: frozenset[Status]) -> ExitCode:
        """What the run ends with: interrupted, incomplete (never a pass), failed or ok."""
        if self.stopped == "interrupted":
            return ExitCode.INTERRUPTED
        if not self.complete:
            return ExitCode.INTERNAL
        return ExitCode.FAILURES if self.failed(fail_on) else ExitCode.OK


@dataclass
class RunOptions:
    """One run as a front end asks for it (compare's options, ``api.check``'s arguments, the
    pytest marker's): what to select and how to run it, in the CLI's own terms."""

    path: str = "all"
    impls: Sequence[str] = ()
    suites: Sequence[str] = ()
    case_files: Sequence[str] = ()
    case_patterns: Sequence[str] = ()
    #: a mode's name (eager, capture, replay, graph, all) or several
    modes: str | Sequence[str] = "all"
    seed: int = 0
    invalid_fill: int | None = None
    max_cases: int | None = None
    graph_size: int | None = None
    shard: str = "1/1"
    device: str = "auto"
    interpreter_check: bool = True
    fillings: int = 0
    timeout: float = TIMEOUT
    isolation: str = "auto"
    workers: int = 0
    instrument: bool | None = None
    configs: str = "all"
    #: --devices: all, N or a list such as 0,2,5 (one worker per device); None: one device
    devices: str | None = None


def select_for(options: RunOptions) -> tuple[torch.device, Selection]:
    """The device (set up) and the selection of a run; usage errors before anything runs."""
    from diffcheck import backend, modes
    from diffcheck.executors import check_fill_and_timeout
    from diffcheck.selection import parse_shard, select

    check_fill_and_timeout(options.invalid_fill, options.timeout)
    chosen = []
    for name in [options.modes] if isinstance(options.modes, str) else list(options.modes):
        chosen += [m for m in modes.select(name) if m.name not in {c.name for c in chosen}]
    device = backend.resolve(options.device)
    backend.prepare(device)
    shard = parse_shard(options.shard)
    selection = select(options.path, list(options.impls), list(options.suites),
                       list(options.case_files), list(options.case_patterns), chosen,
                       options.seed, options.invalid_fill, options.max_cases,
                       options.graph_size, shard, gpu=device.type != "cpu")
    return device, selection


def settings_of(options: RunOptions, device: torch.device, selection: Selection) -> RunSettings:
    """The run's settings (every implementation imported: one that does not import is a
    usage error before any row runs)."""
    from diffcheck.executors import settings_for

    return settings_for(selection.impls, device, options.seed, options.invalid_fill,
                        options.interpreter_check, options.fillings, options.timeout,
                        options.isolation, options.workers, options.instrument,
                        options.configs, options.devices)


def prepare(options: RunOptions) -> tuple[Selection, RunSettings]:
    """A run's selection and settings from its options: what ``run`` takes."""
    device, selection = select_for(options)
    return selection, settings_of(options, device, selection)


class Sink(Protocol):
    """Where rows go: the CSV report, the details CSV, JUnit, the markdown summary."""

    def write(self, outcome: Outcome) -> None: ...

    def finish(self, result: RunResult) -> None: ...


def run(selection: Selection, settings: RunSettings, sinks: Sequence[Sink] = (),
        on_row: Callable[[Outcome], None] = lambda outcome: None) -> RunResult:
    """Run every job of ``selection``; sinks are finished on every way out."""
    result = RunResult([], selection.rows())

    def on_outcome(outcome: Outcome) -> None:
        result.rows.append(outcome.row)
        if outcome.timing:
            result.timings.append((outcome.row.implementation, outcome.timing))
        tuning.gather(result.heuristics, outcome.heuristics)
        for sink in sinks:
            sink.write(outcome)
        on_row(outcome)

    try:
        run_all(selection.jobs(), settings, on_outcome)
    except Interrupted:
        result.stopped = "interrupted"
    except BaseException as e:
        result.stopped = f"stopped by {type(e).__name__}"
        _finish(sinks, result)
        raise
    _finish(sinks, result)
    return result


def _finish(sinks: Sequence[Sink], result: RunResult) -> None:
    for sink in sinks:
        sink.finish(result)


def check_outputs(outputs: dict[str, Path | None], inputs: Sequence[Path]) -> dict[str, Path]:
    """Resolve every output path once (a kernel that changes the working directory cannot
    move them) and refuse, before anything is written, the ones that would lose data or fail
    after the work: a directory, a symbolic link (its target would be replaced), a device or
    FIFO, a place that is not writable or sits under a file, one output given twice, or an
    output that is one of the run's input case files."""
    resolved: dict[str, Path] = {}
    sources = {p.resolve(): p for p in inputs}
    for option, path in outputs.items():
        if path is None:
            continue
        if path.expanduser().is_symlink():
            raise UsageError(f"{option} {path} is a symbolic link (to {os.readlink(path)}); "
                             "writing it would replace its target: give the file itself")
        where = path.expanduser().resolve()
        if where.is_dir():
            raise UsageError(f"{option} {path} is a directory; give a file name")
        if where.exists() and not where.is_file():
            raise UsageError(f"{option} {path} is not a regular file (a device or FIFO); give "
                             "a file name")
        writable_place(option, path, where)
        if where in sources:
            raise UsageError(f"{option} {path} is an input case file of this run; give the "
                             "report another name")
        twin = next((o for o, p in resolved.items() if p == where), None)
        if twin is not None:
            raise UsageError(f"{option} and {twin} are the same file ({path}); give each its own")
        resolved[option] = where
    return resolved


def writable_place(option: str, path: Path, where: Path) -> None:
    """Refuse a file that cannot be written where it is asked for: under a regular file, in
    a directory that does not let us write, or a read-only file."""
    parent = where.parent
    while not parent.exists():  # the writers create missing folders
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the folder {parent} is not writable")
    if where.exists() and not os.access(where, os.W_OK):
        raise UsageError(f"{option} {path} is read-only")


def check_folder(option: str, path: Path) -> Path:
    """An output folder (fuzz --save-to, export): a folder or nothing yet, never a file, and
    writable; resolved once."""
    where = path.expanduser().resolve()
    if where.exists() and not where.is_dir():
        raise UsageError(f"{option} {path} is a file; give a folder")
    writable_place(option, path, where / "x")
    return where


def time_breakdown(wall: float, generation: float, timings: list[tuple[str, dict]],
               workers: int = 1) -> str:
    """Where the time went: case generation, worker start, calls (first calls compile),
    references, staging and checks, and what is left (messages to workers, reports). With
    several workers the parts are summed over them, and only the wall time is the run's."""
    import statistics

    def total(key: str) -> float:
        return sum(t.get(key, 0.0) for _, t in timings)

    calls, references, jobs = total("calls"), total("references"), total("total")
    cases, starting = total("cases"), total("worker_start")
    first_extra = 0.0
    for name in {n for n, _ in timings}:
        mine = [t["calls"] for n, t in timings if n == name]
        first_extra += max(mine[0] - statistics.median(mine), 0.0)
    started = (f"worker start {starting:.1f} s, cases rebuilt in the workers {cases:.1f} s, "
               if starting or cases else "")
    summed = f" (summed over {workers} workers)" if workers > 1 else ""
    other = "" if workers > 1 else (
        f", other (messages, reports) {max(wall - jobs - cases - starting, 0.0):.1f} s")
    return (f"time: {generation:.1f} s building cases, {wall:.1f} s running{summed}: "
            f"{started}implementation calls {calls:.1f} s (first calls, compiling included, "
            f"{first_extra:.1f} s more than typical), references {references:.1f} s, staging "
            f"and checks {max(jobs - calls - references, 0.0):.1f} s{other}")
