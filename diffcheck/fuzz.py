"""`diffcheck fuzz`: generated cases against the reference, every check on, until the first
failure or the budget; the failure shrunk to a minimal case and saved where `compare --cases`
replays it.

Hypothesis does the drawing and the shrinking (diffcheck.fixtures.generated holds the
strategies, each path's plug-in turns a drawn record into its own case or scenario). Every
drawn record is checked once (a cache answers repeats, so a flaky kernel cannot confuse the
shrinker), in one worker process kept for the whole run (replaced after a fault or time-out).
Shrinking keeps the status first found: a smaller case failing otherwise is another finding.
A seeded run (``--seed``) is reproducible, so Hypothesis' own example database is not used;
the saved cases are the memory instead, and a run replays those of its path first.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from diffcheck.case import Case, Scenario
from diffcheck.defaults import FAST_MUTANTS, TIMEOUT
from diffcheck.errors import DeviceError, ExitCode, Interrupted, UsageError
from diffcheck.fuzz_devices import pinned_slot, write_progress
from diffcheck.impls import Implementation
from diffcheck.job import Job
from diffcheck.modes import Mode
from diffcheck.mutants import mutant
from diffcheck.paths import PathSpec
from diffcheck.report import ReportRow
from diffcheck.settings import RunSettings
from diffcheck.status import Status
from diffcheck.stops import deferred_stops

#: seconds between two progress lines
PROGRESS_EVERY = 2.0


@dataclass(frozen=True)
class Budget:
    """How long to search: seconds of wall time, or a number of generated cases."""

    seconds: float | None = None
    cases: int | None = None

    @classmethod
    def parse(cls, text: str) -> Budget:
        """``60s``, ``5m``, ``1h`` or a bare number of cases (``500``)."""
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*", text)
        if not match or float(match.group(1)) <= 0:
            raise UsageError(f"--budget must be a time (60s, 5m, 1h) or a number of cases "
                             f"(500), got '{text}'")
        value, unit = float(match.group(1)), match.group(2)
        if unit is None:
            if not value.is_integer():
                raise UsageError(f"--budget {text}: a number of cases is a whole number")
            return cls(cases=int(value))
        return cls(seconds=value * {"s": 1, "m": 60, "h": 3600}[unit])

    def spent(self, elapsed: float, checked: int) -> bool:
        if self.seconds is not None:
            return elapsed >= self.seconds
        return self.cases is not None and checked >= self.cases

    def __str__(self) -> str:
        return f"{self.seconds:g} s" if self.seconds is not None else f"{self.cases} cases"


@dataclass(frozen=True)
class Draws:
    """One kind of draw a search takes turns with: how large the cases get, and the modes
    that check them (None: the checker's own)."""

    name: str
    limits: object
    modes: tuple[Mode, ...] | None = None


#: seconds of one turn when a search takes turns between kinds of draws: small structural
#: cases (every page size, table and stale form, cheap to draw and check) and production-size
#: ones (large offsets, device mutants), each kind about half the time
TURN_SECONDS = 10.0


@dataclass
class Finding:
    """The smallest failing record, its case or scenario, its rows, and what was first found."""

    drawn: object
    target: Case | Scenario
    row: ReportRow
    rows: list[ReportRow]
    first: object
    first_row: ReportRow
    #: a saved regression case that still fails (nothing drawn, nothing shrunk)
    replayed: bool = False
    #: the failure came from one of this many device mutants of the case, none could be
    #: named (the saved case may pass on its own)
    unlocated: int = 0


@dataclass
class FuzzResult:
    checked: int = 0
    elapsed: float = 0.0
    shrink_steps: int = 0
    shrink_seconds: float = 0.0
    replayed: int = 0
    #: generated cases checked up to and including the first failure
    found_after: int = 0
    #: Ctrl-C while shrinking: the finding is the smallest case so far
    interrupted: bool = False
    #: diffcheck failed while shrinking (a bug of its own): the finding is the smallest so far
    broken: BaseException | None = None
    finding: Finding | None = None
    saved: Path | None = None
    #: device-made mutants checked besides the drawn cases (fuzz --fast)
    mutants: int = 0
    #: the domain partitions the drawn cases and scenarios reached (diffcheck.coverage)
    coverage: object = None

    @property
    def rate(self) -> float:
        """Checks per second: drawn cases and device mutants alike."""
        return (self.checked + self.mutants) / self.elapsed if self.elapsed > 0 else 0.0

    def counted(self) -> str:
        """What was checked, in words."""
        return _counted(self.checked, self.mutants)


def _counted(cases: int, mutants: int) -> str:
    return f"{cases} cases" + (f" and {mutants:,} device mutants" if mutants else "")


class Checker:
    """Runs one target through every selected mode, in a worker process kept for the whole
    run (a fault or time-out replaces it), or in this process with isolation ``none``."""

    def __init__(self, impl: Implementation, modes: list[Mode], settings: RunSettings,
                 scenario_modes: list[Mode] | None = None) -> None:
        from diffcheck.executors import InProcess
        from diffcheck.worker import Worker

        self.impl, self.modes, self.settings = impl, modes, settings
        #: the modes a scenario runs in, when not ``modes`` (cases and scenarios drawn alike)
        self.scenario_modes = scenario_modes
        #: device mutants the screened pass rows so far covered (fuzz --fast)
        self.mutants = 0
        self.worker = Worker(settings) if settings.isolation == "process" else None
        self.local = InProcess(settings) if self.worker is None else None

    def rows(self, target: Case | Scenario,
             modes: list[Mode] | None = None) -> list[ReportRow]:
        if modes is None:
            modes = self.scenario_modes if isinstance(target, Scenario) and \
                self.scenario_modes is not None else self.modes
        rows: list[ReportRow] = []
        for mode in modes:
            if mode.rows(target):
                outcomes = self._run(Job(target, self.impl, mode))
                self.mutants += sum(outcome.mutants for outcome in outcomes)
                rows += [outcome.row for outcome in outcomes]
        return rows

    def _run(self, job: Job):
        if self.local is not None:
            outcomes = self.local.run(job)
            if self.local.lost is not None:  # a dead context: nothing more can run here
                raise DeviceLost(outcomes)
            return outcomes
        worker = self.worker
        worker.send(job)
        while True:
            left = self.settings.timeout - (time.perf_counter() - worker.sent)
            outcomes = worker.outcome(
                worker.conn.poll(max(left, 0.0) if self.settings.timeout > 0 else None))
            if outcomes is not None:
                return outcomes

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()


class DeviceLost(Exception):
    """In this process (``--isolation none``) a case faulted the device: the fuzz run ends
    with that case as its finding (a worker process would have been replaced instead)."""

    def __init__(self, outcomes) -> None:
        super().__init__("the device faulted")
        self.rows = [outcome.row for outcome in outcomes]


class _Broken(BaseException):
    """diffcheck itself failed while checking a case (not the kernel): carried past
    Hypothesis, which would otherwise shrink it as if it were a finding."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Found(Exception):
    """A drawn record failed (raised for Hypothesis, which then shrinks it)."""


class _Spent(BaseException):
    """The search budget is spent: Hypothesis lets a BaseException through without shrinking."""


def generated_target(spec: PathSpec, drawn, fill: int) -> Case | Scenario:
    """The case (a Batch) or scenario (a Plan) a drawn record stands for."""
    from diffcheck.casefile import case_problems
    from diffcheck.fixtures.generated import Plan

    gen = spec.generators()
    if isinstance(drawn, Plan):
        target = gen.scenario(drawn).case(spec.name, "", drawn.seed, fill)
        steps = target.steps
    else:
        target = gen.layout(drawn).case(spec.name, "", drawn.seed, fill)
        steps = [target]
    for step in steps:
        problems = case_problems(step)
        if problems:  # a generator bug, not the kernel's
            raise RuntimeError(f"generated case {step.name} is malformed: {problems[0]} "
                               f"({drawn!r})")
    return target


def strategy_for(spec: PathSpec, scenarios: bool, limits, mixed: bool = False):
    """The Hypothesis strategy of the path: batches, replay plans, or (``mixed``) either."""
    from hypothesis import strategies as st

    from diffcheck.fixtures.derived import replay_spoilers
    from diffcheck.fixtures.generated import batches, plans

    if spec.generators is None:
        raise UsageError(f"path {spec.name} generates no cases (its plug-in declares no "
                         "generators); fuzz a path that does (`diffcheck list paths`)")
    from diffcheck.domain import domain_of

    gen = spec.generators()
    if scenarios and gen.scenario is None:
        raise UsageError(f"path {spec.name} generates no replay scenarios; fuzz it with "
                         "--mode eager or capture")
    domain = domain_of(spec)
    calls = batches(gen, limits, domain)
    if gen.scenario is None or not (mixed or scenarios):
        return calls
    replays = plans(gen, limits, domain, replay_spoilers(domain, gen))
    return st.one_of(calls, replays) if mixed else replays


def generates_scenarios(spec: PathSpec) -> bool:
    return spec.generators is not None and spec.generators().scenario is not None


def _steer(spec: PathSpec, target: Case | Scenario, coverage, impl=None) -> None:
    """Count what a drawn target reached of the domain (with the scalars ``impl`` is given),
    and steer Hypothesis toward draws that reach partitions not seen yet (``target()``: more
    new ones score higher)."""
    from hypothesis import target as steer

    from diffcheck.calls import contract_of
    from diffcheck.domain import exercised

    mode = "replay" if isinstance(target, Scenario) else "eager"
    first = target.steps[0] if isinstance(target, Scenario) else target
    scalars = contract_of(spec, impl, first, None).scalars if impl is not None else None
    keys = exercised(spec, target, scalars=scalars)
    new = keys - coverage.of_path(spec.name)
    coverage.add(spec.name, mode, keys)
    steer(float(len(new)), label="domain partitions not reached before")


@dataclass
class _State:
    """Where a search stands: the first failure found, the smallest so far, and since when."""

    #: the status of the first failure: shrinking keeps it
    status: str | None = None
    #: (drawn record, its worst row) of the first failing case and of the smallest so far
    first: tuple | None = None
    last: tuple | None = None
    #: when the first failure was found (shrinking's clock)
    found_at: float | None = None
    #: a case took the device down (isolation none): nothing more can run
    lost: bool = False


def worst_failing(rows: list[ReportRow], fail_on: frozenset[Status]) -> ReportRow | None:
    bad = [row for row in rows if Status(row.status) in fail_on]
    return max(bad, key=lambda row: Status(row.status).severity, default=None)


def fuzz(
    spec: PathSpec,
    checker: Checker,
    scenarios: bool,
    budget: Budget,
    seed: int,
    draws,
    fill: int,
    fail_on: frozenset[Status],
    shrink_seconds: float = 60.0,
    progress: Callable[[str], None] = lambda line: None,
    mixed: bool = False,
    keep: Callable[[Case | Scenario], None] = lambda target: None,
) -> FuzzResult:
    """Generate, check, and shrink the first failure (see the module docstring); ``mixed``
    draws cases and replay scenarios alike. ``draws`` is the size of the cases (Limits), or
    kinds of draws (Draws) the search takes turns with, TURN_SECONDS each. ``keep`` gets the
    failing case when it is found and each smaller one shrinking finds, so a run stopped at
    any point (SIGTERM, a second Ctrl-C, a crash) has saved the smallest so far."""
    turns = list(draws) if isinstance(draws, (list, tuple)) else [Draws("", draws)]
    search = _Search(spec, checker, budget, fill, fail_on, shrink_seconds, progress, keep)
    result, state = search.result, search.state
    try:
        turn = 0
        while turns:
            kind = turns[turn % len(turns)]
            search.take_turn(kind, TURN_SECONDS if len(turns) > 1 else None)
            try:  # each turn a search of its own, seeded by the turn (the first by --seed)
                _search_once(spec, scenarios, kind.limits, mixed, search.check,
                             seed if turn < len(turns) else f"{seed}:{turn}")
            except _TurnOver:
                turn += 1
                continue
            turns.remove(kind)  # Hypothesis drew all this kind has: the others go on
    except (_Spent, _Found):
        pass
    except KeyboardInterrupt:  # keep what was found: the smallest failing case so far
        if state.last is None:
            raise
        result.interrupted = True
    except _Broken as broken:  # diffcheck's own failure: keep a finding, then say it
        if state.last is None:
            raise broken.error from None
        result.broken = broken.error
    finally:
        result.elapsed = time.perf_counter() - search.began
        result.checked = len(search.checked)
    if state.last is not None:
        result.finding = search.finding()
        result.shrink_seconds = time.perf_counter() - state.found_at
        result.elapsed = state.found_at - search.began
    return result


def _search_once(spec: PathSpec, scenarios: bool, limits, mixed: bool,
                 check: Callable[[object], None], seed) -> None:
    """One Hypothesis search over the path's draws of ``limits``, each checked by ``check``."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hypothesis_seed

    run = given(strategy_for(spec, scenarios, limits, mixed))(check)
    run = settings(max_examples=10**9, deadline=None, database=None, derandomize=False,
                   suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet,
                   report_multiple_bugs=False,
                   phases=[Phase.explicit, Phase.generate, Phase.shrink])(run)
    hypothesis_seed(seed)(run)()


class _TurnOver(BaseException):
    """A turn of one kind of draws is over (nothing found): the next kind's search starts."""


class _Search:
    """One search's checks, as Hypothesis calls them: every drawn record checked once, the
    first failure kept, then shrinking until its time is up."""

    def __init__(self, spec: PathSpec, checker: Checker, budget: Budget, fill: int,
                 fail_on: frozenset[Status], shrink_seconds: float,
                 progress: Callable[[str], None], keep: Callable[[Case | Scenario], None]):
        from diffcheck.coverage import Coverage

        self.spec, self.checker, self.budget, self.fill = spec, checker, budget, fill
        self.fail_on, self.shrink_seconds = fail_on, shrink_seconds
        self.progress, self.keep = progress, keep
        run_settings = getattr(checker, "settings", None)
        self.result = FuzzResult(coverage=Coverage(gpu=run_settings is not None
                                                   and run_settings.device.type != "cpu"))
        self.checked: dict[object, list[ReportRow]] = {}
        #: drawn records whose failure is their intended batch's (see rows_of)
        self.intended: set = set()
        self.state = _State()
        self.began = self.shown = time.perf_counter()
        #: the modes checking the current turn's draws (None: the checker's), and when the
        #: turn ends (None: with the budget)
        self.modes: list[Mode] | None = None
        self.turn_ends: float | None = None

    def take_turn(self, kind: Draws, seconds: float | None) -> None:
        """Check ``kind``'s draws from now on, for ``seconds`` (None: until the budget)."""
        self.modes = None if kind.modes is None else list(kind.modes)
        self.turn_ends = None if seconds is None else time.perf_counter() + seconds

    def report(self, now: float) -> None:
        """A progress line, at most every PROGRESS_EVERY seconds."""
        if now - self.shown < PROGRESS_EVERY:
            return
        self.shown = now
        result, state = self.result, self.state
        write_progress(len(self.checked) + result.mutants, now - self.began,
                       state.found_at is not None)
        if state.found_at is None:
            elapsed = now - self.began
            done = len(self.checked) + result.mutants
            self.progress(f"fuzz: {_counted(len(self.checked), result.mutants)} in "
                          f"{elapsed:.0f} s ({done / max(elapsed, 1e-9):,.1f} checks/s), no "
                          "failure yet")
        else:
            self.progress(f"fuzz: shrinking the {state.status}: {result.shrink_steps} steps, "
                          f"{now - state.found_at:.0f} s; smallest so far: "
                          f"{state.last[0].describe()[:120]}")

    def rows_of(self, drawn) -> list[ReportRow] | None:
        """The rows of a drawn record (checked once; None once shrinking's time is up)."""
        rows = self.checked.get(drawn)
        if rows is not None:
            return rows
        now, state, result = time.perf_counter(), self.state, self.result
        if state.found_at is None and self.budget.spent(now - self.began, len(self.checked)):
            raise _Spent
        if state.found_at is None and self.turn_ends is not None and now >= self.turn_ends:
            raise _TurnOver
        if state.found_at is not None:
            if now - state.found_at >= self.shrink_seconds:
                return None  # shrinking is over: the smallest so far stays
            result.shrink_steps += 1
        mutants = getattr(self.checker, "mutants", 0)
        try:
            target = generated_target(self.spec, drawn, self.fill)
            rows = self.checker.rows(target, self.modes)
            rows = self._intended_rows(drawn, target, rows)
        except DeviceLost as lost:  # the fault is the finding; nothing more can run
            rows = lost.rows
            state.lost = True
        except Exception as e:
            raise _Broken(e) from e
        self.checked[drawn] = rows
        if state.found_at is None:
            result.mutants += getattr(self.checker, "mutants", 0) - mutants
            _steer(self.spec, target, result.coverage, getattr(self.checker, "impl", None))
        self.report(time.perf_counter())
        return rows

    def _intended_rows(self, drawn, target: Case | Scenario,
                       rows: list[ReportRow]) -> list[ReportRow]:
        """A stale case's output differs from its intended batch's (stale_sensitive, no
        failure of its own): its intended batch is checked too, as a well-formed call. A
        kernel wrong on that batch (a page size, a table the stale draw came with) is then a
        failure, where otherwise half the draws could never show it."""
        if (not isinstance(target, Case) or target.well_formed
                or worst_failing(rows, self.fail_on) is not None
                or not any(row.status == Status.STALE_SENSITIVE.value for row in rows)):
            return rows
        try:
            fresh = self.checker.rows(target.fresh(), self.modes)
        except DeviceLost:  # the intended batch faulted the device: it is the finding
            self.intended.add(drawn)
            raise
        if worst_failing(fresh, self.fail_on) is None:
            return rows
        self.intended.add(drawn)
        return fresh

    def target_of(self, drawn) -> Case | Scenario:
        """What a drawn record's rows judged: its case, or the intended batch of it."""
        target = generated_target(self.spec, drawn, self.fill)
        if drawn not in self.intended:
            return target
        fresh = target.fresh()
        fresh.description = f"the intended batch of a stale draw ({target.description})"
        return fresh

    def check(self, drawn) -> None:
        """Hypothesis' test: raises _Found for a failure of the first kind found."""
        rows = self.rows_of(drawn)
        if rows is None:
            return
        state = self.state
        worst = worst_failing(rows, self.fail_on)
        if worst is None and state.lost:
            raise _Broken(DeviceError("a case faulted the device in this process "
                                      "(--isolation none) and fault is not in --fail-on; "
                                      "rerun with --isolation process"))
        if worst is None:
            return
        found = state.status is None
        if found:
            state.status, state.first = worst.status, (drawn, worst)
            state.found_at, self.result.found_after = time.perf_counter(), len(self.checked)
        elif worst.status != state.status:
            return  # another kind of failure: shrinking keeps the first
        state.last = (drawn, worst)
        try:  # on disk before anything (a progress line, a stop) can come in between
            self.keep(self.target_of(drawn))
        except Exception as e:  # the folder cannot take it: say so, keep what is known
            raise _Broken(e) from e
        if found:
            took = state.found_at - self.began
            done = len(self.checked) + self.result.mutants
            self.progress(f"fuzz: {worst.status} at generated case {len(self.checked)} "
                          f"({took:.0f} s, {done / max(took, 1e-9):,.1f} checks/s); saved, "
                          "shrinking it")
        if state.lost:
            raise _Spent  # no shrinking on a dead device: this case it is
        raise _Found(worst.status)

    def finding(self) -> Finding:
        """The smallest failing case found, its rows, and the first one."""
        drawn, row = self.state.last
        first, first_row = self.state.first
        target = self.target_of(drawn)
        rows = self.checked[drawn]
        unlocated = 0
        mutating = max((getattr(m, "mutants", 0) for m in self.modes or self.checker.modes),
                       default=0)
        if (mutating and row.status in (Status.FAULT.value, Status.TIMEOUT.value)
                and isinstance(target, Case) and row.mutant is None):
            # under --fast a fault or time-out may come from one of the case's device mutants
            # (queued back to back, or the worker was stopped with them): find which
            located = locate_mutant(self.checker, target, mutating)
            if located is not None:
                row, rows = located, [located]
            else:
                unlocated = mutating
        if row.mutant is not None and isinstance(target, Case):  # the mutant that failed
            target = mutant(target, row.mutant)
        return Finding(drawn, target, row, rows, first, first_row, unlocated=unlocated)


def locate_mutant(checker: Checker, target: Case, count: int) -> ReportRow | None:
    """The row of the device mutant of ``target`` that faulted the device or ran past the
    time limit: its mutants again in a fresh worker, each waited for and each announced
    before it runs (diffcheck.heartbeat), so a fault, a time-out or a dead worker names its
    mutant. A time-out may be the sum of many mutants' time: the one named is checked alone
    to keep it. None when none does it again."""
    from diffcheck.fastcheck import Screened
    from diffcheck.modes import Eager

    stops = (Status.FAULT.value, Status.TIMEOUT.value)
    try:
        rows = checker.rows(target, [Screened(count, one_by_one=True)])
    except DeviceLost as lost:
        rows = lost.rows
    named = next((r for r in rows if r.status in stops and r.mutant is not None), None)
    if named is None or named.status == Status.FAULT.value:
        return named
    try:
        again = checker.rows(mutant(target, named.mutant), [Eager()])
    except DeviceLost as lost:
        again = lost.rows
    return next((r for r in again if r.status in stops), None)


def replay_saved(folder: Path, spec: PathSpec, checker: Checker, fail_on: frozenset[Status],
                 fill: int | None, modes: list[Mode] | None = None,
                 warn: Callable[[str], None] = lambda line: None,
                 ) -> tuple[int, Finding | None]:
    """Run the saved cases of the path in ``folder`` first, in ``modes`` (the full check:
    never screened): (how many ran, the first that still fails). A file that does not load
    is skipped with a warning, so one bad file never blocks the folder."""
    from diffcheck.casefile import load_any
    from diffcheck.errors import CaseFileError

    if not folder.is_dir():
        return 0, None
    count = 0
    for file in sorted(folder.glob("*.npz")):
        try:
            target = load_any(file)
        except CaseFileError as e:
            warn(f"fuzz: skipped {e}")
            continue
        if target.path != spec.name:
            continue
        if fill is not None:
            for step in target.steps if isinstance(target, Scenario) else [target]:
                step.fill = fill
        try:
            found = checker.rows(target, modes)
        except DeviceLost as lost:
            found = lost.rows
        if found:
            count += 1
        worst = worst_failing(found, fail_on)
        if worst is not None:
            return count, Finding(None, target, worst, found, None, worst, replayed=True)
    return count, None


def explain(finding: Finding, impl: str, result: FuzzResult) -> str:
    """One paragraph for people: what failed, on what, how small it got."""
    row = finding.row
    mode = f" in {row.mode} mode" if row.mode != "eager" else ""
    if finding.replayed:
        return (f"{impl} still fails the saved case {finding.target.name} ({row.status}{mode}): "
                f"{row.detail}")
    what = "scenario" if isinstance(finding.target, Scenario) else "case"
    text = (f"{impl} fails a generated {row.path} {what} ({row.status}{mode}): {row.detail}. "
            f"The smallest failing {what} found: {finding.drawn.describe()}"
            f"{_mutant_words(getattr(finding.target, 'mutant', None))}.")
    if finding.unlocated:
        text += (f" It came from one of its {finding.unlocated} device mutants, which could "
                 "not be named again (run one by one, none did it): the saved case may pass "
                 "on its own; rerun fuzz with the same seed to see it again.")
    if finding.first != finding.drawn or finding.first_row.case_id != row.case_id:
        text += (f" First found on {finding.first.describe()}"
                 f"{_mutant_words(finding.first_row.mutant)} (generated case "
                 f"{result.found_after}), then shrunk in {result.shrink_steps} steps "
                 f"({result.shrink_seconds:.0f} s).")
    return text


def _mutant_words(index: int | None) -> str:
    return "" if index is None else f", its device mutant {index}"


def _safe(impl: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", impl.rpartition(":")[2] or impl)[:60]


def saved_name(finding: Finding, impl: str) -> str:
    """``<path>-<status>-<function>-<name>.npz``, file-system safe."""
    return f"{finding.row.path}-{finding.row.status}-{_safe(impl)}-{finding.target.name}.npz"


def shrinking_name(path: str, impl: str) -> str:
    """Where the smallest failing case so far is kept while shrinking runs (replaced by the
    finding's own file once it ends; left, and replayed next time, when the run is killed);
    each search of fuzz --devices has its own."""
    slot = pinned_slot()
    return f"{path}-shrinking-{_safe(impl)}{f'-device{slot}' if slot else ''}.npz"


@dataclass
class FuzzOptions:
    """What `diffcheck fuzz` was asked for, as the command line says it (see its --help)."""

    impl: str
    path: str | None = None
    mode: str = "auto"
    budget: str = "60s"
    seed: int = 0
    shrink_time: float = 60.0
    save_to: Path = Path("fuzz-cases")
    size: str = "auto"
    device: str = "auto"
    invalid_fill: int | None = None
    fail_on: str = ""
    interpreter_check: bool = True
    configs: str = "all"
    instrument: bool | None = None
    fillings: int = 0
    timeout: float = TIMEOUT
    isolation: str = "auto"
    fast: bool = False
    mutants: int | None = None
    devices: str | None = None
    keep_going: bool = False


@dataclass
class _Setup:
    """A fuzz run set up from its options: what to draw, where, and how it is checked."""

    spec: PathSpec
    implementation: Implementation
    settings: RunSettings
    modes: list[Mode]
    full_modes: list[Mode]
    scenario_modes: list[Mode] | None
    scenarios: bool
    mixed: bool
    budget: Budget
    #: what is drawn: one kind, or kinds taken in turns (see fuzz)
    draws: tuple[Draws, ...]
    fill: int
    failing: frozenset[Status]


def _check_plain_options(o: FuzzOptions) -> None:
    """The options that need nothing else to be checked (Hypothesis installed, the folder
    writable), before anything is set up."""
    from diffcheck.executors import check_fill_and_timeout
    from diffcheck.session import check_folder

    try:
        import hypothesis  # noqa: F401
    except ImportError:
        raise UsageError("diffcheck fuzz draws and shrinks cases with Hypothesis, which is not "
                         "installed: pip install 'diffcheck[fuzz]' (or hypothesis)") from None
    check_fill_and_timeout(o.invalid_fill, o.timeout)
    check_folder("--save-to", o.save_to)  # before the search, not after it
    if not 0 <= o.shrink_time < float("inf"):
        raise UsageError(f"--shrink-time must be 0 or more seconds, got {o.shrink_time:g}")
    if o.size not in ("auto", "small", "production"):
        raise UsageError(f"--size must be auto, small or production, got '{o.size}'")


def _path_of(o: FuzzOptions) -> str:
    """The path the fuzzed implementation follows: --path, or a registered name's own."""
    from diffcheck.paths import known_paths

    if o.path is not None:
        return o.path
    prefix = o.impl.partition(":")[0]
    if prefix not in known_paths() or ".py" in o.impl or o.impl.count(":") != 1:
        raise UsageError(f"--impl {o.impl}: say which contract it follows with --path "
                         f"({', '.join(known_paths())})")
    return prefix


def _set_up(o: FuzzOptions) -> _Setup:
    """Check the options (a usage error before anything runs) and set the search up."""
    from diffcheck import backend, modes
    from diffcheck.executors import settings_for
    from diffcheck.fixtures.generated import CPU_LIMITS, GPU_LIMITS
    from diffcheck.impls import find
    from diffcheck.mutants import SPAN
    from diffcheck.paths import get_path
    from diffcheck.status import parse_fail_on

    failing = parse_fail_on(o.fail_on)
    _check_plain_options(o)
    budget = Budget.parse(o.budget)
    chosen = modes.select("eager" if o.mode == "auto" else o.mode)
    spec = get_path(_path_of(o))
    scenarios = any(m.name == "replay" for m in chosen)
    # the default draws replay scenarios too (a launcher that freezes what it saw at capture
    # fails only there); --fast screens eager calls alone
    mixed = o.mode == "auto" and not o.fast and generates_scenarios(spec)
    scenario_modes = modes.select("replay") if mixed else None
    strategy_for(spec, scenarios, CPU_LIMITS)  # refuses a path it cannot fuzz
    dev = backend.resolve(o.device)
    backend.prepare(dev)
    if o.fast and (dev.type != "cuda" or [m.name for m in chosen] != ["eager"]):
        raise UsageError("--fast screens eager checks with captured CUDA graphs: on a GPU "
                         "with --mode eager (on the CPU the interpreter sandbox must see every "
                         "access)")
    if o.mutants is not None and (not 0 <= o.mutants < SPAN or not o.fast):
        raise UsageError(f"--mutants is a number of device-made mutants per case (0 to "
                         f"{SPAN - 1}) and needs --fast")
    full_modes = chosen + (scenario_modes or [])  # what saved regression cases replay in
    plain = tuple(chosen)
    if o.fast:
        from diffcheck.fastcheck import Screened

        chosen = [Screened(FAST_MUTANTS if o.mutants is None else o.mutants)]
    implementation = find(o.impl, spec.name)
    if implementation.path != spec.name:
        raise UsageError(f"--impl {o.impl} follows path {implementation.path}, not {spec.name}")
    if o.keep_going and not o.devices:
        raise UsageError("--keep-going lets the other searches of --devices go on: give "
                         "--devices too")
    settings = settings_for([implementation], dev, o.seed, o.invalid_fill, o.interpreter_check,
                            o.fillings, o.timeout, o.isolation, workers=0 if o.devices else 1,
                            instrument=o.instrument, configs=o.configs, devices=o.devices)
    small = Draws("small", CPU_LIMITS, plain if o.fast else None)
    production = Draws("production", GPU_LIMITS)
    if o.size == "auto" and dev.type != "cpu":
        # production sizes alone draw a few cases a minute: structure (page sizes, tables,
        # stale forms) comes from small draws, checked in full (not worth a graph a shape)
        draws = (small, production)
    else:
        draws = (production,) if o.size == "production" else (small,)
    return _Setup(spec, implementation, settings, chosen, full_modes, scenario_modes,
                   scenarios, mixed, budget, draws,
                   spec.fill if o.invalid_fill is None else o.invalid_fill, failing)


def run(o: FuzzOptions, say: Callable[[str], None], show: Callable[[str], None]) -> ExitCode:
    """`diffcheck fuzz` from its options to its exit code: replay the saved regression cases,
    search, shrink and save a failure. ``say`` gets progress lines (stderr), ``show`` the
    result (stdout)."""
    from diffcheck import backend
    from diffcheck.casefile import save_case, save_scenario

    search = _set_up(o)
    if search.settings.devices:
        from diffcheck.fuzz_devices import run_on_devices

        return run_on_devices(o, search.settings.devices, search.settings.device, say, show)
    spec, shown = search.spec, o.impl  # as the user wrote it: reproduce runs from there
    checker = Checker(search.implementation, search.modes, search.settings,
                      search.scenario_modes)
    result: FuzzResult | None = None
    try:
        replayed, stuck = replay_saved(o.save_to, spec, checker, search.failing,
                                       o.invalid_fill, search.full_modes, say)
        if stuck is not None:
            say(f"fuzz: a saved regression case still fails ({stuck.row.status})")
            show(explain(stuck, shown, FuzzResult()))
            show(f"reproduce: {stuck.row.reproduce}")
            return ExitCode.FAILURES
        if replayed:
            say(f"fuzz: {replayed} saved cases of {spec.name} in {o.save_to} pass")
        drawn = ("cases (eager) and scenarios (replay)" if search.mixed else
                 f"{'scenarios' if search.scenarios else 'cases'} "
                 f"({', '.join(m.name for m in search.modes)})")
        say(f"fuzz: {shown} on {spec.name} on {backend.describe(search.settings.device)}, "
            f"budget {search.budget}, seed {o.seed}, {drawn} {_sizes(search.draws)}")
        provisional = o.save_to / shrinking_name(spec.name, shown)

        def keep(target: Case | Scenario) -> None:
            for step in target.steps if isinstance(target, Scenario) else [target]:
                step.suite = "fuzz"
            (save_scenario if isinstance(target, Scenario) else save_case)(target, provisional)

        result = fuzz(spec, checker, search.scenarios, search.budget, o.seed, search.draws,
                      search.fill, search.failing, o.shrink_time, say, search.mixed, keep)
    finally:
        with deferred_stops():  # a finding in hand is saved whole before a stop lands
            checker.close()
            if result is not None and result.finding is not None:
                _save_finding(o, spec, result, provisional, search.settings.device.type, show)
    for line in result.coverage.lines() if result.coverage else ():
        say(f"fuzz: {line}")
    if result.finding is None:
        show(f"fuzz: no failure: {result.counted()} in {result.elapsed:.0f} s "
             f"({result.rate:,.1f} checks/s)")
        return ExitCode.OK
    if result.broken is not None:
        raise result.broken  # diffcheck's own failure while shrinking: exit 3, said so
    if result.interrupted:
        raise Interrupted("interrupted while shrinking: saved the smallest failing case so far")
    return ExitCode.FAILURES


def _sizes(draws: tuple[Draws, ...]) -> str:
    """How large the drawn cases get, in words."""
    def most(kind: Draws) -> str:
        return f"up to {kind.limits.requests + kind.limits.bulk} requests"

    if len(draws) == 1:
        return most(draws[0])
    turns = ", ".join(f"{kind.name} ({most(kind)}"
                      f"{', checked in full' if kind.modes is not None else ''})"
                      for kind in draws)
    return f"in turns of {TURN_SECONDS:g} s: {turns}"


def _save_finding(o: FuzzOptions, spec: PathSpec, result: FuzzResult, provisional: Path,
                  device: str, show: Callable[[str], None]) -> None:
    """Save the shrunk failure under its final name and print it with its reproduce line."""
    from diffcheck.casefile import save_case, save_scenario

    finding, shown = result.finding, o.impl
    file = o.save_to / saved_name(finding, shown)
    show(f"fuzz: {finding.row.status} after {result.found_after} generated cases "
         f"({result.elapsed:.0f} s); shrunk in {result.shrink_steps} steps "
         f"({result.shrink_seconds:.0f} s)")
    show(explain(finding, shown, result))
    target = finding.target
    for step in target.steps if isinstance(target, Scenario) else [target]:
        step.suite = "fuzz"
    (save_scenario if isinstance(target, Scenario) else save_case)(target, file)
    if provisional != file:
        provisional.unlink(missing_ok=True)
    show(f"saved: {file}")
    show(f"reproduce: {shlex.join(_reproduce_words(o, spec, file, finding, device))}")


def _reproduce_words(o: FuzzOptions, spec: PathSpec, file: Path, finding: Finding,
                     device: str) -> list[str]:
    """The compare command that replays a saved finding with the options that found it."""
    words = ["diffcheck", "compare", "--cases", str(file), "--impl", o.impl, "--path",
             spec.name, "--mode", finding.row.mode, "--device", device]
    if o.invalid_fill is not None:
        words += ["--invalid-fill", str(o.invalid_fill)]
    if not o.interpreter_check:
        words.append("--no-interpreter-check")
    return [*words, *(["--fillings", str(o.fillings)] if o.fillings else []),
            *(["--timeout", f"{o.timeout:g}"] if o.timeout != TIMEOUT else []),
            *(["--fail-on", o.fail_on] if o.fail_on else []),
            *(["--isolation", o.isolation] if o.isolation != "auto" else [])]
