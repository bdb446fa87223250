"""A worker process that runs jobs, and the parent's handle on one.

A device fault poisons a CUDA context for good, a wild access with the interpreter check off
kills the process (SIGSEGV), and a kernel can end its process on purpose (``os._exit``, a
signal). Jobs therefore run in workers started with ``spawn``; when one dies, reports a device
fault or runs past the time limit, its job ends as ``fault`` or ``timeout`` and the worker is
replaced. A worker is also replaced before another implementation runs in it when the last
one left threads running, so one implementation's leftovers never spoil another's rows.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection

import torch

from diffcheck import heartbeat, mutants
from diffcheck.case import Case, Scenario, elements
from diffcheck.casefile import load_any
from diffcheck.defaults import CASE_ELEMENTS_KEPT
from diffcheck.devices import pinned_environment
from diffcheck.errors import DeviceError
from diffcheck.job import Job
from diffcheck.outcome import Outcome, ended, timed_out
from diffcheck.runner import run_job
from diffcheck.settings import RunSettings
from diffcheck.status import Status

#: seconds a fresh worker may take to import torch and triton and set up its device
WORKER_START_LIMIT = 180.0
#: int32 elements of built cases a worker keeps (256 MiB): every case of a run comes back once
#: per implementation, and production cases take a second to build


def case_recipe(case: Case | Scenario, run_seed: int) -> tuple:
    """How a worker gets the case: rebuilt from its suite or file, or sent whole (a case
    built outside the registered suites, or changed since, as a device mutant is)."""
    if case.source:
        return ("file", case.source)
    if not _in_suite(case):
        return ("case", case)
    if isinstance(case, Scenario):
        return ("scenario", case.path, case.suite, case.name, run_seed, case.steps[0].fill,
                case.graph)
    return ("suite", case.path, case.suite, case.name, run_seed, case.fill)


def _in_suite(case: Case | Scenario) -> bool:
    """Whether the case is a layout of a registered suite, as built from it."""
    from diffcheck.paths import get_path

    if not case.suite or getattr(case, "mutant", None) is not None:
        return False
    suite = get_path(case.path).suites().get(case.suite)
    return suite is not None and case.name in suite.layouts


def rebuild(recipe: tuple) -> Case | Scenario:
    kind = recipe[0]
    if kind == "file":
        return load_any(recipe[1])
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


class Built:
    """The cases a worker keeps built between jobs: the latest whatever its size, and the
    ones before it up to CASE_ELEMENTS_KEPT input elements (most recently used last)."""

    def __init__(self, budget: int = CASE_ELEMENTS_KEPT) -> None:
        self.budget = budget
        self.cases: dict[tuple, Case | Scenario] = {}

    def get(self, recipe: tuple) -> Case | Scenario:
        """The recipe's case, kept or built now."""
        if recipe[0] == "case":  # sent whole: it is its own recipe and may not hash
            return rebuild(recipe)
        case = self.cases.pop(recipe, None)
        if case is None:
            case = rebuild(recipe)
        self.cases[recipe] = case
        while len(self.cases) > 1 and sum(map(elements, self.cases.values())) - \
                elements(case) > self.budget:
            self.cases.pop(next(iter(self.cases)))
        return case


def serve(conn: Connection, config: dict, parent: tuple | None = None) -> None:
    """Worker main loop: receive (recipe, impl, mode), send back its Outcomes, until None.

    ``parent``: the parent's environment, import path and this module's file, taken over
    first (a child forked from the fork server has the server's); a worker that imported
    another diffcheck than its parent's says so and ends. After a device fault the worker
    answers and exits: its context cannot run anything more.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if parent is not None:
        environment, path, module = parent
        os.environ.clear()
        os.environ.update(environment)
        sys.path[:] = path
        if os.path.realpath(module) != os.path.realpath(__file__):
            conn.send(("broken", f"the worker imported diffcheck from {__file__}, its parent "
                                 f"from {module}; run diffcheck from another directory"))
            return
    from diffcheck import backend

    settings = RunSettings(**config)
    for module in settings.plugins:  # paths registered at run time in the parent
        importlib.import_module(module)
    try:
        backend.prepare(settings.device)
        if settings.device.type == "cuda":
            torch.cuda.init()
    except Exception as e:
        conn.send(("broken", f"{type(e).__name__}: {e}"))
        return
    heartbeat.listen(lambda index: conn.send(("mutant", index)))
    conn.send(("ready", None))
    own_threads = set(threading.enumerate())
    built = Built()
    while True:
        message = conn.recv()
        if message is None:
            return
        recipe, impl, mode = message
        try:
            began = time.perf_counter()
            case = built.get(recipe)
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
                    if t not in own_threads and t.is_alive()]
        conn.send(("outcomes", (outcomes, leftover)))
        if any(o.lost_device() for o in outcomes):
            return



@contextlib.contextmanager
def environment_for(device: torch.device):
    """The environment a worker for ``device`` starts in: without TRITON_INTERPRET for a GPU.

    The child imports triton while unpickling its target, before ``serve`` runs; with the
    variable set, ``triton.language``'s own jit helpers (tl.sum, tl.cdiv, tl.max...) become
    interpreted functions, and a compiled kernel that calls one fails in the code generator
    with a bare AssertionError (a parent that interprets: a test session, a CPU fuzz).
    It yields that environment, which the worker takes over (``serve``: a child forked from
    the fork server has the server's). While it lasts, a process started imports from this
    process's path, never from its working directory first (a fork server starts as
    ``python -c`` and would put the directory first).
    """
    saved = {key: os.environ.get(key) for key in ("TRITON_INTERPRET", "PYTHONPATH",
                                                  "PYTHONSAFEPATH")}
    if device.type != "cpu":
        os.environ.pop("TRITON_INTERPRET", None)
    inherited = dict(os.environ)
    os.environ["PYTHONSAFEPATH"] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    try:
        yield inherited
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: what the fork server imports once: a worker forked from it starts in milliseconds, where a
#: spawned one imports torch and triton again (a second here, more on a GPU host), and a
#: fault or a time-out replaces the worker
PRELOAD = ["torch", "triton", "diffcheck.worker"]
#: whether TRITON_INTERPRET was set when this process's fork server started (empty: none yet)
_SERVER_INTERPRETS: list[bool] = []
#: whether this process starts workers from a fork server (see use_fork_server)
_FORK_SERVER = [False]


def use_fork_server() -> None:
    """Start workers from a fork server from now on. For a process whose standard output and
    error stay where they are, as the CLI's do: a forked worker writes to the server's (a
    pytest session that captures each test's output would see it land in the first test's)."""
    _FORK_SERVER[0] = True


def worker_context(device: torch.device):
    """The multiprocessing context a worker for ``device`` starts from: a fork server that
    has imported torch and triton from this process's import path, started in the environment
    that device wants (see environment_for); spawn unless use_fork_server was called, where
    the platform has none, or for a device that wants the other interpreter setting than the
    server's (the server's imports keep theirs). Call it inside ``environment_for``. Neither
    imports CUDA in the parent: a forked child is clean."""
    methods = multiprocessing.get_all_start_methods()
    interprets = bool(os.environ.get("TRITON_INTERPRET"))
    if not _FORK_SERVER[0] or "forkserver" not in methods or \
            _SERVER_INTERPRETS not in ([], [interprets]):
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    if not _SERVER_INTERPRETS:
        context.set_forkserver_preload(PRELOAD)
        _SERVER_INTERPRETS.append(interprets)
    return context


class Worker:
    """The parent's handle on one worker process: start, send a job, collect its rows."""

    def __init__(self, settings: RunSettings, pin: str = "") -> None:
        if pin:  # the rows it makes here too (a fault, a time-out) name its device
            settings = copy.copy(settings)
            settings.pinned = pin
        #: settings.pinned: the device (of --devices) it and its spares are pinned to, or ""
        self.settings = settings
        self.process = None
        self.conn: Connection | None = None
        self.ready = False
        #: seconds spent starting workers, not yet reported with a job's timing
        self.starting = 0.0
        self._began = 0.0
        #: (implementation, thread names) when the worker holds threads a job left running
        self.left_by: tuple[str, list[str]] | None = None
        #: the job in flight, its recipe and when it was sent
        self.job: Job | None = None
        self.recipe: tuple | None = None
        self.sent = 0.0
        #: the device mutant the job in flight last said it runs (diffcheck.heartbeat)
        self.mutant: int | None = None
        #: recipes of the cases it was last sent (it likely keeps them built)
        self.kept: list[tuple] = []
        #: processes started so far, and one started ahead to replace the next (see launch)
        self.launches = 0
        self.spare: tuple | None = None

    # -- life ---------------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the process (not waiting for it to be ready). A worker replaced once (a
        fault, a time-out, leftover threads) is likely replaced again: from then on a spare
        is started beside it, so the next replacement is ready when it is needed. On a GPU
        the spare holds a second device context (about half a GiB) from then on: a run that
        faults once likely faults again, and a cold start costs seconds a fault."""
        self._began = time.perf_counter()
        if self.spare is not None and not self.spare[0].is_alive():  # (killed meanwhile)
            self._drop_spare()
        started = self.spare or self._start()
        self.spare = self._start() if self.launches else None
        self.launches += 1
        self.process, self.conn = started
        self.ready, self.kept = False, []

    def _start(self) -> tuple:
        """A new worker process and the parent's end of its pipe; the child takes this
        process's environment and import path over, and checks it runs this diffcheck."""
        with environment_for(self.settings.device) as inherited:
            context = worker_context(self.settings.device)
            parent, child = context.Pipe()
            if self.settings.pinned:
                inherited = pinned_environment(inherited, self.settings.device,
                                               self.settings.pinned)
            process = context.Process(
                target=serve, args=(child, self.settings.config(),
                                    (inherited, list(sys.path), __file__)),
                daemon=True, name="diffcheck-worker")
            process.start()  # a script using this API needs `if __name__ == "__main__":`
        child.close()
        return process, parent

    def _await_ready(self) -> None:
        assert self.conn is not None
        if not self.conn.poll(WORKER_START_LIMIT):
            self.stop()
            raise DeviceError(f"the worker process did not start within {WORKER_START_LIMIT:g} s")
        try:
            kind, text = self.conn.recv()
        except EOFError:
            kind, text = "broken", self.death()
        if kind != "ready":
            self.stop()
            raise DeviceError(f"the worker process could not set up the device: {text}")
        self.ready = True
        self.starting += time.perf_counter() - self._began

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def death(self) -> str:
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

    def stop(self) -> None:
        self.left_by, self.ready, self.job, self.kept = None, False, None, []
        if self.process is not None and self.process.is_alive():
            self.process.kill()
        if self.process is not None:
            self.process.join(5)
        if self.conn is not None:
            self.conn.close()
        self.process, self.conn = None, None

    def close(self) -> None:
        if self.conn is not None and self.alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self.conn.send(None)
            self.process.join(5)
        self.stop()
        self._drop_spare()

    def _drop_spare(self) -> None:
        if self.spare is not None:
            process, conn = self.spare
            process.kill()
            process.join(5)
            conn.close()
            self.spare = None

    # -- jobs ---------------------------------------------------------------------------------
    def send(self, job: Job) -> None:
        """Send a job, first replacing the worker if it is gone or holds another
        implementation's leftover threads; once more to a fresh worker when it died after
        saying it was ready (a spare killed meanwhile)."""
        if self.left_by is not None and self.left_by[0] != job.impl.name:
            self.stop()
        recipe = case_recipe(job.case, self.settings.run_seed)
        for attempt in (1, 2):
            if not self.alive():
                self.stop()
                self.launch()
            if not self.ready:
                self._await_ready()
            assert self.conn is not None
            self.job, self.recipe = job, recipe
            self.sent, self.mutant = time.perf_counter(), None
            try:
                self.conn.send((recipe, job.impl, job.mode))
                return
            except OSError:
                if attempt == 2:
                    raise
                self.stop()

    def overdue(self, now: float) -> bool:
        return self.settings.timeout > 0 and now - self.sent > self.settings.timeout

    def outcome(self, answered: bool) -> list[Outcome] | None:
        """The rows of the job in flight once it answered (``answered``: its pipe has a
        message) or ran past the time limit; None while it runs (its notes on which device
        mutant it runs never keep it past the limit)."""
        outcomes = self.collect() if answered else None
        if outcomes is None and self.overdue(time.perf_counter()):
            return self.timed_out()
        return outcomes

    def collect(self) -> list[Outcome] | None:
        """The rows of the job in flight, once the worker answered or died; None when it
        only told which device mutant it runs (then the job is still in flight)."""
        job, elapsed_ms = self.job, (time.perf_counter() - self.sent) * 1e3
        assert job is not None and self.conn is not None
        try:
            kind, payload = self.conn.recv()
        except (EOFError, ConnectionError, OSError):
            why = f"{self.death()} during the call{self._leftovers()}"
            self.stop()
            return ended(mutants.running(job, self.mutant), self.settings, Status.FAULT, why,
                         elapsed_ms)
        if kind == "mutant":
            self.mutant = payload
            return None
        if kind == "crash":
            self.stop()
            raise RuntimeError(f"worker failed inside diffcheck:\n{payload}")
        outcomes, leftover = payload
        self.job = None
        if self.recipe is not None and self.recipe[0] != "case":
            self.kept = [r for r in self.kept if r != self.recipe][-7:] + [self.recipe]
        if leftover:
            self.left_by = (job.impl.name, leftover)
        if any(o.lost_device() for o in outcomes):
            self.stop()  # it exits by itself; make sure before the next job
        if outcomes and outcomes[0].timing is not None and self.starting:
            outcomes[0].timing["worker_start"] = self.starting
            self.starting = 0.0
        return outcomes

    def timed_out(self) -> list[Outcome]:
        """End the job in flight as a time-out and the worker with it."""
        job, elapsed_ms = self.job, (time.perf_counter() - self.sent) * 1e3
        assert job is not None
        self.stop()
        return timed_out(mutants.running(job, self.mutant), self.settings, elapsed_ms)

    def _leftovers(self) -> str:
        """Who may have caused a death: this implementation's own leftover threads."""
        if self.left_by is None:
            return ""
        impl, names = self.left_by
        return f", after implementation {impl} left threads running ({', '.join(names[:3])})"
