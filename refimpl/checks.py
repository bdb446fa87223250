"""Host-side contract checks shared by the paths: what makes a batch well-formed."""

from __future__ import annotations

import torch


def same_length(tensors: dict[str, torch.Tensor], names: tuple[str, ...]) -> list[str]:
    """The named indptrs must all have R+1 entries."""
    sizes = {name: tensors[name].numel() for name in names}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{n} has {s}" for n, s in sizes.items())
        return [f"indptrs disagree on the number of requests ({listed})"]
    return []


def check_indptr(name: str, indptr: torch.Tensor) -> list[str]:
    """An indptr starts at 0 and never decreases."""
    values = indptr.cpu().to(torch.int64)
    if values.numel() == 0:
        return [f"{name} is empty (it needs R+1 entries)"]
    if int(values[0]) != 0:
        return [f"{name}[0] is {int(values[0])}, expected 0"]
    steps = values[1:] - values[:-1]
    if steps.numel() and int(steps.min()) < 0:
        at = int(torch.nonzero(steps < 0)[0])
        return [f"{name} decreases at entry {at + 1} ({int(values[at])} -> {int(values[at + 1])})"]
    return []


def check_slots(kv_indices: torch.Tensor, kv_indptr: torch.Tensor) -> list[str]:
    """Slots are >= 0 and kv_indptr stays inside kv_indices."""
    problems = []
    if kv_indices.numel() and int(kv_indices.min()) < 0:
        problems.append("kv_indices holds a negative slot")
    end = int(kv_indptr[-1]) if kv_indptr.numel() else 0
    if end > kv_indices.numel():
        problems.append(f"kv_indptr ends at {end} but kv_indices has {kv_indices.numel()} entries")
    return problems


def check_rows(name: str, rows: torch.Tensor, needed: int, k: int) -> list[str]:
    """The top-k tensor has at least one row per query token and at least K columns."""
    if rows.dim() != 2:
        return [f"{name} has {rows.dim()} dimensions, expected 2"]
    if rows.shape[0] < needed or rows.shape[1] < k:
        return [f"{name} is {tuple(rows.shape)}, expected at least ({needed}, {k})"]
    return []


def check_regions_fit(
    name: str, indptr: torch.Tensor, lengths: torch.Tensor, capacity: int, exact: bool = True
) -> list[str]:
    """Regions have the contract's lengths and fit in the R*K workspace."""
    region_len = (indptr[1:] - indptr[:-1]).cpu().to(torch.int64)
    lengths = lengths.to(torch.int64)
    bad = region_len > lengths if not exact else region_len != lengths
    if bad.any():
        at = int(torch.nonzero(bad)[0])
        return [
            f"{name} gives row {at} a region of {int(region_len[at])}, "
            f"expected {int(lengths[at])}{'' if exact else ' at most'}"
        ]
    if int(indptr[-1]) > capacity:
        return [f"{name} ends at {int(indptr[-1])}, beyond the {capacity}-element workspace"]
    return []
