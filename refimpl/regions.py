"""Shared scatter of gathered slots into flat output regions, without host synchronisation.

Both sparse paths reduce to the same formula once each output row knows its KV slice and its
region: ``out[region_start[i] + j] = kv_indices[kv_start[i] + p]`` when ``j < region_len[i]``
and ``0 <= p < ctx[i]`` (``p = positions[i, j]``), else ``fill``.
"""

from __future__ import annotations

import torch


def scatter_regions(
    kv_indices: torch.Tensor,
    kv_start: torch.Tensor,
    ctx: torch.Tensor,
    positions: torch.Tensor,
    region_start: torch.Tensor,
    region_len: torch.Tensor,
    num_out: int,
    fill: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(expected, mask)`` of length ``num_out``; ``mask`` marks the region elements.

    Every index is clamped or redirected to a trash slot instead of being checked on the host,
    so the function is graph-capturable and costs no device-to-host copy.
    """
    rows, width = positions.shape
    device = positions.device
    cols = torch.arange(width, device=device, dtype=torch.int64)
    region_len = region_len.to(torch.int64).clamp(min=0, max=width)
    in_region = cols[None, :] < region_len[:, None]

    p = positions.to(torch.int64)
    ctx = ctx.to(torch.int64)
    valid = in_region & (p >= 0) & (p < ctx[:, None])
    num_kv = kv_indices.numel()
    if num_kv == 0:
        values = torch.full((rows, width), fill, dtype=torch.int32, device=device)
    else:
        src = (kv_start.to(torch.int64)[:, None] + torch.where(valid, p, 0)).clamp(0, num_kv - 1)
        gathered = kv_indices.reshape(-1)[src.reshape(-1)].reshape(rows, width)
        values = torch.where(valid, gathered, fill)  # a scalar: no host-to-device copy

    dst = region_start.to(torch.int64)[:, None] + cols[None, :]
    keep = in_region & (dst >= 0) & (dst < num_out)
    dst = torch.where(keep, dst, num_out).reshape(-1)  # element num_out is a trash slot
    expected = torch.zeros(num_out + 1, dtype=torch.int32, device=device)
    expected.index_put_((dst,), values.reshape(-1).to(torch.int32))
    mask = torch.zeros(num_out + 1, dtype=torch.bool, device=device)
    mask.index_put_((dst,), keep.reshape(-1))
    # A trash write may have landed with keep=False on a real index only if dst was redirected,
    # which it never is for kept lanes; the last element is the trash slot and is dropped.
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
