"""MTP gather kernels: several query tokens per request, one top-k row per token.

``guarded`` bounds the request id, every position and every store; ``unguarded`` trusts
``token_to_seq_idxs`` and the positions blindly (a fixture for the checker only).
BLOCK_N defaults to 2048, not the contract's 1024: 2048-wide tiles measured fastest for the
guarded kernel on an H100 (docs/tiling.md); any power of two gives the same result.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from diffcheck.kernels.rowtile import convert_tiles_guarded, launch_shape, row_limits, workspace


@triton.jit
def _mtp_guarded_kernel(
    sparse_kv_indptr_ptr,  # int32 [T+1]: token t's region in out
    token_to_seq_idxs_ptr,  # int32 [T]: request of token t
    topk_indices_ptr,  # int32 [T, K] (strided): request-local positions, -1 unused
    kv_indices_ptr,  # int32 [N]: physical KV slots
    kv_indptr_ptr,  # int32 [R+1]: request r owns kv_indices[kv_indptr[r]:kv_indptr[r+1]]
    out_ptr,  # int32 [>= T*K]: flat output workspace
    num_seq_ids,
    num_rows,
    num_requests,
    num_kv,
    num_out,
    tk_stride0,
    tk_stride1,
    fill,
    NUM_TOPK_TOKENS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    token = tl.program_id(0)
    # A token without a request id (token_to_seq_idxs shorter than the regions) is unknown.
    has_id = token < num_seq_ids
    req = tl.load(token_to_seq_idxs_ptr + token, mask=has_id, other=-1)
    known = (req >= 0) & (req < num_requests)
    req = tl.where(known, req, 0)
    kv_start = tl.load(kv_indptr_ptr + req, mask=known, other=0)
    # An unknown request owns nothing (kv_end == kv_start), so its whole region is filled.
    kv_end = tl.load(kv_indptr_ptr + req + 1, mask=known, other=0)
    kv_end = tl.where(known, kv_end, kv_start)
    out_start = tl.load(sparse_kv_indptr_ptr + token)
    lo, span, first, last = row_limits(
        kv_start, kv_end, num_kv, out_start, tl.load(sparse_kv_indptr_ptr + token + 1), num_out,
        NUM_TOPK_TOKENS,
    )
    readable = tl.where(token < num_rows, last, 0)  # a row past the top-k buffer reads nothing
    # The row offset in int64: a [T, K] buffer may hold more than 2^31 elements.
    convert_tiles_guarded(
        topk_indices_ptr + token.to(tl.int64) * tk_stride0, tk_stride1, readable,
        kv_indices_ptr + kv_start, lo, span, out_ptr + out_start, first, last, fill, BLOCK_N,
    )


@triton.jit
def _mtp_unguarded_kernel(
    sparse_kv_indptr_ptr,  # int32 [T+1]: token t's region in out
    token_to_seq_idxs_ptr,  # int32 [T]: trusted blindly as the request of token t
    topk_indices_ptr,  # int32 [T, K] (strided): request-local positions, -1 unused
    kv_indices_ptr,  # int32 [N]: physical KV slots
    kv_indptr_ptr,  # int32 [R+1]: request r's slice starts at kv_indptr[r]
    out_ptr,  # int32 [>= T*K]: flat output workspace
    tk_stride0,
    tk_stride1,
    NUM_TOPK_TOKENS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    token = tl.program_id(0)
    req = tl.load(token_to_seq_idxs_ptr + token)  # no bound on the request id
    kv_start = tl.load(kv_indptr_ptr + req)
    out_start = tl.load(sparse_kv_indptr_ptr + token)
    length = tl.load(sparse_kv_indptr_ptr + token + 1) - out_start
    row_ptr = topk_indices_ptr + token * tk_stride0
    # The same tiling as the safe kernel (the loop stops at the region, at most K).
    for col0 in range(tl.program_id(1) * BLOCK_N, tl.minimum(length, NUM_TOPK_TOKENS),
                      tl.num_programs(1) * BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        in_region = cols < length
        pos = tl.load(row_ptr + cols * tk_stride1, mask=in_region,
                      eviction_policy="evict_first")
        slot = tl.load(kv_indices_ptr + kv_start + pos, mask=in_region)  # no check on pos
        tl.store(out_ptr + out_start + cols, slot, mask=in_region)


def mtp_guarded(
    sparse_kv_indptr: torch.Tensor,
    token_to_seq_idxs: torch.Tensor,
    topk_indices: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_indptr: torch.Tensor,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 2048,
    out: torch.Tensor | None = None,
    fill: int = 0,
    *,
    num_warps: int | None = None,
    column_programs: int | None = None,
) -> torch.Tensor:
    """MTP gather that bounds the request id, the top-k row, every position, gather and store.

    ``num_warps`` and ``column_programs`` override the tuned launch shape (kernels/rowtile.py).
    """
    num_tokens = sparse_kv_indptr.shape[0] - 1
    grid, warps = launch_shape(num_tokens, NUM_TOPK_TOKENS, BLOCK_N, num_warps,
                               column_programs, sparse_kv_indptr.device)
    out = workspace(out, num_tokens, NUM_TOPK_TOKENS, sparse_kv_indptr)
    if num_tokens > 0:
        _mtp_guarded_kernel[grid](
            sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices, kv_indptr, out,
            token_to_seq_idxs.shape[0], topk_indices.shape[0], kv_indptr.shape[0] - 1,
            kv_indices.numel(), out.numel(),
            topk_indices.stride(0), topk_indices.stride(1), fill,
            NUM_TOPK_TOKENS=NUM_TOPK_TOKENS, BLOCK_N=BLOCK_N, num_warps=warps,
        )
    return out


def mtp_unguarded(
    sparse_kv_indptr: torch.Tensor,
    token_to_seq_idxs: torch.Tensor,
    topk_indices: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_indptr: torch.Tensor,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 2048,
    out: torch.Tensor | None = None,
    fill: int = 0,
    *,
    num_warps: int | None = None,
    column_programs: int | None = None,
) -> torch.Tensor:
    """UNSAFE on purpose: a fixture for the checker, never a kernel to ship.

    Trusts token_to_seq_idxs (no bound on the request id) and the positions (no check on p);
    writes the raw slot and ignores ``fill``. Its launch shape is the safe kernel's.
    """
    num_tokens = sparse_kv_indptr.shape[0] - 1
    grid, warps = launch_shape(num_tokens, NUM_TOPK_TOKENS, BLOCK_N, num_warps,
                               column_programs, sparse_kv_indptr.device)
    out = workspace(out, num_tokens, NUM_TOPK_TOKENS, sparse_kv_indptr)
    if num_tokens > 0:
        _mtp_unguarded_kernel[grid](
            sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices, kv_indptr, out,
            topk_indices.stride(0), topk_indices.stride(1),
            NUM_TOPK_TOKENS=NUM_TOPK_TOKENS, BLOCK_N=BLOCK_N, num_warps=warps,
        )
    return out
