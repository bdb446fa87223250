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

import dataclasses
import time
from collections import OrderedDict

import torch

from diffcheck import backend, heartbeat, mutants
from diffcheck.buffers import EDGE_ROLES, PLAUSIBLE_B, POISON, Staged, stage
from diffcheck.calls import bind, contract_of
from diffcheck.case import Case
from diffcheck.findings import Comparison
from diffcheck.graphs import new_graph
from diffcheck.impls import Implementation
from diffcheck.job import Job
from diffcheck.modes import Eager
from diffcheck.outcome import Outcome, ended, is_device_fault
from diffcheck.paths import get_path
from diffcheck.report import make_row
from diffcheck.settings import RUNS, RunSettings
from diffcheck.status import Status

#: mutants checked between two reads of their counters
LOG = 1024
#: elements each filling's row of the captured check is padded to (512 bytes)
ROW_ALIGN = 128
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

    def __init__(self, case: Case, impl: Implementation, settings: RunSettings,
                 mutating: bool = False) -> None:
        spec = get_path(case.path)
        device = settings.device
        self.spec, self.case_k = spec, case.k
        contract = contract_of(spec, impl, case, settings.fill_override)
        fn = settings.implementation(impl)
        # every source is a view of one flat buffer, in the path's order: one scatter stages
        # them all into every filling's arena
        names = [n for n in spec.names if n in case.inputs]
        sizes = [case.inputs[n].numel() for n in names]
        self.flat = torch.empty(sum(sizes), dtype=torch.int32, device=device)
        self.sources = _views(self.flat, names, sizes, case)
        for name in names:
            self.sources[name].copy_(case.inputs[name])
        out_size = spec.workspace_size(case.kernel_inputs(), case.k)
        roles = tuple(spec.tensor(n).role for n in spec.names)
        plans = RUNS[: max(1, settings.fillings)]
        staged = [stage(self.sources, case.columns, out_size, device, plan.filling,
                        spec.names, roles) for plan in plans]
        # every filling's arena is a row of one tensor: restored, snapshot and compared at
        # once; rows padded to ROW_ALIGN elements, so each buffer has the same alignment in
        # every filling (Triton specializes a kernel on its pointers' alignment)
        length = staged[0].arena.numel()
        self.arenas = torch.zeros(len(staged), -(-length // ROW_ALIGN) * ROW_ALIGN,
                                  dtype=torch.int32, device=device)
        self.stagings = [_rehome(s, row[:length], case.columns)
                         for s, row in zip(staged, self.arenas, strict=True)]
        self.pristine = self.arenas.clone()
        self.before = torch.empty_like(self.arenas)
        self._locate(names, device)
        # plausible margins of offsets and lengths follow each case's own first and last
        # values (buffers._edges): refreshed from the sources in the graph, not frozen
        self.edges = [(staged, plan.filling == PLAUSIBLE_B, name, role)
                      for staged, plan in zip(self.stagings, plans, strict=True)
                      if plan.filling.plausible
                      for name, role in zip(spec.names, roles, strict=True)
                      if role in EDGE_ROLES and self.sources[name].numel()]
        self.calls = [bind(spec, impl, fn, s, contract) for s in self.stagings]
        # a returned output is the kernel's own allocation outside the regions: no stray
        # writes there (the full check masks it too)
        self.returned = contract.without_out or not impl.accepts(spec.out_keyword)
        self.contract, self.columns, self.out_size = contract, dict(case.columns), out_size
        self.counters = torch.zeros(len(COUNTERS), dtype=torch.int64, device=device)
        # mutants (diffcheck.mutants): the graph makes the sources from a static base and a
        # key, logs each replay's counters and moves the key on, so N mutants are N replays
        self.base = {n: t.clone() for n, t in self.sources.items()} if mutating else None
        self.roles = mutants.roles_of(case)
        self.key = torch.zeros((), dtype=torch.int64, device=device)
        self.at = torch.zeros(1, dtype=torch.int64, device=device)
        self.log = torch.zeros(LOG if mutating else 1, len(COUNTERS), dtype=torch.int64,
                               device=device)
        self.graph = new_graph(device)
        self.device = device
        with backend.interpreter_as_on_gpu(device):  # on the CPU: the interpreter as a GPU
            self._body()  # warm-up: compiles the kernels, settles the allocator
            self.graph.capture(self._body)

    def _locate(self, names: list[str], device: torch.device) -> None:
        """Where the inputs and the output sit in every filling's arena row, and the weights
        that count a changed margin element as 1 and a changed input element as 2^32."""
        first = self.stagings[0]
        self.input_index = torch.cat([
            torch.arange(first.buffers[n].margin, first.buffers[n].margin + first.buffers[n].span)
            + (first.buffers[n].alloc.storage_offset() - first.arena.storage_offset())
            for n in names]).to(device)
        # none in the output's own span: one sum gives both counters
        weights = torch.zeros(self.arenas.shape[1], dtype=torch.int64)
        weights[first.layout.margin_index.cpu()] = 1
        weights[self.input_index.cpu()] = 1 << 32
        self.weights = weights.to(device)
        out = first.out
        self.out_at = (out.alloc.storage_offset() - first.arena.storage_offset() + out.margin,
                       out.span)

    def _body(self) -> None:
        if self.base is not None:
            mutants.mutate(self.base, self.roles, self.key, self.sources)
        self.arenas.copy_(self.pristine)
        self.arenas[:, self.input_index] = self.flat
        for staged, b, name, role in self.edges:
            buf, flat = staged.buffers[name], self.sources[name].reshape(-1)
            before = flat[0] + (-int(b) if role == "indptr" else int(b))
            buf.alloc[: buf.margin].copy_(before.expand(buf.margin))
            buf.alloc[buf.margin + buf.span :].copy_((flat[-1] + int(b)).expand(buf.margin))
        self.before.copy_(self.arenas)
        for call in self.calls:
            call()
        views = {n: t[:, : self.columns[n]] if n in self.columns else t
                 for n, t in self.sources.items()}
        expected = self.spec.expected(views, self.case_k, self.contract.fill,
                                       self.contract.scalars, self.out_size)
        want, mask = expected["out"]
        at, span = self.out_at
        outs = self.arenas[:, at : at + span]
        first = outs[0]
        zero = self.counters.new_zeros(())
        mismatches = ((first != want) & mask).sum()
        stray = zero if self.returned else ((first != POISON) & ~mask).sum()
        differ = (outs[1:] != first).sum()
        changed = ((self.arenas != self.before) * self.weights).sum()
        margins, inputs = changed % (1 << 32), changed // (1 << 32)
        extras = zero
        for name, (value, valid) in expected.items():
            if name != "out":
                for staged in self.stagings:
                    got = staged.extras.get(name)
                    extras = extras + (((got.reshape(-1) != value.reshape(-1)) & valid).sum()
                                       if got is not None and got.numel() == value.numel()
                                       else valid.sum())
        self.counters.copy_(torch.stack([mismatches, stray, differ, margins, inputs, extras]))
        if self.base is not None:
            self.log.index_copy_(0, self.at % LOG, self.counters.view(1, -1))
            self.at.add_(1)
            self.key.add_(1)

    def _load(self, case: Case, first: int) -> None:
        for name, source in (self.sources if self.base is None else self.base).items():
            source.copy_(case.inputs[name], non_blocking=True)
        self.key.fill_(mutants.key_of(case) + first)
        self.at.zero_()

    def run(self, case: Case) -> dict[str, int]:
        """Check ``case`` (of this shape): the counters, all zero when it passes."""
        self._load(case, 0)
        with backend.interpreter_as_on_gpu(self.device):
            self.graph.replay(sync=False)
        return dict(zip(COUNTERS, self.counters.tolist(), strict=True))

    def first_failing_mutant(self, case: Case, count: int, one_by_one: bool = False
                             ) -> int | None:
        """Mutants 1..count of ``case`` (a check built with ``mutating``): the index of the
        first one any counter counts on, or None. The replays are queued back to back and the
        log read once per LOG mutants; a device fault then names no mutant (MutantFault with
        index None), so ``one_by_one`` waits for each replay to name the one that faulted
        (and tells the index of each before it runs, for a time-out or a death to name:
        diffcheck.heartbeat)."""
        if self.base is None:
            raise ValueError("this captured check was built without mutants")
        done = 0
        while done < count:
            chunk = min(LOG, count - done)
            try:
                self._load(case, 1 + done)
                with backend.interpreter_as_on_gpu(self.device):
                    for j in range(chunk):
                        if one_by_one:
                            heartbeat.mutant(1 + done + j)
                        try:
                            self.graph.replay(sync=one_by_one)
                        except Exception as e:
                            if one_by_one and is_device_fault(e):
                                raise MutantFault(1 + done + j, e) from e
                            raise
                hits = torch.nonzero(self.log[:chunk].sum(dim=1)).flatten().tolist()
            except MutantFault:
                raise
            except Exception as e:
                if is_device_fault(e):
                    raise MutantFault(None, e) from e
                raise
            if hits:
                return 1 + done + hits[0]
            done += chunk
        return None


def _views(flat: torch.Tensor, names: list[str], sizes: list[int],
           case: Case) -> dict[str, torch.Tensor]:
    """The case's tensors as consecutive views of ``flat`` (their whole buffers' shapes)."""
    views, at = {}, 0
    for name, size in zip(names, sizes, strict=True):
        views[name] = flat[at : at + size].view(case.inputs[name].shape)
        at += size
    return views


def _rehome(staged: Staged, row: torch.Tensor, columns: dict[str, int]) -> Staged:
    """``staged`` moved into ``row`` (an arena of the same layout): its buffers are views
    there, so what the kernel is handed is the row's memory."""
    row.copy_(staged.arena)
    base = staged.arena.storage_offset()
    buffers = []
    for buf in staged.all():
        start = buf.alloc.storage_offset() - base
        alloc = row[start : start + buf.alloc.numel()]
        view = alloc[buf.margin : buf.margin + buf.span].view(buf.shape or (buf.span,))
        if buf.name in columns:
            view = view[:, : columns[buf.name]]
        buffers.append(dataclasses.replace(buf, alloc=alloc, view=view))
    return Staged({b.name: b for b in buffers[:-1]}, buffers[-1], row, staged.layout,
                  row.clone())


class MutantFault(Exception):
    """A device mutant faulted the device: its index when the mutants were waited for one by
    one, else None (one of the chunk)."""

    def __init__(self, index: int | None, error: BaseException) -> None:
        super().__init__(str(error))
        self.index, self.error = index, error


class CapturedChecks:
    """Captured checks by case shape, the least recently used dropped past ``kept``; a shape
    whose check cannot be captured (a wrapper that reads data on the host, raises, ...) is
    remembered as such, so its cases go to the full check without another try."""

    def __init__(self, impl: Implementation, settings: RunSettings, kept: int = 16,
                 mutating: bool = False) -> None:
        self.impl, self.settings, self.kept, self.mutating = impl, settings, kept, mutating
        self.checks: OrderedDict[tuple, CapturedCheck | None] = OrderedDict()
        self.refused: dict[tuple, str] = {}

    def run(self, case: Case) -> dict[str, int] | None:
        """The counters of ``case``, or None when it needs the full check anyway."""
        check = self.check_for(case)
        return None if check is None else check.run(case)

    def check_for(self, case: Case) -> CapturedCheck | None:
        """The captured check of the case's shape (captured now if new), or None when the
        case needs the full check anyway."""
        if not case.well_formed:
            return None
        key = shape_key(case)
        if key in self.refused:
            return None
        check = self.checks.pop(key, None)
        if check is None:
            try:
                check = CapturedCheck(case, self.impl, self.settings, self.mutating)
            except Exception as e:  # a host read during capture, an error, ...
                if is_device_fault(e):
                    raise  # never a refused shape: the case faulted the device
                self.refused[key] = f"{type(e).__name__}: {e}"
                return None
        self.checks[key] = check
        while len(self.checks) > self.kept:
            self.checks.popitem(last=False)
        return check


class Screened(Eager):
    """Eager rows screened by a captured check (`fuzz --fast`): a case whose counters are all
    zero is a pass row at once; any other, the first case of each implementation and every
    ``FULL_EVERY``-th run the full check (which also sees what a replay cannot). With
    ``mutants``, a case that passes also has that many device mutants checked in its graph
    (diffcheck.mutants): the first one counted on gets the full check in its place."""

    screened = True

    def __init__(self, mutants: int = 0, one_by_one: bool = False) -> None:
        self.mutants, self.one_by_one = mutants, one_by_one


#: every this-many screened cases of an implementation get the full check anyway
FULL_EVERY = 16
_CHECKS: dict[tuple[str, bool], CapturedChecks] = {}
_SCREENED: dict[str, int] = {}
#: a screened pass row's note
SCREENED_NOTE = "screened by a captured check"
#: a fault row's words when one of a case's device mutants faulted, which one unknown
MUTANT_FAULT = "one of its device mutants"


def screened(job: Job, settings: RunSettings) -> list[Outcome] | Case | None:
    """The pass row of a case its captured check (and its mutants) count nothing on; a
    mutant that needs the full check instead of the case; None when the case itself needs
    it (see Screened)."""
    case = job.case
    if not isinstance(case, Case):
        return None
    count = getattr(job.mode, "mutants", 0)
    one_by_one = getattr(job.mode, "one_by_one", False)
    seen = _SCREENED[job.impl.name] = _SCREENED.get(job.impl.name, 0) + 1
    if seen % FULL_EVERY == 1 and not one_by_one:  # (one by one: finding a faulting mutant)
        return None
    checks = _CHECKS.get((job.impl.name, count > 0))
    if checks is None:
        checks = _CHECKS[job.impl.name, count > 0] = CapturedChecks(job.impl, settings,
                                                                    mutating=count > 0)
    began = time.perf_counter()
    try:
        check = checks.check_for(case)
        counts = None if check is None else check.run(case)
        if counts is None or any(counts.values()):
            return None
        failing = check.first_failing_mutant(case, count, one_by_one) if count else None
    except MutantFault as e:  # the mutant's fault row, or the case's when it is not known
        if e.index is None:
            return _faulted(job, settings, e.error, began, f"{MUTANT_FAULT} 1..{count}")
        return _faulted(dataclasses.replace(job, case=mutants.mutant(case, e.index)), settings,
                        e.error, began)
    except Exception as e:  # a fault of the device is this case's row; else the full check
        if is_device_fault(e):
            return _faulted(job, settings, e, began)
        return None
    if failing is not None:
        return mutants.mutant(case, failing)
    spec = get_path(case.path)
    contract = contract_of(spec, job.impl, case, settings.fill_override)
    checked = spec.workspace_size(case.kernel_inputs(), case.k)
    note = (f"{SCREENED_NOTE} ({settings.fillings} fillings, one call each, every counter "
            f"zero{f', for the case and {count} device mutants' if count else ''})")
    row = make_row(job, case, settings, contract, Comparison(checked, (), (note,)), "",
                   (time.perf_counter() - began) * 1e3, settings.fillings, Status.PASS)
    return [Outcome(row, mutants=count)]


def _faulted(job: Job, settings: RunSettings, error: BaseException,
             began: float, where: str = "") -> list[Outcome]:
    """The case's fault row: the device context is gone, the worker must be replaced."""
    why = " ".join(f"{type(error).__name__}: {error}".split())[:500]
    return ended(job, settings, Status.FAULT,
                 f"in the captured check{f' ({where})' if where else ''}: {why}",
                 (time.perf_counter() - began) * 1e3)
