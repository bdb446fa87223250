"""A memory-safety check captured as one graph per case shape, for checks at scale.

A full check (diffcheck.runner) issues ~150 torch calls from the host per case: on a GPU that,
not the kernel, bounds it (1-3 ms at 512 x 2048). Here the whole check of one case shape is
captured once: restoring every filling's staging (margins and poisoned workspace), copying the
case's inputs into each, the kernel once per filling, the reference, and every comparison,
reduced to a few counters. A case of the same shape then costs one copy of its inputs into
the static sources, one replay and one read of the counters.

It is a filter, never a verdict on its own: counters all zero means the case passes what the
full check's red zones, reference and comparisons would see in one call per filling; any
counter above zero sends the case to the full check, which says what it is. What a replay
cannot see, by construction: the wrapper's Python runs only at capture (a launcher that
misbehaves on later calls, changes the process, or decides on the host from the data), so
`fuzz --fast` still runs every few cases through the full check. Well-formed cases only (a
stale case is judged against its intended batch: the full check).
"""

from __future__ import annotations

import time
from collections import OrderedDict

import torch

from diffcheck import backend
from diffcheck.buffers import EDGE_ROLES, POISON, stage
from diffcheck.calls import bind, contract_of
from diffcheck.case import Case
from diffcheck.findings import Comparison
from diffcheck.graphs import new_graph
from diffcheck.impls import Implementation
from diffcheck.job import Job
from diffcheck.modes import Eager
from diffcheck.paths import get_path
from diffcheck.report import make_row
from diffcheck.runner import RUNS, Outcome, RunSettings, ended, is_device_fault
from diffcheck.status import Status

#: what the counters count, in order
COUNTERS = ("mismatches", "stray_writes", "differ_between_fillings", "margin_writes",
            "input_writes", "extra_mismatches")


def shape_key(case: Case) -> tuple:
    """Cases of one key share a captured check: shapes, views, K, fill and scalars."""
    return (case.path, case.k, case.fill, case.fill_swapped,
            tuple(sorted(case.scalars.items())),
            tuple(sorted((n, tuple(t.shape)) for n, t in case.inputs.items())),
            tuple(sorted(case.columns.items())), case.without_out)


class CapturedCheck:
    """The check of one case shape as one graph (see the module docstring)."""

    def __init__(self, case: Case, impl: Implementation, settings: RunSettings) -> None:
        spec = get_path(case.path)
        device = settings.device
        self.spec, self.case_k = spec, case.k
        contract = contract_of(spec, impl, case, settings.fill_override)
        fn = settings.implementation(impl)
        self.sources = {n: t.to(device, torch.int32).contiguous().clone()
                        for n, t in case.inputs.items()}
        out_size = spec.workspace_size(case.kernel_inputs(), case.k)
        roles = tuple(spec.tensor(n).role for n in spec.names)
        plans = RUNS[: max(1, settings.fillings)]
        self.stagings = [stage(self.sources, case.columns, out_size, device, plan.filling,
                               spec.names, roles) for plan in plans]
        self.pristine = [s.arena.clone() for s in self.stagings]
        # plausible margins of offsets and lengths follow each case's own first and last
        # values (buffers._edges): refreshed from the sources in the graph, not frozen
        self.edges = [(staged, plan.filling == "plausible-b", name, role)
                      for staged, plan in zip(self.stagings, plans, strict=True)
                      if plan.filling.startswith("plausible")
                      for name, role in zip(spec.names, roles, strict=True)
                      if role in EDGE_ROLES and self.sources[name].numel()]
        self.margins_before = [torch.empty_like(s.layout.margins.reshape(-1))
                               for s in self.stagings]
        self.calls = [bind(spec, impl, fn, s, contract) for s in self.stagings]
        # a returned output is the kernel's own allocation outside the regions: no stray
        # writes there (the full check masks it too)
        self.returned = contract.without_out or not impl.accepts(spec.out_keyword)
        self.contract, self.columns, self.out_size = contract, dict(case.columns), out_size
        self.counters = torch.zeros(len(COUNTERS), dtype=torch.int64, device=device)
        self.graph = new_graph(device)
        self.device = device
        with backend.interpreter_as_on_gpu(device):  # on the CPU: the interpreter as a GPU
            self._body()  # warm-up: compiles the kernels, settles the allocator
            self.graph.capture(self._body)

    def _body(self) -> None:
        for staged, pristine in zip(self.stagings, self.pristine, strict=True):
            staged.arena.copy_(pristine)
            for name, source in self.sources.items():
                buf = staged.buffers[name]
                buf.alloc[buf.margin : buf.margin + buf.span].copy_(source.reshape(-1))
        for staged, b, name, role in self.edges:
            buf, flat = staged.buffers[name], self.sources[name].reshape(-1)
            before = flat[0] + (-int(b) if role == "indptr" else int(b))
            buf.alloc[: buf.margin].copy_(before.expand(buf.margin))
            buf.alloc[buf.margin + buf.span :].copy_((flat[-1] + int(b)).expand(buf.margin))
        for staged, before in zip(self.stagings, self.margins_before, strict=True):
            before.copy_(staged.arena[staged.layout.margin_index])
        for call in self.calls:
            call()
        views = {n: t[:, : self.columns[n]] if n in self.columns else t
                 for n, t in self.sources.items()}
        expected = self.spec.expected(views, self.case_k, self.contract.fill,
                                       self.contract.scalars, self.out_size)
        want, mask = expected["out"]
        outs = [s.out.alloc[s.out.margin : s.out.margin + s.out.span] for s in self.stagings]
        first = outs[0]
        zero = self.counters.new_zeros(())
        mismatches = ((first != want) & mask).sum()
        stray = zero if self.returned else ((first != POISON) & ~mask).sum()
        differ = sum(((out != first).sum() for out in outs[1:]), zero)
        margins = sum(((s.arena[s.layout.margin_index] != before).sum()
                       for s, before in zip(self.stagings, self.margins_before, strict=True)),
                      zero)
        inputs = sum(((s.buffers[n].alloc[s.buffers[n].margin:
                                          s.buffers[n].margin + s.buffers[n].span]
                       != self.sources[n].reshape(-1)).sum()
                      for s in self.stagings for n in self.sources), zero)
        extras = zero
        for name, (value, valid) in expected.items():
            if name != "out":
                for staged in self.stagings:
                    got = staged.extras.get(name)
                    extras = extras + (((got.reshape(-1) != value.reshape(-1)) & valid).sum()
                                       if got is not None and got.numel() == value.numel()
                                       else valid.sum())
        self.counters.copy_(torch.stack([mismatches, stray, differ, margins, inputs, extras]))

    def run(self, case: Case) -> dict[str, int]:
        """Check ``case`` (of this shape): the counters, all zero when it passes."""
        for name, source in self.sources.items():
            source.copy_(case.inputs[name], non_blocking=True)
        with backend.interpreter_as_on_gpu(self.device):
            self.graph.replay(sync=False)
        return dict(zip(COUNTERS, self.counters.tolist(), strict=True))


class CapturedChecks:
    """Captured checks by case shape, the least recently used dropped past ``kept``; a shape
    whose check cannot be captured (a wrapper that reads data on the host, raises, ...) is
    remembered as such, so its cases go to the full check without another try."""

    def __init__(self, impl: Implementation, settings: RunSettings, kept: int = 16) -> None:
        self.impl, self.settings, self.kept = impl, settings, kept
        self.checks: OrderedDict[tuple, CapturedCheck | None] = OrderedDict()
        self.refused: dict[tuple, str] = {}

    def run(self, case: Case) -> dict[str, int] | None:
        """The counters of ``case``, or None when it needs the full check anyway."""
        if not case.well_formed:
            return None
        key = shape_key(case)
        if key in self.refused:
            return None
        check = self.checks.pop(key, None)
        if check is None:
            try:
                check = CapturedCheck(case, self.impl, self.settings)
            except Exception as e:  # a host read during capture, an error, ...
                if is_device_fault(e):
                    raise  # never a refused shape: the case faulted the device
                self.refused[key] = f"{type(e).__name__}: {e}"
                return None
        self.checks[key] = check
        while len(self.checks) > self.kept:
            self.checks.popitem(last=False)
        return check.run(case)


class Screened(Eager):
    """Eager rows screened by a captured check (`fuzz --fast`): a case whose counters are all
    zero is a pass row at once; any other, the first case of each implementation and every
    ``FULL_EVERY``-th run the full check (which also sees what a replay cannot)."""

    screened = True


#: every this-many screened cases of an implementation get the full check anyway
FULL_EVERY = 16
_CHECKS: dict[str, CapturedChecks] = {}
_SCREENED: dict[str, int] = {}


def screened(job: Job, settings: RunSettings) -> list[Outcome] | None:
    """The pass row of a case its captured check counts nothing on; None when the full check
    must run (see Screened)."""
    case = job.case
    if not isinstance(case, Case):
        return None
    seen = _SCREENED[job.impl.name] = _SCREENED.get(job.impl.name, 0) + 1
    if seen % FULL_EVERY == 1:
        return None
    checks = _CHECKS.get(job.impl.name)
    if checks is None:
        checks = _CHECKS[job.impl.name] = CapturedChecks(job.impl, settings)
    began = time.perf_counter()
    try:
        counts = checks.run(case)
    except Exception as e:  # a fault of the device is this case's row; else the full check
        if is_device_fault(e):
            return _faulted(job, settings, e, began)
        return None
    if counts is None or any(counts.values()):
        return None
    spec = get_path(case.path)
    contract = contract_of(spec, job.impl, case, settings.fill_override)
    checked = spec.workspace_size(case.kernel_inputs(), case.k)
    note = (f"screened by a captured check ({settings.fillings} fillings, one call each, "
            "every counter zero)")
    row = make_row(job, case, settings, contract, Comparison(checked, (), (note,)), "",
                   (time.perf_counter() - began) * 1e3, settings.fillings, Status.PASS)
    return [Outcome(row)]


def _faulted(job: Job, settings: RunSettings, error: BaseException,
             began: float) -> list[Outcome]:
    """The case's fault row: the device context is gone, the worker must be replaced."""
    why = " ".join(f"{type(error).__name__}: {error}".split())[:500]
    return ended(job, settings, Status.FAULT, f"in the captured check: {why}",
                 (time.perf_counter() - began) * 1e3)
