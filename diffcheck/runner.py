"""One job, start to finish: stage, run the implementation, compare -> one report row.

A failing kernel is a status, never an exception: only the implementation call is guarded,
so an exception anywhere else is a bug in diffcheck and propagates (exit 3). Where a job runs
(this process or a worker) and its time limit are diffcheck.executors' business.
"""

from __future__ import annotations

import contextlib
import dataclasses
import dis
import gc
import importlib.util
import itertools
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from diffcheck import backend, plausible, tags, tuning
from diffcheck.buffers import CONSTANT, POISON, Filling, Staged, stage
from diffcheck.calls import Contract, bind, contract_of
from diffcheck.case import Case, Scenario, first_case
from diffcheck.compare import (
    RegionLocator,
    compare_output,
    diverged,
    nondeterministic,
)
from diffcheck.errors import CaseTimeout, CaseTooLarge
from diffcheck.findings import Comparison, Finding, FoundBy
from diffcheck.instrument import Instrumented
from diffcheck.job import Job
from diffcheck.modes import LARGEST, Step, requests_of, second_look
from diffcheck.oob import extents, from_fillings, from_sandbox
from diffcheck.outcome import Outcome, ended, is_device_fault, one_line
from diffcheck.paths import get_path
from diffcheck.report import make_row
from diffcheck.sandbox import Bounds, Sandbox
from diffcheck.settings import JUDGED_RUNS, RERUNS, RUNS, RunPlan, RunSettings
from diffcheck.status import DEFAULT_FAIL_ON, Status


def reference(case: Case, contract: Contract, out_size: int,
              settings: RunSettings) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{output: (expected, mask)} of the case's intended batch on the run's device, computed
    once per case and contract."""
    key = (f"{case.source}|{case.case_id}", contract.key())
    if key not in settings._references:
        spec = get_path(case.path)
        intended = case.views(settings.on_device(case, intended=True))
        settings._references[key] = spec.expected(intended, contract.k, contract.fill,
                                                  contract.scalars, out_size)
    return settings._references[key]


def locators(case: Case) -> dict[str, RegionLocator]:
    """Where an element of each output is, in words, from the intended batch's regions."""
    spec = get_path(case.path)
    intended = case.intended_inputs()
    starts, ends = spec.row_bounds(intended, case.k)
    found = {"out": RegionLocator(starts, ends, spec.row_label)}
    for extra in spec.extras:
        rows = extra.size(intended)
        index = torch.arange(rows, dtype=torch.int64)
        found[extra.name] = RegionLocator(index, index + 1, f"{extra.name} of {spec.row_label}",
                                          columns=False)
    return found


@dataclass
class Run:
    plan: RunPlan
    #: 1 for the first run of a job
    number: int
    steps: list[Step]

    def label(self, settings: RunSettings) -> str:
        return f"run {self.number}: {self.plan.label(settings)}"


def guard(step: Step, action: Callable[[], object]) -> bool:
    """Run an implementation call; what it raises becomes the step's error (a status, not a
    crash). Only diffcheck's own interruptions pass through."""
    try:
        action()
        return True
    except (KeyboardInterrupt, CaseTimeout):
        raise
    except SystemExit as e:  # it would have ended the process: a fault, like os._exit
        step.error = step.error or (f"the implementation called sys.exit({e.code!r}), which "
                                    "ends the process")
        step.ends_as = Status.FAULT
        return False
    except Exception as e:
        # the interpreter (triton 3.7+) wraps what a kernel's interpretation raised, a time
        # limit's or Ctrl-C's interruption included: those stay diffcheck's own
        if isinstance(e.__cause__, (KeyboardInterrupt, CaseTimeout)):
            raise e.__cause__ from None
        step.explicit = not step.error and raised_explicitly(e)
        if os.environ.get("DIFFCHECK_DEBUG"):  # the row keeps one line; stderr the rest
            traceback.print_exception(e)
        step.error = step.error or one_line(e)
        step.fault = step.fault or is_device_fault(e)
        if step.fault:
            step.ends_as = Status.FAULT
        return False
    except BaseException as e:  # noqa: B036 - a kernel's own BaseException is its error
        step.error = step.error or one_line(e)
        return False


#: packages whose own raise is not the implementation's refusal (a failed op inside them);
#: triton's found without importing it: importing triton before TRITON_INTERPRET=1 is set
#: (backend.prepare) makes triton.language's own jit helpers compiled ones, and a kernel's
#: tl.sum then fails in this process ("Cannot call @triton.jit'd outside of the scope")
_LIBRARIES = tuple(os.path.dirname(path) + os.sep for path in (
    torch.__file__, np.__file__, getattr(importlib.util.find_spec("triton"), "origin", None))
    if path)


def raised_explicitly(error: BaseException) -> bool:
    """The implementation's own code raised it (a ``raise`` or ``assert`` outside torch,
    Triton and numpy), not a failed operation (an index out of range, a device error): only
    such an exception refuses a malformed case."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    if code.co_filename.startswith(_LIBRARIES):  # torch._check(cond, msg) is a refusal
        return code.co_name in ("_check", "_check_with", "_check_value", "_check_type",
                                "_check_index")
    return dis.opname[code.co_code[tb.tb_lasti]] in ("RAISE_VARARGS", "RERAISE")


def _staged_for_run(case: Case, spec, settings: RunSettings, plan: RunPlan,
                    later: tuple) -> Staged:
    """The case staged for one run; then the last run's arena goes (see _hand_over). Where
    both do not fit, the last run's arena goes first and staging is tried again."""
    out_size = spec.workspace_size(case.intended_inputs(), case.k)

    def staging() -> Staged:
        return stage(settings.on_device(case), case.columns, out_size, settings.device,
                     plan.filling, spec.names, tuple(t.role for t in spec.tensors), later)

    try:
        staged = staging()
    except OUT_OF_MEMORY as e:
        if not settings._staged_before:
            raise too_large(case, settings.device, e) from None
        _release_before(settings, reclaim=True)
        try:
            staged = staging()
        except OUT_OF_MEMORY as again:
            raise too_large(case, settings.device, again) from None
    _release_before(settings)
    return staged


def _hand_over(steps: list[Step], settings: RunSettings) -> None:
    """What the judge needs of a run's stagings is their layout: each kept copy goes now, each
    arena once the next run has staged its own. Freed at once, the next run's arena would get
    the same addresses from the allocator, and a launcher that kept a pointer from its last
    call (a cached tensor, a graph of its own) would find the right data there."""
    stagings = {id(s.staged): s.staged for s in steps if s.staged is not None}
    for staged in stagings.values():
        staged.release(arena=False)
    settings._staged_before.extend(stagings.values())


def _release_before(settings: RunSettings, reclaim: bool = False) -> None:
    """Let the last run's stagings go (see _hand_over); ``reclaim`` (a staging that did not
    fit) also returns the cached device memory before staging is tried again."""
    for before in settings._staged_before:
        before.release()
    settings._staged_before.clear()
    if reclaim and settings.device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def _bounds_checker(spec, settings: RunSettings, plan: RunPlan) -> Bounds | None:
    """What sees every access of a run: the instrumented kernels (a GPU's default, whose
    programs then run in the plan's order), the interpreter sandbox (the CPU's), or nothing
    (red zones only)."""
    if settings.instrument:
        return Instrumented([], device=settings.device,
                            reverse=plan.order == "reversed"
                            and not backend.interpreted(settings.device))
    if settings.interpreter_check and backend.interpreted(settings.device):
        ids = {name: i for i, name in enumerate((*spec.names, "out"))}
        return Sandbox([], tag=lambda name, off: tags.encode(ids.get(name, len(ids)), off))
    return None


def _instrumentation_notes(sandbox: Instrumented, steps: list[Step]) -> list[str]:
    """What a row says about how its kernels were instrumented, or why they were not."""
    notes = list(sandbox.notes)
    if not sandbox.launches and not any(step.error for step in steps):
        notes.append("instrumented: the call made no Triton launch diffcheck could "
                     "instrument (torch code, or a compiled binary); its reads are found by "
                     "red zones only")
    return notes


def execute(job: Job, settings: RunSettings, contract: Contract, plan: RunPlan) -> list[Step]:
    """Run the job's mode once under ``plan``: sandboxed on the interpreter, or with the
    kernels instrumented (diffcheck.instrument; a GPU's default).

    Accesses between two Steps of the mode belong to the later one (setup work, such as
    warm-up and capture, to the first Step after it).
    """
    spec = get_path(job.case.path)
    tuning.install()  # launches counted (a refusal is a raise before the first)
    sandbox = _bounds_checker(spec, settings, plan)
    fn = settings.implementation(job.impl)
    # a replay loads later steps into the first step's staging: plausible margins fit them all
    later = tuple(step.inputs for step in job.case.steps[1:]) if (
        isinstance(job.case, Scenario) and plan.filling.plausible) else ()

    def stage_case(case: Case, seen: bool = True) -> Staged:
        staged = _staged_for_run(case, spec, settings, plan, later)
        if seen:  # a real batch of the run, not the larger one between capture and replay
            LARGEST[case.path] = max(LARGEST.get(case.path, 0), requests_of(case))
        if sandbox is not None:
            sandbox.extents.extend(extents(staged))
            sandbox._index()
        return staged

    steps: list[Step] = []
    with (backend.interpreter_as_on_gpu(settings.device),
          backend.program_order(settings.device, plan.order),
          sandbox if sandbox is not None else contextlib.nullcontext()):
        seen = 0
        for step in job.mode.run(job.case, stage_case,
                                 lambda st: bind(spec, job.impl, fn, st, contract),
                                 settings.device, guard,
                                 compare_eager=plan.filling == CONSTANT):
            if isinstance(sandbox, Instrumented) and not step.fault:
                sandbox.collect()
            if sandbox is not None:
                step.accesses = sandbox.accesses[seen:]
                seen = len(sandbox.accesses)
            steps.append(step)
            if step.fault:
                break
        if not any(step.fault for step in steps):
            for step in steps:  # a writer still running shows by now
                if step.staged is not None and step.staged.watched is step:
                    second_look(step.staged)
    _hand_over(steps, settings)
    if isinstance(sandbox, Instrumented) and steps:
        steps[0].notes += _instrumentation_notes(sandbox, steps)
    return steps


class RerunFaulted(Exception):
    """A rerun took the device down: the job ends as a fault like a first run that did."""

    def __init__(self, step: Step) -> None:
        super().__init__(step.error)
        self.step = step


def run_job(job: Job, settings: RunSettings) -> list[Outcome]:
    """Every row of the job's mode: one for a case, one per step for a replay scenario.

    Autotuned kernels (diffcheck.tuning): the job runs once per config (``settings.configs``),
    every autotuner reached pinned to its i-th; each row keeps its worst verdict and names the
    config that gave it. The heuristic values the calls took go in every row.

    A case too large for the device's free memory (diffcheck could not stage it: the upload,
    the red-zoned allocation and its copy) ends the job's rows as ``error`` saying so, and
    the run goes on with the next job; what the implementation allocates is its own error.
    """
    try:
        return _every_config(job, settings)
    except CaseTooLarge as e:
        why = str(e)
    gc.collect()  # outside the except clause: its traceback no longer holds the tensors
    if settings.device.type == "cuda":
        torch.cuda.empty_cache()
    return ended(job, settings, Status.ERROR, why, 0.0)


#: what running out of memory raises (torch's own for a device, Python's for the host)
OUT_OF_MEMORY = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError)


def too_large(case: Case, device: torch.device, error: BaseException) -> CaseTooLarge:
    """The one-line error of a case diffcheck could not stage for lack of memory."""
    size = sum(t.numel() * t.element_size() for t in case.inputs.values()) / 2**30
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return CaseTooLarge(f"diffcheck ran out of {device.type} memory staging this case "
                        f"({size:.2f} GiB of inputs, staged with a copy): {reason[:200]}; run "
                        "its suite on a device with more free memory, or leave the suite out")


def _every_config(job: Job, settings: RunSettings) -> list[Outcome]:
    """The job under each config the autotuners it reaches have (one run for a kernel
    without one)."""
    passes: list[list[Outcome]] = []
    tuned: list[bool] = []
    with tuning.recording() as reached:
        for index in itertools.count():
            if index and (index >= reached.configs() or index == settings.configs or
                          any(o.lost_device() for o in passes[-1])):
                break  # every config run (or the device is gone)
            before = tuning.tunings()
            with tuning.pinned(index):
                try:
                    passes.append(_run_once(job, settings))
                except CaseTooLarge:
                    if not passes:
                        raise
                    break  # the configs run so far keep their rows (``configs`` says how many)
            tuned.append(tuning.tunings() > before)
    return _worst_of_configs(passes, tuned, reached)


def _worst_of_configs(passes: list[list[Outcome]], tuned: list[bool],
                      reached: tuning.Choices) -> list[Outcome]:
    """Row by row, the outcome of the config with the worst verdict, with the config named
    and the other configs' verdicts in its detail. On a tie, a pass that ran its config
    alone wins over one where an autotuner also benchmarked every config (whose findings
    may be another config's), then the first."""
    taken = reached.heuristics_taken()
    heuristics = tuning.heuristics_text(taken)
    count = reached.configs() if reached.autotuners else 0
    outcomes = []
    for i, first in enumerate(passes[0]):
        tried = [(n, run[i]) for n, run in enumerate(passes) if i < len(run)]
        index, chosen = max(tried, key=lambda t: (Status(t[1].row.status).severity,
                                                   not tuned[t[0]], -t[0]))
        row = dataclasses.replace(chosen.row, heuristics=heuristics, configs=len(tried) * (
            count > 0))
        differ = len({o.row.status for _, o in tried}) > 1
        if count and (differ or Status(row.status) in DEFAULT_FAIL_ON):
            row.config = f"{index + 1}/{count} {reached.config_text(index)}"
            if tuned[index]:
                row.config += " (tuning benchmarked every config in this run)"
            others = [f"config {n + 1}: {o.row.status}" for n, o in tried if n != index]
            if others and any(o.row.status != row.status for _, o in tried):
                row.detail = f"{row.detail} | other configs: {', '.join(others)}"
        outcome = dataclasses.replace(chosen, row=row, heuristics=taken)
        if i == 0 and first.timing is not None:
            outcome.timing = {key: sum((run[0].timing or {}).get(key, 0.0) for run in passes
                                       if run) for key in first.timing}
        outcomes.append(outcome)
    return outcomes


def _run_once(job: Job, settings: RunSettings) -> list[Outcome]:
    """Every row of the job's mode, under the config pinned now.

    The plausible fillings (when asked for) run first and are judged at once, probes
    included: the constant and tagged margins are what a kernel that trusts a read turns
    into a wild address, and what the plausible runs found survives such a fault.
    """
    if getattr(job.mode, "screened", False):  # fuzz --fast: a captured check first
        from diffcheck.fastcheck import screened

        quick = screened(job, settings)
        if isinstance(quick, Case):  # a device mutant of the case: the full check on it
            job = dataclasses.replace(job, case=quick)
        elif quick is not None:
            return quick
    began = time.perf_counter()
    contract = contract_of(get_path(job.case.path), job.impl, first_case(job.case),
                           settings.fill_override)
    plans = RUNS[: max(1, settings.fillings)]
    judge = Judge(job, settings, contract, [])
    rows = job.mode.rows(job.case)
    early: list[list[Finding]] = [[] for _ in rows]
    try:
        for number, plan in enumerate(plans[JUDGED_RUNS:], start=JUDGED_RUNS + 1):
            judge.plausible_runs.append(Run(plan, number,
                                            execute(job, settings, contract, plan)))
            faulted = next((s for s in judge.plausible_runs[-1].steps if s.fault), None)
            if faulted is not None:  # nothing more may touch the device
                raise RerunFaulted(faulted)
        if judge.plausible_runs:
            early = [judge.across_plausible(i, case) for i, case in enumerate(rows)]
    except RerunFaulted as stop:
        return ended(job, settings, Status.FAULT, f"plausible filling: {stop.step.error}",
                     stop.step.elapsed_ms)
    for number, plan in enumerate(plans[:JUDGED_RUNS], start=1):
        judge.runs.append(Run(plan, number, execute(job, settings, contract, plan)))
        if any(step.error for step in judge.runs[-1].steps):
            break
    faulted = next((s for s in judge.runs[-1].steps if s.fault), None)
    if faulted is not None:  # the device is gone: nothing in its memory can be compared
        return _read_then_fault(job, settings, contract, early, judge.plausible_runs,
                                judge.runs[-1], faulted)
    try:
        outcomes = [judge.row(i, case, early[i]) for i, case in enumerate(rows)]
    except RerunFaulted as stop:  # the device is gone: nothing more can be compared
        return ended(job, settings, Status.FAULT, f"rerun of a filling: {stop.step.error}",
                     stop.step.elapsed_ms)
    if outcomes:
        done = judge.runs + judge.reruns + judge.plausible_runs + list(judge.probes.values())
        calls = sum(step.elapsed_ms for run in done for step in run.steps) / 1e3
        outcomes[0].timing = {"calls": calls, "references": judge.referencing,
                              "total": time.perf_counter() - began}
    return outcomes


def _read_then_fault(job: Job, settings: RunSettings, contract: Contract,
                     early: list[list[Finding]], plausible_runs: list[Run], run: Run,
                     faulted: Step) -> list[Outcome]:
    """Rows of a job whose constant or tagged run faulted the device. Where the plausible
    fillings found the read behind it, that read is the row's finding (as the interpreter
    sandbox reports it on CPU) and the fault a note; elsewhere the row is a fault."""
    if not any(f.kind == Status.OOB_READ for found in early for f in found):
        return ended(job, settings, Status.FAULT, faulted.error, faulted.elapsed_ms)
    note = (f"then {run.label(settings)} faulted the device (the read's red-zone "
            f"value used as an index): {faulted.error}")
    outcomes = []
    judge = Judge(job, settings, contract, [])
    judge.plausible_runs = plausible_runs
    for i, (case, found) in enumerate(zip(job.mode.rows(job.case), early, strict=True)):
        found = [*found, *judge.plausible_findings(i)]
        if any(f.kind == Status.OOB_READ for f in found):
            row = make_row(job, case, settings, contract, Comparison(0, tuple(found), (note,)),
                           "", faulted.elapsed_ms, len(RUNS))
            outcomes.append(Outcome(row, tuple(found), device_lost=True))
        else:
            outcomes += [dataclasses.replace(o, device_lost=True) for o in ended(
                job, settings, Status.FAULT, faulted.error, faulted.elapsed_ms)
                if o.row.case_id == case.case_id][:1]
    return outcomes


def _merge(findings: list[Finding]) -> list[Finding]:
    """One finding per kind and buffer: the earliest call or run that showed it."""
    kept: dict[tuple[Status, str], Finding] = {}
    for finding in findings:
        kept.setdefault((finding.kind, finding.buffer), finding)
    return list(kept.values())


def _during(finding: Finding, run: str) -> Finding:
    """The finding, saying which run showed it (the first run goes without saying)."""
    if not run:
        return finding
    when = f"{run}, {finding.when}" if finding.when else run
    return dataclasses.replace(finding, when=when)


class Judge:
    """Judges every run of a job, row by row: each run against the reference, the runs
    against each other (reads through the red zones, nondeterminism), every call's writes."""

    def __init__(self, job: Job, settings: RunSettings, contract: Contract,
                 runs: list[Run]) -> None:
        self.job, self.settings, self.contract, self.runs = job, settings, contract, runs
        #: reruns done so far, shared by the job's rows (a scenario reruns once, not per row)
        self.reruns: list[Run] = []
        #: the plausible fillings' runs (A, B), made before ``runs``
        self.plausible_runs: list[Run] = []
        #: runs under mixed plausible fillings, by filling (diffcheck.plausible)
        self.probes: dict[tuple[Filling, bool], Run] = {}
        self.referencing = 0.0

    def label(self, run: Run) -> str:
        """How a finding names the run that showed it; the first run goes without saying."""
        return "" if run.number == 1 else run.label(self.settings)

    def row(self, i: int, case: Case, early: list[Finding] | None = None) -> Outcome:
        """Row ``i``: every judged run's findings, then ``early`` (the plausible runs')."""
        steps = [(run, run.steps[i]) for run in self.runs[:JUDGED_RUNS] if i < len(run.steps)]
        if not steps:
            return Outcome(make_row(self.job, case, self.settings, self.contract,
                                    Comparison(0, ()), "not run: the mode ended before this row",
                                    0.0, 0))
        first = steps[0][1]
        # a plausible run's error counts too: on a GPU it made the process's first call
        failed = next(((run, step) for run, step in steps if step.error), None) or next(
            ((run, run.steps[i]) for run in self.plausible_runs
             if i < len(run.steps) and run.steps[i].error), None)
        findings: list[Finding] = []
        for run, step in steps:
            findings += [_during(f, self.label(run)) for f in step.findings]
            # an input the arena comparison already shows changed needs no second finding
            changed = {f.buffer for f in step.findings if f.kind == Status.INPUT_WRITE}
            findings += [_during(f, self.label(run)) for f in from_sandbox(step.accesses)
                         if not (f.kind == Status.INPUT_WRITE and f.buffer in changed)]
        checked, error, ends_as = 0, "", Status.ERROR
        if failed is not None:
            run, step = failed
            where = self.label(run)
            error = f"{where}: {step.error}" if where else step.error
            ends_as = step.ends_as
        if failed is None or failed[0] is not self.runs[0]:
            # the plausible runs' outputs are judged too: on a GPU they make the process's
            # first calls, and a kernel wrong only then must not go unseen
            judged = [(r, s) for r, s in steps if not s.error] + [
                (run, run.steps[i]) for run in self.plausible_runs
                if i < len(run.steps) and not run.steps[i].error]
            checked, more = self.compare(i, case, judged)
            findings += more
        if any(f.kind == Status.NONDETERMINISTIC for f in findings):
            # a kernel that is not deterministic makes the plausible outputs differ as well:
            # no margin is named on that evidence
            early = [f for f in early or () if f.found_by != plausible.FOUND_BY]
        findings += [*(early or ()), *self.plausible_findings(i)]
        merged = tuple(_merge(findings))
        notes = tuple(dict.fromkeys(note for run in self.runs + self.plausible_runs
                                    for k in {0, i} if k < len(run.steps)
                                    for note in run.steps[k].notes))
        row = make_row(self.job, case, self.settings, self.contract,
                       Comparison(checked, merged, notes), error, first.elapsed_ms,
                       len(self.runs) + len(self.plausible_runs), ends_as)
        return Outcome(row, merged)

    def compare(self, i: int, case: Case, steps: list[tuple[Run, Step]]
                ) -> tuple[int, list[Finding]]:
        """Every run's outputs against the reference and its eager twin, then the runs
        against each other."""
        spec = get_path(case.path)
        out_size = spec.workspace_size(case.intended_inputs(), case.k)
        started = time.perf_counter()
        expected = reference(case, self.contract, out_size, self.settings)
        self.referencing += time.perf_counter() - started
        where = locators(case)
        locate = where["out"]
        checked, findings = 0, []
        for run, step in steps:
            label = self.label(run)
            _regions_only(step, expected["out"][1])
            count, found = compare_output(step.out, *expected["out"], locate, case.well_formed,
                                          label)
            checked = checked or count
            findings += found
            for name, (values, mask) in expected.items():
                if name != "out":
                    findings += compare_output(_sized(step.extras[name], values.numel()),
                                               values, mask, where[name], case.well_formed,
                                               label, buffer=name)[1]
            if step.late_out is not None:  # a writer still running after the call returned
                late = "a second look after the call returned"
                moved = nondeterministic(step.out, step.late_out, locate, "", FoundBy.SECOND_LOOK)
                findings += [_during(moved, label)] if moved else []
                _, found = compare_output(step.late_out, *expected["out"], locate,
                                          case.well_formed, late)
                findings += [_during(f, label) for f in found]
            if step.eager_out is not None:
                freed = "the graph uses memory freed since capture: " + "; ".join(step.kept)
                divergence = diverged(step.out, step.eager_out, locate,
                                      None if step.kept else step.earlier_outs,
                                      freed if step.kept else self.job.mode.divergence_means)
                findings += [_during(divergence, label)] if divergence else []
        if (len(steps) > 1 and len(self.runs) > 1 and steps[0][0] is self.runs[0]
                and steps[1][0] is self.runs[1]):  # (a run that raised somewhere ends the runs)
            findings += self.across_runs(i, case, locate, *expected["out"])
        return checked, findings

    def across_runs(self, i: int, case: Case, locate: RegionLocator, expected: torch.Tensor,
                    mask: torch.Tensor) -> list[Finding]:
        """The constant and the tagged run disagree: a read outside the inputs (the output
        depends on the red zones) or a kernel that is not deterministic.

        A difference that tags explain everywhere is a read. Otherwise each filling runs
        again in the other program order, and once more as first run: an output that differs
        from its own filling's run is not deterministic, and only outputs under the same
        filling that agree let a difference be called a read.
        """
        constant, tagged = self.runs[0].steps[i], self.runs[1].steps[i]
        read, explained = from_fillings(constant.out, tagged.out, constant.staged.all(),
                                        locate, trust_tags=not constant.returned)
        if read is None or explained:
            return [read] if read else []
        found: list[Finding] = []
        for n, plan in enumerate(RERUNS):
            if len(self.reruns) <= n:
                steps = execute(self.job, self.settings, self.contract, plan)
                self.reruns.append(Run(plan, len(self.runs) + n + 1, steps))
                faulted = next((s for s in steps if s.fault), None)
                if faulted is not None:
                    raise RerunFaulted(faulted)
            rerun = self.reruns[n]
            if i >= len(rerun.steps) or rerun.steps[i].error:
                continue
            again = rerun.steps[i]
            twin = next(r for r in self.runs if r.plan.filling == plan.filling)
            _regions_only(again, mask)
            _, judged = compare_output(again.out, expected, mask, locate, case.well_formed,
                                       self.label(rerun))
            found += judged + [_during(f, self.label(rerun)) for f in again.findings]
            race = nondeterministic(twin.steps[i].out, again.out, locate,
                                    f"{twin.label(self.settings)}, then "
                                    f"{rerun.label(self.settings)}")
            if race is not None:
                return ([read] if read.found_by == FoundBy.REDZONE_TAG else []) + [race] + found
        return [read] + found


    def plausible_findings(self, i: int) -> list[Finding]:
        """What the plausible runs' calls did besides their outputs (side effects, writes
        outside the output): a thread or a changed setting shows on a process's first call,
        which is now one of theirs."""
        return [_during(f, self.label(run)) for run in self.plausible_runs
                if i < len(run.steps) for f in run.steps[i].findings]

    def probe(self, filling: Filling, again: bool = False) -> Run:
        """The job's mode run once more under ``filling`` (kept for the job's other rows);
        ``again``: a second such run."""
        key = (filling, again)
        if key not in self.probes:
            steps = execute(self.job, self.settings, self.contract, RunPlan(filling))
            number = len(RUNS) + len(self.reruns) + len(self.probes) + 1
            self.probes[key] = Run(RunPlan(filling), number, steps)
            faulted = next((s for s in steps if s.fault), None)
            if faulted is not None:
                raise RerunFaulted(faulted)
        return self.probes[key]

    def across_plausible(self, i: int, case: Case) -> list[Finding]:
        """Plausible fillings A and B disagree: a read of a margin whose value the kernel's
        checks accept. Named by flipping one buffer's margins at a time (diffcheck.plausible).
        """
        a, b = (run.steps[i] if i < len(run.steps) else None for run in self.plausible_runs)
        if a is None or b is None or a.error or b.error:
            return []
        mask = reference(case, self.contract,
                         get_path(case.path).workspace_size(case.intended_inputs(), case.k),
                         self.settings)["out"][1]
        _regions_only(a, mask)
        _regions_only(b, mask)
        return plausible.judge(a, b, locators(case)["out"],
                               lambda filling, again: self.step_of(filling, i, mask, again),
                               "plausible fillings A and B")

    def step_of(self, filling: Filling, i: int, mask: torch.Tensor,
                again: bool = False) -> Step | None:
        """Row ``i``'s step of a probe run (None when that run did not get there)."""
        run = self.probe(filling, again)
        if i >= len(run.steps) or run.steps[i].error:
            return None
        _regions_only(run.steps[i], mask)
        return run.steps[i]


def _sized(actual: torch.Tensor, size: int) -> torch.Tensor:
    """An extra output as long as the intended batch's: a kernel sizes it from the rows it
    was given, which a malformed batch may have fewer (or more) of; entries it never wrote
    are poison, so they differ."""
    actual = actual.reshape(-1)
    if actual.numel() == size:
        return actual
    fitted = actual.new_full((size,), POISON)
    common = min(size, actual.numel())
    fitted[:common] = actual[:common]
    return fitted


def _regions_only(step: Step, mask: torch.Tensor) -> None:
    """A returned output holds the kernel's own allocation outside the regions (whatever
    ``torch.empty`` gave it): only its regions are its answer, the rest reads as poison."""
    if not step.returned or step.masked:
        return
    step.masked = True
    for name in ("out", "late_out", "eager_out"):
        value = getattr(step, name)
        if value is not None:
            setattr(step, name, torch.where(mask, value, POISON))
