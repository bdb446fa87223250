"""Shared scatter of gathered slots into flat output regions, without host synchronisation.

Both sparse paths reduce to the same formula once each output row knows its KV slice and its
region: ``out[region_start[i] + j] = kv_indices[kv_start[i] + p]`` when ``j < region_len[i]``
and ``0 <= p < ctx[i]`` (``p = positions[i, j]``, ``ctx[i] = kv_end[i] - kv_start[i]``), else
``fill``.
"""

from __future__ import annotations

import torch


def scatter_regions(
    kv_indices: torch.Tensor,
    kv_start: torch.Tensor,
    kv_end: torch.Tensor,
    positions: torch.Tensor,
    region_start: torch.Tensor,
    region_end: torch.Tensor,
    num_out: int,
    fill: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(expected, mask)`` of length ``num_out``; ``mask`` marks the region elements.

    Row i owns ``kv_indices[kv_start[i]:kv_end[i]]`` and writes ``out[region_start[i] + j]``
    for ``j < min(region_end[i] - region_start[i], width)``. Every index is bounded on the
    device (an invalid lane reads an in-range slot, a lane outside ``out`` lands in a trash
    element) instead of being checked on the host, so the function is graph-capturable and
    costs no device-to-host copy. The bounds fold into two numbers per row, so each
    [rows, width] pass is a single comparison: an eager call is about 35 small kernels.
    """
    rows, width = positions.shape
    device = positions.device
    num_kv = kv_indices.numel()
    int_max = torch.iinfo(torch.int32).max
    # Per row, in int64 so no malformed value overflows: p is valid when lo <= p < hi, i.e.
    # 0 <= p < kv_end - kv_start and kv_start + p inside kv_indices.
    kv_start = kv_start.to(torch.int64)
    lo = (-kv_start).clamp(0, int_max)
    hi = (kv_end.clamp(max=num_kv) - kv_start).clamp(0, int_max)
    # A valid p reads slot p + shift; an invalid lane reads lo + shift, which is kv_start + lo
    # (inside kv_indices) in a row with valid positions and 0 otherwise.
    shift = torch.where(hi > lo, kv_start, -lo)
    # The [rows, width] passes then run in one dtype (int32, like the positions): mixed dtypes
    # would make every pass cast element by element.
    lo, hi, shift = (t.to(torch.int32) for t in (lo, hi, shift))
    valid = (positions >= lo[:, None]) & (positions < hi[:, None])
    if num_kv == 0:
        values = torch.full((rows, width), fill, dtype=torch.int32, device=device)
    else:
        src = torch.where(valid, positions, lo[:, None]) + shift[:, None]
        gathered = kv_indices.reshape(-1).index_select(0, src.reshape(-1)).view(rows, width)
        values = torch.where(valid, gathered, fill)  # a scalar: no host-to-device copy
    return place_rows(values, region_start, region_end, num_out)


def place_rows(values: torch.Tensor, region_start: torch.Tensor, region_end: torch.Tensor,
               num_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i's values go to ``out[region_start[i] + j]`` for ``j < min(region length,
    width)``; ``(expected, mask)`` of length ``num_out``. Every index is bounded on the
    device (a lane outside ``out`` lands in a trash element): graph-capturable, sync-free."""
    rows, width = values.shape
    device = values.device
    # Column c is written when c < region length, c < width and 0 <= region_start + c < num_out.
    region_start = region_start.to(torch.int64)
    first = (-region_start).clamp(0, width)
    last = torch.minimum(region_end, region_start + width).clamp(max=num_out) - region_start
    cols = torch.arange(width, device=device)
    keep = (cols >= first[:, None]) & (cols < last[:, None])
    dst = torch.where(keep, region_start[:, None] + cols, num_out).reshape(-1)  # num_out: trash
    expected = torch.zeros(num_out + 1, dtype=torch.int32, device=device)
    expected.scatter_(0, dst, values.reshape(-1))
    mask = torch.zeros(num_out + 1, dtype=torch.bool, device=device)
    mask.scatter_(0, dst, keep.reshape(-1))
    return expected[:num_out], mask[:num_out]


def rows_or_unused(rows: torch.Tensor, needed: int, width: int) -> torch.Tensor:
    """The first ``needed`` rows of a top-k tensor; rows it lacks (a malformed batch) read as
    unused (-1), as a safe kernel treats them."""
    rows = rows[:needed, :width]
    if rows.shape[0] < needed:
        missing = rows.new_full((needed - rows.shape[0], rows.shape[1]), -1)
        rows = torch.cat([rows, missing])
    return rows


def apply_reference(
    out: torch.Tensor | None, expected: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Write a reference result into ``out`` like a kernel would: regions only."""
    if out is None:
        out = torch.zeros_like(expected)
    out.copy_(torch.where(mask, expected, out))
    return out
