"""Execution modes: how implementation calls reach the device, one Step per compared output.

- ``eager``: one direct call.
- ``capture``: warm up outside capture (Triton compiles on its first call), capture one call
  into a graph on the static (staged) buffers, poison the output, replay once.
- ``replay``: a scenario's first step of each graph size is captured (smallest size first, as
  engines capture a list of batch sizes); every later step is copied into its graph's static
  buffers, the output poisoned, the graph replayed.

Capture and replay also call the implementation eagerly on the same inputs, so a replay that
differs from eager is found (``divergence``). Every call, whatever it is for (a warm-up, a
capture, a replay, the eager call after a replay), is followed by the same check of the
allocation: margins and inputs must be as staged. Its findings belong to the row the call
serves (setup calls to the first row after them). A mode yields each Step while the staged
buffers still hold its state; the runner compares it before asking for the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from diffcheck import backend, process_state, tuning
from diffcheck.buffers import Staged, quietly
from diffcheck.case import Case, Scenario
from diffcheck.compare import writes_outside_out
from diffcheck.errors import CaseTooLarge, UsageError
from diffcheck.findings import Finding, FoundBy
from diffcheck.graphs import new_graph
from diffcheck.status import Status

#: seconds a thread the call left running gets to finish before its writes are looked for
LATE_WRITER_WAIT = 0.25
#: stage(case, seen=True) -> the case's buffers, red-zoned, output poisoned; ``seen``: the
#: case is a real batch of the run (its size counts toward LARGEST), not the larger batch
#: diffcheck calls between capture and replay
Stager = Callable[..., Staged]
#: bind(staged) -> a call of the implementation on those buffers
Binder = Callable[[Staged], Callable[[], object]]


@dataclass
class Step:
    """One compared output: the case it is judged as, and what the calls left behind."""

    case: Case
    staged: Staged | None = None
    #: the output after the call (a copy: a replay reuses the buffers for the next step)
    out: torch.Tensor | None = None
    #: extra outputs it returned (valid counts), copies
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    #: the kernel returned its output (elements outside the regions are not its writes)
    returned: bool = False
    #: its outputs were reduced to the regions (diffcheck.runner)
    masked: bool = False
    #: writes outside the output (margins, inputs) of every call that served this row
    findings: list[Finding] = field(default_factory=list)
    #: output of an eager call on the same inputs (capture and replay), for divergence
    eager_out: torch.Tensor | None = None
    #: replay: earlier outputs of the same graph, where a divergent replay may come from
    #: (what it computed when captured, the previous replay)
    earlier_outs: dict[str, torch.Tensor] = field(default_factory=dict)
    error: str = ""
    #: the status an error gives the row: error (the implementation raised) or fault (it
    #: ended the process, or the device)
    ends_as: Status = Status.ERROR
    #: the error was a device fault: nothing more may run in this process's context
    fault: bool = False
    #: interpreter sandbox (or instrumented kernel) accesses since the previous Step (set by
    #: the runner)
    accesses: list = field(default_factory=list)
    #: what the row should say about how it was checked (a kernel left uninstrumented)
    notes: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0
    #: the output as a second look found it, when it changed after the call returned
    late_out: torch.Tensor | None = None
    #: threads the calls started and left running (waited for before the second look)
    left_running: list = field(default_factory=list)
    #: the tensor the kernel returned as this step's output (None when it wrote out=)
    returned_tensor: torch.Tensor | None = None
    #: replay: what the graph used that was freed since capture (what a divergence means)
    kept: list[str] = field(default_factory=list)
    #: the error was the implementation's own raise or assert (not a failed operation)
    explicit: bool = False


class Mode:
    """One way of running an implementation."""

    name: ClassVar[str] = ""
    #: what a replay that differs from the eager call most likely means, when no earlier
    #: output explains it
    divergence_means: ClassVar[str] = ""

    def rows(self, target: Case | Scenario) -> list[Case]:
        """The cases this mode reports a row for, in order."""
        raise NotImplementedError

    def run(self, target: Case | Scenario, stage: Stager, bind: Binder,
            device: torch.device, guard: Callable, compare_eager: bool = True) -> Iterator[Step]:
        """Yield one Step per row. ``guard(step, fn)`` runs ``fn`` and turns an exception of
        the implementation into ``step.error`` (returning False). ``compare_eager`` asks for
        the extra eager call behind ``divergence`` where a mode needs one (replay)."""
        raise NotImplementedError


def _checked(step: Step, staged: Staged, when: str, action: Callable[[], object],
             guard: Callable, eager: bool = False) -> bool:
    """Run one call (or replay), then check what it must leave as it found it: the process
    (RNG, stream, threads, directory, ...) and the allocation's margins and inputs, each put
    back. False when it raised; after a device fault nothing more is touched. An ``eager``
    call that raises on a malformed case before its first Triton launch refused it."""
    device = staged.arena.device
    before = process_state.snapshot(device)
    launched = tuning.launches()
    done = guard(step, action)
    if step.fault:
        return done
    if (not done and eager and not step.case.well_formed and step.ends_as == Status.ERROR
            and step.explicit and tuning.launches() == launched):
        step.ends_as = Status.REFUSED
        step.error = f"refused the malformed input before launching anything: {step.error}"
    effects = process_state.changes(before, process_state.snapshot(device))
    if effects:
        process_state.restore(before)
        step.findings.append(Finding(Status.SIDE_EFFECT, "process", len(effects), 0,
                                     "; ".join(effects), found_by=FoundBy.PROCESS_STATE, when=when))
        step.left_running += process_state.started_since(before)
    step.findings += writes_outside_out(staged, when)
    return done


def _finish(step: Step, staged: Staged, start: float) -> Step:
    """Keep the step's output (and look at it again before the buffer is reused); after a
    device fault touch nothing more."""
    step.elapsed_ms = (time.perf_counter() - start) * 1e3
    if step.fault:
        return step
    step.staged = staged
    step.out = staged.out.view.clone()
    step.extras = {name: t.clone() for name, t in staged.extras.items()}
    step.returned = staged.returned
    # the kernel's own output tensor, if it is the one this output came from (a graph
    # replay's output may come from a tensor an earlier eager call returned, not this one)
    returned, staged.returned_tensor = staged.returned_tensor, None
    if returned is not None and torch.equal(returned.reshape(-1), staged.out.view):
        step.returned_tensor = returned
    staged.watched = step
    return step


def second_look(staged: Staged) -> None:
    """Compare the output with the copy its step kept: a change since the call returned is a
    writer still running (a thread, another stream). Done before the buffer is poisoned
    again, and for every staging at the end of a run (after a device sync)."""
    step, staged.watched = staged.watched, None
    if step is None or step.out is None:
        return
    for thread in step.left_running:  # a late writer gets a moment to write
        thread.join(LATE_WRITER_WAIT)
    backend.synchronize(staged.arena.device)
    if step.returned_tensor is not None:  # the kernel's own output, copied in at the call
        quietly(staged.out.view).copy_(step.returned_tensor.reshape(-1))
        step.returned_tensor = None
    if not torch.equal(staged.out.view, step.out):
        step.late_out = staged.out.view.clone()
    if step.left_running:
        step.findings += writes_outside_out(staged, "after the call returned")


def _poison(staged: Staged) -> None:
    second_look(staged)
    staged.poison_out()


def _call_eagerly(staged: Staged, call: Callable[[], object], device: torch.device,
                  step: Step, guard: Callable, when: str = "") -> bool:
    """Poison the output, call, wait for the device, check the allocation; False when the
    call raised."""
    _poison(staged)
    return _checked(step, staged, when, lambda: (call(), backend.synchronize(device)), guard,
                    eager=True)


def _eager_output(staged: Staged, call: Callable[[], object], device: torch.device,
                  step: Step, guard: Callable, when: str) -> torch.Tensor | None:
    """The output of a plain call on the current inputs."""
    if not _call_eagerly(staged, call, device, step, guard, when):
        return None
    return staged.out.view.clone()


def _captured(staged: Staged, graph, call: Callable[[], object], step: Step, guard: Callable,
              when: str) -> bool:
    """Capture ``call``; the extra outputs it returned are the graph's from now on (an eager
    call on the same buffers returns tensors of its own)."""
    done = _checked(step, staged, when, lambda: graph.capture(call), guard)
    graph.extras = dict(staged.extras)
    return done


def _replayed(staged: Staged, graph, device: torch.device, step: Step, guard: Callable,
              when: str = "") -> bool:
    _poison(staged)
    done = _checked(step, staged, when, graph.replay, guard)
    staged.extras = dict(getattr(graph, "extras", {}))  # what this replay wrote
    return done


class _OneCallPerCase(Mode):
    """A row per case (per step of a scenario, on its intended batch), each staged afresh."""

    def rows(self, target: Case | Scenario) -> list[Case]:
        return target.fresh_steps() if isinstance(target, Scenario) else [target]

    def issue(self, step: Step, staged: Staged, call: Callable[[], object],
              device: torch.device, guard: Callable) -> None:
        raise NotImplementedError

    def run(self, target, stage, bind, device, guard, compare_eager=True):
        for case in self.rows(target):
            staged, step, start = stage(case), Step(case), time.perf_counter()
            self.issue(step, staged, bind(staged), device, guard)
            yield _finish(step, staged, start)
            if step.fault:
                return


class Eager(_OneCallPerCase):
    """One direct call."""

    name = "eager"

    def issue(self, step, staged, call, device, guard):
        _call_eagerly(staged, call, device, step, guard)


class Capture(_OneCallPerCase):
    """Warm up, capture one call, poison the output, replay once."""

    name = "capture"
    divergence_means = ("the captured call differs from the warm-up call on identical "
                        "inputs: host-side state changed between the calls and the graph "
                        "froze it")

    def issue(self, step, staged, call, device, guard):
        # The warm-up (Triton compiles on a first call) is also the eager output for
        # divergence.
        step.eager_out = _eager_output(staged, call, device, step, guard,
                                       "the warm-up call before capture")
        graph = new_graph(device, check_freed=True)
        if step.eager_out is not None and _captured(staged, graph, call, step, guard,
                                                    "capture"):
            _replayed(staged, graph, device, step, guard)


#: path -> the most requests a case staged in this process had (diffcheck.runner notes
#: each): the batch between capture and replay has more, so a launcher's cache regrows
LARGEST: dict[str, int] = {}
#: path -> larger batches called so far in this process (each one request larger)
DISTURBANCES: dict[str, int] = {}


def requests_of(case: Case) -> int:
    from diffcheck.paths import get_path

    return get_path(case.path).counts(case.kernel_inputs())[0]


def _disturbed(target: Scenario, stage: Stager, bind: Binder, device: torch.device,
               setup: Step, guard: Callable):
    """Between capture and replay, disturb what a graph does not own, as serving does: an
    eager call on a larger batch (a launcher that grows a cached tensor or a workspace it
    shares with eager calls reallocates it, freeing what the graph points at), then, on a
    GPU, the allocator's free memory taken and poisoned (what the replay then reads and
    writes there shows). The graph emulator poisons a freed tensor itself at replay
    (diffcheck.graphs). Returns the poisoned memory to check after each replay."""
    from diffcheck.fixtures.derived import larger_batch
    from diffcheck.graphs import PoisonedFreeMemory

    # twice the most requests (or graph rows) the process has called the kernel with, and
    # one more: past a cache sized to a batch seen, even one rounded up to a power of two;
    # each later one a request larger than the one before, so that a cache sized exactly
    # to the last such batch regrows again
    most = max(LARGEST.get(target.path, 0), *target.sizes,
               *(requests_of(s) for s in target.steps))
    DISTURBANCES[target.path] = DISTURBANCES.get(target.path, 0) + 1
    try:
        larger = larger_batch(target.steps[0], 2 * most + DISTURBANCES[target.path])
    except Exception as e:  # noqa: BLE001 - a path whose generator cannot: no such call
        setup.notes.append(f"no larger batch between capture and replay: {e}")
        larger = None
    if larger is not None:
        try:
            staged = stage(larger, seen=False)
        except CaseTooLarge as e:
            setup.notes.append(f"no larger batch between capture and replay: {e}")
            larger = None
    if larger is not None:
        probe = Step(larger)
        with tuning.recording(kept=False):  # its heuristic values are not the rows' (never judged)
            _call_eagerly(staged, bind(staged), device, probe, guard,
                          "the eager call on a larger batch between capture and replay")
        setup.findings += probe.findings
        if probe.error:
            setup.notes.append(f"the eager call on a larger batch between capture and replay "
                               f"raised: {probe.error}")
        if probe.fault:
            setup.fault, setup.ends_as = True, Status.FAULT
            setup.error = f"the eager call on a larger batch between capture and replay: " \
                          f"{probe.error}"
            return None
    return PoisonedFreeMemory(device) if device.type == "cuda" else None


def _freed_memory_used(graph, poisoned, step: Step) -> None:
    """After a replay: the tensors it used that were freed since capture (emulator), and what
    it wrote into the poisoned free memory (GPU), as findings."""
    for freed in getattr(graph, "freed", ()):
        step.kept.append(freed.what)
        if freed.written:
            step.findings.append(Finding(
                Status.OOB_WRITE, "freed memory", freed.written, 0,
                f"{freed.what}: the replay wrote into it",
                found_by=FoundBy.FREED_MEMORY))
        else:
            step.notes.append(f"the graph points at memory freed since capture: {freed.what}")
    if poisoned is not None:
        for where, count in poisoned.written():
            step.kept.append(f"memory freed since capture ({where})")
            step.findings.append(Finding(
                Status.OOB_WRITE, "freed memory", count, 0,
                f"the replay wrote {count} bytes into memory freed since capture ({where}): "
                "a tensor the graph points at was freed (a launcher's cached tensor or a "
                "workspace shared with eager calls, reallocated)", found_by=FoundBy.FREED_MEMORY))


class Replay(Mode):
    """Capture each graph size on its first step, then replay every later step (after an
    eager call on a larger batch, and on a GPU the free memory poisoned, in between)."""

    name = "replay"
    divergence_means = ("something the graph points at changed or was freed since capture "
                        "(an eager call on a larger batch ran in between: a launcher's cached "
                        "tensor, a workspace shared with eager calls), or host-side state the "
                        "graph froze")

    def rows(self, target: Case | Scenario) -> list[Case]:
        if not isinstance(target, Scenario):
            return []
        return target.steps[1:]

    def run(self, target, stage, bind, device, guard, compare_eager=True):
        if not isinstance(target, Scenario):
            return
        setup = Step(target.steps[0])
        graphs, earlier = _capture_each_size(target, stage, bind, device, guard, setup)
        poisoned = None
        owned = {st.arena.untyped_storage().data_ptr() for st, _, _ in graphs.values()}
        if graphs and not setup.error and (device.type != "cpu" or any(
                g.foreign(owned) for _, _, g in graphs.values())):
            # only a graph that points at a launcher's own tensors can keep a freed one
            poisoned = _disturbed(target, stage, bind, device, setup, guard)
        for n, case in enumerate(target.steps[1:]):
            step, start = Step(case), time.perf_counter()
            if n == 0:
                step.findings, step.notes = setup.findings, setup.notes
            if setup.error:
                step.error, step.fault = f"capture failed: {setup.error}", setup.fault
                step.ends_as = setup.ends_as
                yield step
                continue
            staged, call, graph = graphs[target.graph_size(case)]
            staged.load(case.inputs)  # what the engine copies (and leaves stale) this step
            _replayed(staged, graph, device, step, guard)
            if not step.fault:
                _freed_memory_used(graph, poisoned, step)
            done = _finish(step, staged, start)
            if step.fault:
                yield done
                return
            done.earlier_outs = dict(earlier[target.graph_size(case)])
            earlier[target.graph_size(case)]["the previous replay's output"] = done.out
            if not step.error and compare_eager and _eager_after_replay(
                    done, staged, call, device, guard):
                yield done
                return  # the eager call took the device down
            yield done


def _capture_each_size(target: Scenario, stage: Stager, bind: Binder, device: torch.device,
                       guard: Callable, setup: Step) -> tuple[dict[int, tuple], dict]:
    """A graph captured for each size on its first step (after an eager warm-up call):
    {size: (staged, call, graph)}, and what each warm-up computed; ``setup`` holds what
    went wrong (capturing stops at the first failure)."""
    graphs: dict[int, tuple] = {}
    earlier: dict[int, dict[str, torch.Tensor]] = {}
    for size in sorted({target.graph_size(s) for s in target.steps}):
        first = next(s for s in target.steps if target.graph_size(s) == size)
        staged = stage(first)
        call = bind(staged)
        graph = new_graph(device, check_freed=True)
        warm = _eager_output(staged, call, device, setup, guard,
                             f"the warm-up call before capturing the graph of {size}")
        if warm is None and setup.ends_as == Status.REFUSED:
            # the launcher refused the stale capture batch when called eagerly: capture it
            # all the same (a capture runs no host check), so the steps are judged
            setup.notes.append(f"the warm-up before capturing the graph of {size} "
                               f"{setup.error}; captured without it")
            setup.error, setup.ends_as = "", Status.ERROR
        elif warm is None:
            break
        if not _captured(staged, graph, call, setup, guard, f"capturing the graph of {size}"):
            break
        graphs[size] = (staged, call, graph)
        earlier[size] = {} if warm is None else {
            "what it computed for the step it was captured on": warm}
    return graphs, earlier


def _eager_after_replay(done: Step, staged: Staged, call: Callable[[], object],
                        device: torch.device, guard: Callable) -> bool:
    """The eager call on a replayed step's inputs, behind ``divergence``; True when it took
    the device down (nothing more may run)."""
    probe = Step(done.case)
    done.eager_out = _eager_output(staged, call, device, probe, guard,
                                   "the eager call on the same inputs")
    done.findings += probe.findings
    if probe.ends_as == Status.REFUSED:  # the replay is judged all the same
        done.notes.append(f"the eager call on the same inputs {probe.error}; no divergence "
                          "check")
    elif probe.error:  # it raised (or took the device down) on the same inputs
        done.error, done.fault = f"eager call after replay: {probe.error}", probe.fault
        done.ends_as = probe.ends_as
    return probe.fault


MODES: dict[str, type[Mode]] = {"eager": Eager, "capture": Capture, "replay": Replay}
#: names that expand to several modes
GROUPS = {"graph": ("capture", "replay"), "all": ("eager", "capture", "replay")}


def select(name: str) -> list[Mode]:
    """Modes for ``--mode``: one of MODES, or ``graph`` / ``all``."""
    if name in MODES:
        return [MODES[name]()]
    if name in GROUPS:
        return [MODES[n]() for n in GROUPS[name]]
    raise UsageError(f"unknown mode '{name}'; known: {', '.join((*MODES, *GROUPS))}")
