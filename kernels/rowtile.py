"""The guarded inner loop shared by the safe kernels: one top-k row into one output region."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def convert_row_guarded(
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
    NUM_TOPK_TOKENS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    for col0 in range(0, NUM_TOPK_TOKENS, BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        in_region = cols < length
        pos = tl.load(row_ptr + cols * ti_stride1, mask=cols < readable, other=-1)
        valid = in_region & (pos >= 0) & (pos < ctx)
        slot_at = kv_start + tl.where(valid, pos, 0)
        valid = valid & (slot_at >= 0) & (slot_at < num_kv)
        slot = tl.load(kv_indices_ptr + slot_at, mask=valid, other=0)
        dst = out_start + cols
        writable = in_region & (dst >= 0) & (dst < num_out)
        tl.store(out_ptr + dst, tl.where(valid, slot, fill), mask=writable)
