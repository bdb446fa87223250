"""Mutants of a case made on the device: production-size cases at the rate of a replay.

Drawing a 512-request case on the host costs 0.07-2 s, far more than checking it in a captured
graph (diffcheck.fastcheck). So `fuzz --fast` turns each drawn case into many: mutant ``i`` of
a case changes some of its values, inside the captured check's graph, from ``(key, i)`` alone.
The same integer arithmetic on the host rebuilds any mutant exactly (``mutant``), so a mutant
the captured check counts something on is checked in full, saved and replayed like any case.

Only values whose every setting keeps the case well-formed change, by tensor role (shapes,
indptrs, ids and tables stay): ``positions`` (-1, one off, another row's position, 0,
negative, beyond, far beyond: 2^16 to 2^17 past the position, not 2^30, so that an unguarded
read lands near the buffers rather than faulting the device, which would cost a worker per
mutant while shrinking) and ``slots`` (odd values from 2^24 to below 2^30, where slot
arithmetic through float or a narrow type loses bits; red-zone tags stay above them). Mutant 0
is the case itself; the share of values changed cycles with ``i`` through 1/1024, 1/128, 1/16
and 1/2 (at most PICKS values), so one odd entry in a large batch and a batch of many odd
entries are both drawn.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from diffcheck.case import Case
from diffcheck.job import Job

#: the roles whose values mutants change
MUTABLE = ("positions", "slots")
#: indices per key: key = seed part * SPAN + mutant index
SPAN = 1 << 20
#: values a mutant may change per tensor, at most: the share of a large tensor is capped, so
#: the work of a mutant is bounded by this, not by the tensor's size
PICKS = 16384
_P = 2147483647  # 2^31 - 1: every product below stays inside int64


def key_of(case: Case) -> int:
    """The key of a case's mutant 0 (its seed decides the rest)."""
    return (case.seed % SPAN) * SPAN


def _mix(x: torch.Tensor) -> torch.Tensor:
    for a in (48271, 69621):
        x = x * a % _P
        x = x ^ (x >> 13)
    return x


def _random(key: torch.Tensor, values: torch.Tensor, salt: int) -> torch.Tensor:
    """A pseudo-random int64 in [0, 2^31 - 1) per value (each below 2^32) from a device scalar
    ``key``: the same on every device (no generator state, no overflow), the same for equal
    values."""
    return _mix((key % _P * 1000003 % _P + values * 7919 + salt * 104729) % _P)


def _picks(key: torch.Tensor, n: int, salt: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(elements picked, where each is written, a random value per pick) for a tensor of n
    elements: PICKS candidates, of which the mutant's share is active; an inactive pick is
    written to a scratch element past the end. A value made depends on its element alone, so
    an element picked twice is written the same value twice (deterministic on a GPU)."""
    m = min(n, PICKS)
    index = key % SPAN
    shift = 10 - 3 * ((index - 1) % 4)  # 1/1024, 1/128, 1/16, 1/2 of the values
    share = (torch.full_like(key, n) // torch.pow(2, shift)).clamp(1, m)
    j = torch.arange(m, device=key.device, dtype=torch.int64)
    at = _random(key, j, salt) % n
    target = torch.where((j < share) & (index != 0), at, n)
    return at, target, _random(key, at, salt + 1)


def _written(flat: torch.Tensor, made: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    work = torch.cat([flat, flat.new_zeros(1)])
    work.index_put_((target,), made.to(flat.dtype))
    return work[:-1]


def _positions(flat: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    n = flat.numel()
    at, target, r = _picks(key, n, 1)
    x = flat[at].to(torch.int64)
    kind = r % 8
    made = torch.where(kind == 0, -1, x)
    made = torch.where(kind == 1, x + 1, made)
    made = torch.where(kind == 2, x - 1, made)
    made = torch.where(kind == 3, flat[r // 8 % n].to(torch.int64), made)
    made = torch.where(kind == 4, 0, made)
    made = torch.where(kind == 5, -(r // 8 % 65536) - 2, made)
    made = torch.where(kind == 6, x + 1 + r // 8 % 4096, made)
    made = torch.where(kind == 7, x + (1 << 16) + r // 8 % (1 << 16), made)
    return _written(flat, made.clamp(-(1 << 31), (1 << 31) - 1), target)


def _slots(flat: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    at, target, r = _picks(key, flat.numel(), 3)
    high = torch.pow(2, 24 + r % 6)  # 2^24 .. 2^29: odd slots from 2^24 to below 2^30
    return _written(flat, flat[at].to(torch.int64) % (1 << 23) * 2 + 1 + high, target)


def mutate(base: dict[str, torch.Tensor], roles: dict[str, str], key: torch.Tensor,
           out: dict[str, torch.Tensor]) -> None:
    """Write mutant ``key`` of ``base`` into ``out`` (same names and shapes; whole buffers,
    strided views included). Device work only: it runs inside a captured graph."""
    for name, source in base.items():
        role = roles.get(name, "")
        if role not in MUTABLE:
            out[name].copy_(source)
            continue
        flat = source.reshape(-1)
        if flat.numel() == 0:
            continue
        made = _positions(flat, key) if role == "positions" else _slots(flat, key)
        out[name].copy_(made.reshape(source.shape))


def roles_of(case: Case) -> dict[str, str]:
    from diffcheck.paths import get_path

    spec = get_path(case.path)
    return {name: spec.tensor(name).role for name in case.inputs}


def mutant(case: Case, index: int) -> Case:
    """Mutant ``index`` of a well-formed case, rebuilt on the host: the very values the device
    made (named ``<case>-m<index>``)."""
    if not 0 <= index < SPAN:
        raise ValueError(f"mutant index {index} outside 0..{SPAN - 1}")
    inputs = {n: t.detach().cpu().clone() for n, t in case.inputs.items()}
    key = torch.tensor(key_of(case) + index, dtype=torch.int64)
    mutate({n: t.detach().cpu() for n, t in case.inputs.items()}, roles_of(case), key, inputs)
    changed = sum(int((inputs[n] != case.inputs[n].cpu()).sum()) for n in inputs)
    return replace(case, name=f"{case.name}-m{index}", inputs=inputs, mutant=index,
                   description=f"{case.description}; device mutant {index} ({changed} values "
                               "changed)")


def running(job: Job, index: int | None) -> Job:
    """``job`` as the row of a job stopped while its device mutant ``index`` ran names it
    (diffcheck.heartbeat; None: no mutant was running)."""
    if index is None or not isinstance(job.case, Case):
        return job
    return replace(job, case=mutant(job.case, index))
