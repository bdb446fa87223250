"""Where jobs run: in worker processes that may die (diffcheck.worker), or in this process.

With isolation ``process`` (the default) jobs are spread over worker processes, several on a
CPU (the interpreter is single-threaded), one on a GPU, one per GPU with ``--devices``
(diffcheck.devices). In this process (``--isolation
none``, for debugging) the time limit is a SIGALRM timer that raises between interpreter
steps; it cannot stop a GPU kernel that never returns, nor a kernel that ends the process.

Every finished row goes to ``on_outcome`` at once (the CLI appends it to the CSV), so nothing
is lost on Ctrl-C, a dead worker or a crash of diffcheck itself.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait

import torch

from diffcheck import backend, heartbeat, mutants
from diffcheck.defaults import TIMEOUT
from diffcheck.devices import cpu_cores, parse_devices
from diffcheck.errors import CaseTimeout, DeviceError, UsageError
from diffcheck.impls import Implementation
from diffcheck.job import Job
from diffcheck.outcome import Outcome, timed_out
from diffcheck.report import ReportRow
from diffcheck.runner import run_job
from diffcheck.settings import RunSettings, new_run_id
from diffcheck.worker import Worker, case_recipe

ISOLATIONS = ("auto", "process", "none")


def resolve_isolation(name: str, settings: RunSettings) -> str:
    """``auto`` is a worker process: any kernel can end the process it runs in (``os._exit``,
    a signal, a wild access with the interpreter check off, a device fault), and only a
    process of its own turns that into a row while the run goes on."""
    if name not in ISOLATIONS:
        raise ValueError(f"unknown isolation '{name}'; known: {', '.join(ISOLATIONS)}")
    return "process" if name == "auto" else name


def default_workers(device: torch.device) -> int:
    """Worker processes by default: one per core on a CPU (up to 4), one on a GPU (its kernels
    and timings must not share it)."""
    if device.type != "cpu":
        return 1
    return max(1, min(cpu_cores(), 4))


def check_fill_and_timeout(invalid_fill: int | None, timeout: float) -> None:
    """--invalid-fill is a contract's fill; --timeout is 0 or a finite positive time (nan, inf
    and negatives are refused). The CLI and the API check alike."""
    if invalid_fill not in (None, 0, -1):
        raise UsageError(f"--invalid-fill must be 0 or -1, got {invalid_fill}")
    if not (timeout == 0 or 0 < timeout < float("inf")):
        raise UsageError(f"--timeout must be 0 (no limit) or a positive number of seconds, "
                         f"got {timeout:g}")


def parse_configs(text: str) -> int:
    """``--configs``: ``all`` (0), ``first`` (1) or a number of configs (the first N)."""
    word = str(text).strip().lower()
    if word in ("all", "first"):
        return 0 if word == "all" else 1
    if word.isdigit() and int(word) > 0:
        return int(word)
    raise UsageError(f"--configs must be all, first or a number of configs (1 or more), "
                     f"got {text!r}")


def settings_for(
    impls: list[Implementation], device: torch.device, seed: int,
    fill_override: int | None = None, interpreter_check: bool = True, fillings: int = 0,
    timeout: float = TIMEOUT, isolation: str = "auto", workers: int = 0,
    instrument: bool | None = None, configs: str = "all", devices: str | None = None,
) -> RunSettings:
    """Settings of one run, with isolation resolved and every implementation imported here
    first, so one that does not import is a usage error before any row runs. ``workers`` 0
    takes the default for the device; ``fillings`` 0 too (see settings.default_fillings).
    ``devices`` (--devices): one worker per device listed."""
    from diffcheck.paths import runtime_modules
    from diffcheck.settings import FILLING_CHOICES, default_fillings

    check_fill_and_timeout(fill_override, timeout)
    if fillings not in (0, *FILLING_CHOICES):
        raise UsageError(f"--fillings must be 0 (the device's default) or one of "
                         f"{', '.join(map(str, FILLING_CHOICES))}, got {fillings}")
    fillings = fillings or default_fillings(device, interpreter_check)

    settings = RunSettings(device, new_run_id(), seed, fill_override,
                           interpreter_check, fillings, timeout, plugins=runtime_modules(),
                           instrument=instrument, configs=parse_configs(configs))
    try:
        settings.isolation = resolve_isolation(isolation, settings)
    except ValueError as e:
        raise UsageError(f"--isolation: {e}") from None
    if workers < 0:
        raise UsageError(f"--jobs must be 0 (one per core) or more, got {workers}")
    settings.devices = parse_devices(devices, device)
    if settings.devices and (workers or settings.isolation == "none"):
        raise UsageError("--devices runs one worker process per device: drop "
                         f"{'--jobs' if workers else '--isolation none'}")
    settings.workers = 1 if settings.isolation == "none" else (
        len(settings.devices) or workers or default_workers(device))
    for implementation in impls:
        fn = settings.implementation(implementation)
        compiled = backend.compiled_kernels(fn) if backend.interpreted(device) else []
        if compiled and settings.isolation == "none":
            raise UsageError(
                f"{implementation.name}: its module was imported before TRITON_INTERPRET=1 was "
                f"set, so {compiled[0]} is built for a GPU (\"0 active drivers\" on the CPU); "
                "set TRITON_INTERPRET=1 before importing it, or use isolation 'process' (the "
                "default: workers import it afresh)")
    return settings


class Interrupted(Exception):
    """Ctrl-C during a run; ``rows`` holds every row finished before it."""

    def __init__(self, rows: list[ReportRow]) -> None:
        super().__init__(f"interrupted after {len(rows)} rows")
        self.rows = rows


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise CaseTimeout in this (main) thread after ``seconds``; no-op elsewhere or for 0."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise CaseTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class InProcess:
    """Runs each job here, under the SIGALRM time limit."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        #: a device fault on a GPU: the context is gone and the run must stop
        self.lost: Outcome | None = None

    def run(self, job: Job) -> list[Outcome]:
        start, noted = time.perf_counter(), []
        heartbeat.listen(noted.append)  # the device mutant running, for a time-out to name
        try:
            with time_limit(self.settings.timeout):
                outcomes = run_job(job, self.settings)
        except CaseTimeout:
            return timed_out(mutants.running(job, noted[-1] if noted else None), self.settings,
                             (time.perf_counter() - start) * 1e3)
        finally:
            heartbeat.listen(None)
        faulted = any(o.lost_device() for o in outcomes)
        if faulted and self.settings.device.type != "cpu":
            self.lost = outcomes[0]
        return outcomes

    def close(self) -> None:
        pass


def run_all(
    jobs: Iterable[Job],
    settings: RunSettings,
    on_outcome: Callable[[Outcome], None] = lambda outcome: None,
) -> list[ReportRow]:
    """Run every job; rows reach ``on_outcome`` in job order. Ctrl-C raises Interrupted
    carrying the finished rows."""
    jobs = list(jobs)
    if settings.isolation == "process":
        return _in_workers(jobs, settings, on_outcome)
    rows: list[ReportRow] = []
    executor = InProcess(settings)
    try:
        for job in jobs:
            for outcome in executor.run(job):
                rows.append(outcome.row)
                on_outcome(outcome)
            if executor.lost is not None:
                raise DeviceError(
                    f"{job.case.case_id} with {job.impl.name} faulted the device, whose context "
                    "is now unusable; rerun with --isolation process to go on past faults")
    except KeyboardInterrupt:
        raise Interrupted(rows) from None
    return rows


def _in_workers(jobs: list[Job], settings: RunSettings,
                on_outcome: Callable[[Outcome], None]) -> list[ReportRow]:
    """Jobs spread over ``settings.workers`` worker processes, each job under its time limit;
    finished jobs are held until every earlier one is done, so rows keep the job order."""
    pins = settings.devices or ("",) * settings.workers
    workers = [Worker(settings, pin) for pin in pins[: max(1, len(jobs))]]
    for worker in workers:
        worker.launch()  # they import torch and triton side by side
    recipes = [case_recipe(job.case, settings.run_seed) for job in jobs]
    pending = list(range(len(jobs)))
    in_flight: dict[Worker, int] = {}
    finished: dict[int, list[Outcome]] = {}
    rows: list[ReportRow] = []
    emitted = 0
    try:
        while emitted < len(jobs):
            for worker in workers:
                if worker not in in_flight and pending:
                    index = _next_for(worker, pending, recipes, 2 * len(workers))
                    worker.send(jobs[index])
                    in_flight[worker] = index
            now = time.perf_counter()
            limits = [settings.timeout - (now - w.sent) for w in in_flight]
            waited = max(min(limits), 0.0) if settings.timeout > 0 else None
            answered = wait([w.conn for w in in_flight], timeout=waited)
            for worker in list(in_flight):
                outcomes = worker.outcome(worker.conn in answered)
                if outcomes is not None:
                    finished[in_flight.pop(worker)] = outcomes
            while emitted in finished:
                for outcome in finished.pop(emitted):
                    rows.append(outcome.row)
                    on_outcome(outcome)
                emitted += 1
    except KeyboardInterrupt:
        raise Interrupted(rows) from None
    finally:
        for worker in workers:
            worker.close()
    return rows


def _next_for(worker: Worker, pending: list[int], recipes: list[tuple], window: int) -> int:
    """The next job for ``worker``: among the next few, one whose case it keeps built, else
    the next one."""
    for position, index in enumerate(pending[:window]):
        if recipes[index] in worker.kept:
            return pending.pop(position)
    return pending.pop(0)
