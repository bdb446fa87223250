"""The guarded tile loop shared by the safe kernels, and how a row is spread over programs.

A launch is a grid of (rows, column programs): program (r, c) converts tiles c, c + C, c + 2C,
... of row r, where C is the number of column programs and a tile is BLOCK_N columns. C = 1 is
the classic one-program-per-row loop; more column programs put more gathers in flight, which
is what the long-context regimes are bound by. The defaults below come from the sweep in
docs/tiling.md (H100); the interpreter always takes C = 1, since every program instance costs
it time and none runs in parallel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

#: BLOCK_N -> (num_warps, column programs per row), chosen by `diffcheck bench --sweep`
TUNED: dict[int, tuple[int, int]] = {
    128: (4, 4),
    256: (4, 2),
    512: (4, 2),
    1024: (8, 1),
    2048: (8, 1),
}


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
def convert_tiles_guarded(
    row_ptr,  # int32*: start of one top-k row (request-local positions, -1 unused)
    ti_stride1,  # element stride between columns of that row
    readable,  # columns of the row that exist (0 past the top-k buffer's rows): others FILL
    kv_indices_ptr,  # int32 [N]: physical KV slots
    kv_start,  # first slot of the row's request
    ctx,  # length of the row's request (0 for an unknown request)
    num_kv,  # N, so no gather leaves kv_indices
    out_ptr,  # int32 [num_out]: flat output workspace
    out_start,  # first element of the row's region
    length,  # region length, already clipped to NUM_TOPK_TOKENS
    num_out,  # workspace size, so no store leaves out
    fill,  # value written for an invalid entry
    BLOCK_N: tl.constexpr,
):
    # This program's tiles: columns past the region are never visited.
    for col0 in range(tl.program_id(1) * BLOCK_N, length, tl.num_programs(1) * BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        in_region = cols < length
        # Positions are read once: evict them first (measured 3-4% at 128K, docs/tiling.md).
        pos = tl.load(row_ptr + cols * ti_stride1, mask=cols < readable, other=-1,
                      eviction_policy="evict_first")
        valid = in_region & (pos >= 0) & (pos < ctx)
        slot_at = kv_start + tl.where(valid, pos, 0)
        valid = valid & (slot_at >= 0) & (slot_at < num_kv)
        slot = tl.load(kv_indices_ptr + slot_at, mask=valid, other=0)
        dst = out_start + cols
        writable = in_region & (dst >= 0) & (dst < num_out)
        tl.store(out_ptr + dst, tl.where(valid, slot, fill), mask=writable)
