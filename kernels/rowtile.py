"""The guarded tile loop shared by the safe kernels, and how a row is spread over programs.

A launch is a grid of (rows, column programs): program (r, c) converts tiles c, c + C, c + 2C,
... of row r, where C is the number of column programs and a tile is BLOCK_N columns. C = 1 is
the classic one-program-per-row loop; more column programs put more of a row's gathers in
flight at once, which only narrow tiles need. The defaults below come from the sweep in
docs/tiling.md (H100); the interpreter always takes C = 1, since every program instance costs
it time and none runs in parallel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

#: BLOCK_N -> (num_warps, column programs per row), chosen by `diffcheck bench --sweep`
TUNED: dict[int, tuple[int, int]] = {
    128: (1, 4),
    256: (2, 2),
    512: (4, 1),
    1024: (4, 1),
    2048: (4, 1),
}


def workspace(out: torch.Tensor | None, rows: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """The caller's ``out``, or a fresh ``rows * K`` int32 workspace on ``like``'s device."""
    if out is None:
        return torch.empty(rows * k, dtype=torch.int32, device=like.device)
    return out


def launch_shape(
    rows: int, k: int, block_n: int, num_warps: int | None, column_programs: int | None,
    device: torch.device,
) -> tuple[tuple[int, int], int]:
    """The grid and warp count of one launch: explicit values win, then the tuned table."""
    if block_n <= 0 or block_n & (block_n - 1):
        raise ValueError(f"BLOCK_N must be a power of two, got {block_n}")
    if k <= 0:
        raise ValueError(f"NUM_TOPK_TOKENS must be positive, got {k}")
    warps, columns = TUNED.get(block_n, (4, 1))
    if device.type == "cpu":
        columns = 1
    if num_warps is not None:
        warps = num_warps
    if column_programs is not None:
        columns = column_programs
    if warps <= 0 or warps & (warps - 1):
        raise ValueError(f"num_warps must be a power of two, got {warps}")
    if columns < 1:
        raise ValueError(f"column_programs must be at least 1, got {columns}")
    return (rows, max(1, min(columns, triton.cdiv(k, block_n)))), warps


@triton.jit
def region_limits(out_start, out_end, num_out, NUM_TOPK_TOKENS: tl.constexpr):
    """A row's written columns, first <= c < last: c < min(out_end - out_start, K) and
    out_start + c inside out (in int64, so nothing malformed wraps)."""
    os = out_start.to(tl.int64)
    length = tl.minimum(out_end.to(tl.int64) - os, NUM_TOPK_TOKENS)
    first = tl.minimum(tl.maximum(-os, 0), NUM_TOPK_TOKENS)
    last = tl.maximum(tl.minimum(length, num_out - os), 0)
    return first.to(tl.int32), last.to(tl.int32)


@triton.jit
def row_limits(kv_start, kv_end, num_kv, out_start, out_end, num_out,
               NUM_TOPK_TOKENS: tl.constexpr):
    """One row's guards, folded into four numbers (in int64, so nothing malformed wraps).

    A position p is valid when 0 <= p - lo < span (as unsigned): 0 <= p < kv_end - kv_start and
    kv_start + p inside kv_indices. A column c is written when first <= c < last:
    c < min(out_end - out_start, K) and out_start + c inside out. With lo and lo + span inside
    [0, 2^31), the unsigned comparison is exact for every int32 p, so the tile loop pays one
    comparison per bound.
    """
    ks = kv_start.to(tl.int64)
    os = out_start.to(tl.int64)
    lo = tl.minimum(tl.maximum(-ks, 0), 2147483647)
    hi = tl.maximum(tl.minimum(tl.minimum(kv_end.to(tl.int64), num_kv) - ks, 2147483647), 0)
    span = tl.maximum(hi - lo, 0)
    length = tl.minimum(out_end.to(tl.int64) - os, NUM_TOPK_TOKENS)
    first = tl.minimum(tl.maximum(-os, 0), NUM_TOPK_TOKENS)
    last = tl.maximum(tl.minimum(length, num_out - os), 0)
    return lo.to(tl.int32), span.to(tl.uint32), first.to(tl.int32), last.to(tl.int32)


@triton.jit
def convert_tiles_guarded(
    row_ptr,  # int32*: start of one top-k row (request-local positions, -1 unused)
    ti_stride1,  # element stride between columns of that row
    readable,  # columns of the row that exist (0 past the top-k buffer's rows): others FILL
    slots_ptr,  # int32*: kv_indices + kv_start, the row's request slice
    lo,  # valid positions: 0 <= p - lo < span, unsigned (row_limits)
    span,
    dst_ptr,  # int32*: out + out_start, the row's region
    first,  # written columns: first <= c < last (row_limits)
    last,
    fill,  # value written for an invalid entry
    BLOCK_N: tl.constexpr,
):
    width = tl.maximum(last - first, 0).to(tl.uint32)
    # This program's tiles: columns past the last written one are never visited.
    for col0 in range(tl.program_id(1) * BLOCK_N, last, tl.num_programs(1) * BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        # Positions are read once: evict them first (1-4% faster at 128K, docs/tiling.md).
        pos = tl.load(row_ptr + cols * ti_stride1, mask=cols < readable, other=-1,
                      eviction_policy="evict_first")
        valid = (pos - lo).to(tl.uint32, bitcast=True) < span
        # An invalid entry is the masked gather's `other`: FILL, with no select after it.
        slot = tl.load(slots_ptr + pos, mask=valid, other=fill)
        tl.store(dst_ptr + cols, slot, mask=(cols - first).to(tl.uint32, bitcast=True) < width)
