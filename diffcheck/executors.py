"""Where jobs run: in this process under a time limit, or in a worker process that may die.

A device fault poisons a CUDA context for good, and a wild access with the interpreter check
off can kill the process (SIGSEGV). With isolation ``process`` every job runs in a worker
started with ``spawn``: when the worker dies, reports a device fault or runs past the time
limit, the job ends as ``fault`` or ``timeout``, the worker is replaced and the run goes on.
In this process, the time limit is a SIGALRM timer that raises between interpreter steps; it
cannot stop a GPU kernel that never returns (use isolation ``process`` on GPUs).

Every finished row goes to ``on_outcome`` at once (the CLI appends it to the CSV), so nothing
is lost on Ctrl-C, a dead worker or a crash of diffcheck itself.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection

import torch

from diffcheck.case import Case, Scenario, load_case
from diffcheck.errors import CaseTimeout, DeviceError, UsageError
from diffcheck.impls import Implementation
from diffcheck.report import ReportRow
from diffcheck.runner import Job, Outcome, RunSettings, ended, new_run_id, run_job
from diffcheck.status import Status

ISOLATIONS = ("auto", "process", "none")
#: seconds a fresh worker may take to import torch and triton and set up its device
WORKER_START_LIMIT = 180.0


def resolve_isolation(name: str, settings: RunSettings) -> str:
    """``auto`` is a worker process: any kernel can end the process it runs in (``os._exit``,
    a signal, a wild access with the interpreter check off, a device fault), and only a
    process of its own turns that into a row while the run goes on."""
    if name not in ISOLATIONS:
        raise ValueError(f"unknown isolation '{name}'; known: {', '.join(ISOLATIONS)}")
    return "process" if name == "auto" else name


def settings_for(
    impls: list[Implementation], device: torch.device, seed: int,
    fill_override: int | None = None, interpreter_check: bool = True, fillings: int = 2,
    timeout: float = 60.0, isolation: str = "auto",
) -> RunSettings:
    """Settings of one run, with isolation resolved and every implementation imported here
    first, so one that does not import is a usage error before any row runs."""
    settings = RunSettings(device, new_run_id(), seed, fill_override,
                           interpreter_check, fillings, timeout)
    try:
        settings.isolation = resolve_isolation(isolation, settings)
    except ValueError as e:
        raise UsageError(f"--isolation: {e}") from None
    for implementation in impls:
        settings.implementation(implementation)
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


def timed_out(job: Job, settings: RunSettings, elapsed_ms: float) -> list[Outcome]:
    why = (f"ran past the {settings.timeout:g} s time limit (--timeout); a loop bound or index "
           "read from outside a tensor can run away")
    return ended(job, settings, Status.TIMEOUT, why, elapsed_ms)


class InProcess:
    """Runs each job here, under the SIGALRM time limit."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        #: a device fault on a GPU: the context is gone and the run must stop
        self.lost: Outcome | None = None

    def run(self, job: Job) -> list[Outcome]:
        start = time.perf_counter()
        try:
            with time_limit(self.settings.timeout):
                outcomes = run_job(job, self.settings)
        except CaseTimeout:
            return timed_out(job, self.settings, (time.perf_counter() - start) * 1e3)
        faulted = any(o.row.status == Status.FAULT for o in outcomes)
        if faulted and self.settings.device.type != "cpu":
            self.lost = outcomes[0]
        return outcomes

    def close(self) -> None:
        pass


# -- the worker side ----------------------------------------------------------------------------
def case_recipe(case: Case | Scenario, run_seed: int) -> tuple:
    """How a worker gets the case: rebuilt from its suite or file, or sent whole."""
    if isinstance(case, Case) and case.source:
        return ("file", case.source)
    if isinstance(case, Scenario):
        return ("scenario", case.path, case.suite, case.name, run_seed, case.steps[0].fill,
                case.graph)
    if case.suite:
        return ("suite", case.path, case.suite, case.name, run_seed, case.fill)
    return ("case", case)


def rebuild(recipe: tuple) -> Case | Scenario:
    kind = recipe[0]
    if kind == "file":
        return load_case(recipe[1])
    from diffcheck.paths import get_path

    if kind == "suite":
        _, path, suite, name, run_seed, fill = recipe
        layout = get_path(path).suites()[suite].layouts[name]
        return layout.case(path, suite, run_seed, fill)
    if kind == "scenario":
        _, path, suite, name, run_seed, fill, graph = recipe
        layout = get_path(path).suites()[suite].layouts[name]
        return layout.case(path, suite, run_seed, fill, graph)
    return recipe[1]


def serve(conn: Connection, config: dict) -> None:
    """Worker main loop: receive (recipe, impl, mode), send back an Outcome, until None.

    After a device fault the worker answers and exits: its context cannot run anything more.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import os

    from diffcheck import backend

    settings = RunSettings(**config)
    if settings.device.type != "cpu":  # compile for the device even if the parent interprets
        os.environ.pop("TRITON_INTERPRET", None)
    try:
        backend.prepare(settings.device)
        if settings.device.type == "cuda":
            torch.cuda.init()
    except Exception as e:
        conn.send(("broken", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    own_threads = {t.ident for t in threading.enumerate()}
    built: dict[tuple, Case | Scenario] = {}  # a case's jobs come one after another
    while True:
        message = conn.recv()
        if message is None:
            return
        recipe, impl, mode = message
        try:
            began = time.perf_counter()
            # A case sent whole is itself the recipe and may not hash: it is never kept.
            keep = recipe[0] != "case"
            case = built.get(recipe) if keep else None
            if case is None:
                case = rebuild(recipe)
                if keep:
                    built = {recipe: case}  # keep one: production cases are large
            rebuilt = time.perf_counter() - began
            outcomes = run_job(Job(case, impl, mode), settings)
            if outcomes and outcomes[0].timing is not None:
                outcomes[0].timing["cases"] = rebuilt
        except Exception:  # a bug in diffcheck: the parent stops the run (exit 3)
            conn.send(("crash", traceback.format_exc()))
            return
        # Threads an implementation left running could touch the device (or anything) while
        # the next implementation runs: the parent replaces a worker that holds any.
        leftover = [t.name for t in threading.enumerate()
                    if t.ident not in own_threads and t.is_alive()]
        conn.send(("outcomes", (outcomes, leftover)))
        if any(o.row.status == Status.FAULT for o in outcomes):
            return


# -- the parent side ----------------------------------------------------------------------------
class Isolated:
    """Runs each job in a worker process; replaces the worker after it dies, faults or hangs."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")
        self.process = None
        self.conn: Connection | None = None
        self.started = 0
        #: seconds spent starting the worker, not yet reported with a job's timing
        self.starting = 0.0
        #: (implementation, thread names) when the worker holds threads a job left running
        self.left_by: tuple[str, list[str]] | None = None

    def _start(self) -> None:
        began = time.perf_counter()
        parent, child = self.context.Pipe()
        process = self.context.Process(
            target=serve, args=(child, self.settings.config()), daemon=True,
            name="diffcheck-worker")
        process.start()  # a script using this API needs `if __name__ == "__main__":` (spawn)
        child.close()
        self.process = process
        self.conn = parent
        self.started += 1
        if not parent.poll(WORKER_START_LIMIT):
            self._stop()
            raise DeviceError(f"the worker process did not start within {WORKER_START_LIMIT:g} s")
        try:
            kind, text = parent.recv()
        except EOFError:
            kind, text = "broken", self._death()
        if kind != "ready":
            self._stop()
            raise DeviceError(f"the worker process could not set up the device: {text}")
        self.starting += time.perf_counter() - began

    def _death(self) -> str:
        """Why the worker is gone, in words."""
        assert self.process is not None
        self.process.join(5)
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"the worker process was killed by {name}"
        return f"the worker process exited with code {code}"

    def _stop(self) -> None:
        self.left_by = None
        if self.process is not None and self.process.is_alive():
            self.process.kill()
        if self.process is not None:
            self.process.join(5)
        if self.conn is not None:
            self.conn.close()
        self.process, self.conn = None, None

    def run(self, job: Job) -> list[Outcome]:
        if self.left_by is not None and self.left_by[0] != job.impl.name:
            self._stop()  # one implementation's leftovers never run beside another's rows
        if self.process is None or not self.process.is_alive():
            self._stop()
            self._start()
        assert self.conn is not None
        start = time.perf_counter()
        self.conn.send((case_recipe(job.case, self.settings.run_seed), job.impl, job.mode))
        limit = self.settings.timeout if self.settings.timeout > 0 else None
        answered = self.conn.poll(limit)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        if not answered:
            self._stop()
            return timed_out(job, self.settings, elapsed_ms)
        try:
            kind, payload = self.conn.recv()
        except (EOFError, ConnectionError):
            why = f"{self._death()} during the call{self._leftovers()}"
            self._stop()
            return ended(job, self.settings, Status.FAULT, why, elapsed_ms)
        if kind == "crash":
            self._stop()
            raise RuntimeError(f"worker failed inside diffcheck:\n{payload}")
        payload, leftover = payload
        if leftover:
            self.left_by = (job.impl.name, leftover)
        if any(o.row.status == Status.FAULT for o in payload):
            self._stop()  # it exits by itself; make sure before the next job
        if payload and payload[0].timing is not None and self.starting:
            payload[0].timing["worker_start"] = self.starting
            self.starting = 0.0
        return payload

    def _leftovers(self) -> str:
        """Who may have caused a death: this implementation's own leftover threads."""
        if self.left_by is None:
            return ""
        impl, names = self.left_by
        return f", after implementation {impl} left threads running ({', '.join(names[:3])})"

    def close(self) -> None:
        if self.conn is not None and self.process is not None and self.process.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self.conn.send(None)
            self.process.join(5)
        self._stop()


def executor_for(settings: RunSettings) -> InProcess | Isolated:
    return Isolated(settings) if settings.isolation == "process" else InProcess(settings)


def run_all(
    jobs: Iterable[Job],
    settings: RunSettings,
    on_outcome: Callable[[Outcome], None] = lambda outcome: None,
) -> list[ReportRow]:
    """Run every job in order; Ctrl-C raises Interrupted carrying the finished rows."""
    rows: list[ReportRow] = []
    executor = executor_for(settings)
    try:
        for job in jobs:
            for outcome in executor.run(job):
                rows.append(outcome.row)
                on_outcome(outcome)
            if isinstance(executor, InProcess) and executor.lost is not None:
                raise DeviceError(
                    f"{job.case.case_id} with {job.impl.name} faulted the device, whose context "
                    "is now unusable; rerun with --isolation process to go on past faults")
    except KeyboardInterrupt:
        raise Interrupted(rows) from None
    finally:
        executor.close()
    return rows
