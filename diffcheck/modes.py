"""Execution modes: how implementation calls reach the device, one Step per compared output.

- ``eager``: one direct call.
- ``capture``: warm up outside capture (Triton compiles on its first call), capture one call
  into a graph on the static (staged) buffers, poison the output, replay once.
- ``replay``: a scenario's first step of each graph size is captured (smallest size first, as
  engines capture a list of batch sizes); every later step is copied into its graph's static
  buffers, the output poisoned, the graph replayed.

Capture and replay also call the implementation eagerly on the same inputs, so a replay that
differs from eager is found (``divergence``). A mode yields each Step while the staged buffers
still hold its state; the runner compares it before asking for the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from diffcheck import backend
from diffcheck.buffers import Staged
from diffcheck.case import Case, Scenario
from diffcheck.compare import Finding, margins_changed
from diffcheck.errors import UsageError
from diffcheck.graphs import new_graph

#: stage(case, filling) -> the case's buffers, red-zoned, output poisoned
Stager = Callable[[Case], Staged]
#: bind(staged) -> a call of the implementation on those buffers
Binder = Callable[[Staged], Callable[[], object]]


@dataclass
class Step:
    """One compared output: the case it is judged as, and what the call left behind."""

    case: Case
    staged: Staged | None = None
    #: the output after the call (a copy: a replay reuses the buffers for the next step)
    out: torch.Tensor | None = None
    margins: list[Finding] = field(default_factory=list)
    #: output of an eager call on the same inputs (capture and replay), for divergence
    eager_out: torch.Tensor | None = None
    error: str = ""
    #: the error was a device fault: nothing more may run in this process's context
    fault: bool = False
    #: interpreter sandbox accesses since the previous Step (set by the runner)
    accesses: list = field(default_factory=list)
    elapsed_ms: float = 0.0


class Mode:
    """One way of running an implementation."""

    name: ClassVar[str] = ""

    def rows(self, target: Case | Scenario) -> list[Case]:
        """The cases this mode reports a row for, in order."""
        raise NotImplementedError

    def run(self, target: Case | Scenario, stage: Stager, bind: Binder,
            device: torch.device, guard: Callable, compare_eager: bool = True) -> Iterator[Step]:
        """Yield one Step per row. ``guard(step, fn)`` runs ``fn`` and turns an exception of
        the implementation into ``step.error`` (returning False). ``compare_eager`` asks for
        the extra eager call behind ``divergence`` where a mode needs one (replay)."""
        raise NotImplementedError


def _finish(step: Step, staged: Staged, start: float) -> Step:
    """Keep the step's output and margin writes; after a device fault touch nothing more."""
    step.elapsed_ms = (time.perf_counter() - start) * 1e3
    if step.fault:
        return step
    step.staged = staged
    step.out = staged.out.view.clone()
    step.margins = margins_changed(staged, restore=True)
    return step


def _call_eagerly(staged: Staged, call: Callable[[], object], device: torch.device,
                  step: Step, guard: Callable) -> bool:
    """Poison the output, call, wait for the device; False when the call raised."""
    staged.poison_out()
    return guard(step, lambda: (call(), backend.synchronize(device)))


def _eager_output(staged: Staged, call: Callable[[], object], device: torch.device,
                  step: Step, guard: Callable) -> torch.Tensor | None:
    """The output of a plain call on the current inputs (margins restored after it)."""
    if not _call_eagerly(staged, call, device, step, guard):
        return None
    out = staged.out.view.clone()
    margins_changed(staged, restore=True)
    return out


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

    def issue(self, step, staged, call, device, guard):
        # The warm-up (Triton compiles on a first call) is also the eager output for
        # divergence; its margin writes are redone, and found, by the replay.
        step.eager_out = _eager_output(staged, call, device, step, guard)
        graph = new_graph(device)
        if step.eager_out is not None and guard(step, lambda: graph.capture(call)):
            staged.poison_out()
            guard(step, graph.replay)


class Replay(Mode):
    """Capture each graph size on its first step, then replay every later step."""

    name = "replay"

    def rows(self, target: Case | Scenario) -> list[Case]:
        if not isinstance(target, Scenario):
            return []
        return target.steps[1:]

    def run(self, target, stage, bind, device, guard, compare_eager=True):
        if not isinstance(target, Scenario):
            return
        graphs: dict[int, tuple] = {}
        setup = Step(target.steps[0])
        for size in sorted({target.graph_size(s) for s in target.steps}):
            first = next(s for s in target.steps if target.graph_size(s) == size)
            staged = stage(first)
            call = bind(staged)
            graph = new_graph(device)
            if _eager_output(staged, call, device, setup, guard) is None:
                break
            if not guard(setup, lambda graph=graph, call=call: graph.capture(call)):
                break
            graphs[size] = (staged, call, graph)
        for case in target.steps[1:]:
            step, start = Step(case), time.perf_counter()
            if setup.error:
                step.error, step.fault = f"capture failed: {setup.error}", setup.fault
                yield step
                continue
            staged, call, graph = graphs[target.graph_size(case)]
            staged.load(case.inputs)  # what the engine copies (and leaves stale) this step
            staged.poison_out()
            guard(step, graph.replay)
            done = _finish(step, staged, start)
            if step.fault:
                yield done
                return
            if not step.error and compare_eager:
                probe = Step(case)
                done.eager_out = _eager_output(staged, call, device, probe, guard)
                if probe.fault:  # the eager call on the same inputs took the device down
                    done.error, done.fault = f"eager call after replay: {probe.error}", True
                    yield done
                    return
            yield done


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
