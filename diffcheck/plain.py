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

from dataclasses import dataclass, field

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
