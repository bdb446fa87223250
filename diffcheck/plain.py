"""A case called plainly, for checkers a user already trusts (compute-sanitizer memcheck,
``TRITON_DEBUG=1``): every buffer in its own allocation, no red zones, no tags, no sandbox,
one eager call, then the output compared with the reference.

diffcheck's own staging puts every buffer between margins inside one allocation, which hides
an overrun from an external tool: its addresses stay inside that allocation. Here each tensor
is a separate allocation (with ``PYTORCH_NO_CUDA_MEMORY_CACHING=1``, a separate cudaMalloc),
so the external checker sees the real bounds. ``diffcheck call`` takes the options of a row's
reproduce command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from diffcheck.buffers import POISON
from diffcheck.calls import bind, contract_of
from diffcheck.case import Case
from diffcheck.job import Job
from diffcheck.paths import get_path
from diffcheck.settings import RunSettings


@dataclass
class _View:
    view: torch.Tensor


@dataclass
class PlainBuffers:
    """What ``calls.bind`` needs of a staging, with each tensor its own allocation."""

    inputs: dict[str, torch.Tensor]
    out: _View
    extras: dict = field(default_factory=dict)
    returned: bool = False

    def tensors(self) -> dict[str, torch.Tensor]:
        return self.inputs


@dataclass
class PlainResult:
    case_id: str
    implementation: str
    checked: int
    mismatches: int
    stray_writes: int
    error: str = ""

    def line(self) -> str:
        if self.error:
            return f"{self.case_id} {self.implementation}: error: {self.error}"
        return (f"{self.case_id} {self.implementation}: {self.checked} elements checked, "
                f"{self.mismatches} mismatched, {self.stray_writes} written outside the regions")

    @property
    def failed(self) -> bool:
        return bool(self.error or self.mismatches or self.stray_writes)


def call_plainly(job: Job, case: Case, settings: RunSettings) -> PlainResult:
    """One eager call of ``job.impl`` on ``case`` with plain buffers, judged exactly."""
    spec = get_path(case.path)
    contract = contract_of(spec, job.impl, case, settings.fill_override)
    device = settings.device
    whole = {name: t.to(device, torch.int32).clone() for name, t in case.inputs.items()}
    inputs = case.views(whole)
    out_size = spec.workspace_size(case.intended_inputs(), case.k)
    out = torch.full((out_size,), POISON, dtype=torch.int32, device=device)
    buffers = PlainBuffers(inputs, _View(out))
    name = job.impl.target if job.impl.outside else job.impl.name
    try:
        bind(spec, job.impl, settings.implementation(job.impl), buffers, contract)()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as e:  # the kernel's own error is the result
        return PlainResult(case.case_id, name, 0, 0, 0, f"{type(e).__name__}: {e}")
    intended = case.views({n: t.to(device) for n, t in
                           (case.intended or case.inputs).items()})
    expected, mask = spec.expected(intended, contract.k, contract.fill, contract.scalars,
                                   out_size)["out"]
    got = out.reshape(-1)
    mismatches = int((got[mask] != expected[mask]).sum()) if case.well_formed else 0
    stray = 0 if buffers.returned else int((got[~mask] != POISON).sum())
    return PlainResult(case.case_id, name, int(mask.sum()), mismatches, stray)


def call_each(path: str, impls: list[str], suites: list[str], cases: list[Path],
              case_patterns: list[str], seed: int, invalid_fill: int | None,
              graph_size: int | None, device: str, mode: str,
              show: Callable[[str], None]) -> bool:
    """`diffcheck call`: every selected case called once, plainly, one line each to
    ``show``; True when any failed (a mismatch, a stray write or an error). ``mode`` is
    only checked (a reproduce command's --mode is accepted): the call is always eager."""
    from diffcheck import backend, modes
    from diffcheck.errors import UsageError
    from diffcheck.executors import settings_for
    from diffcheck.selection import case_files, select

    if invalid_fill not in (None, 0, -1):
        raise UsageError(f"--invalid-fill must be 0 or -1, got {invalid_fill}")
    modes.select(mode)  # an unknown mode is still a usage error
    dev = backend.resolve(device)
    backend.prepare(dev)
    files = [str(p) for p in case_files(cases)]
    chosen = select(path, impls, suites, files, case_patterns, modes.select("eager"),
                    seed, invalid_fill, None, graph_size)
    settings = settings_for(chosen.impls, dev, seed, invalid_fill, interpreter_check=False,
                            isolation="none")
    failed = False
    with backend.interpreter_as_on_gpu(dev):
        for job in chosen.jobs():
            for row_case in job.mode.rows(job.case):
                result = call_plainly(job, row_case, settings)
                show(result.line())
                failed |= result.failed
    return failed
