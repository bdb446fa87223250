"""DSA prefill convert kernels (ATOM's ``..._dsa_prefill`` call): batch-flat top-k key
indices -> physical KV slots through a paged block table.

``guarded`` bounds the request id, every key, page and block id, the top-k row and every
store; ``unguarded`` trusts the request ids and keys (a fixture for the checker only). Both
take ATOM's call with one extra keyword, ``fill``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from diffcheck.kernels.rowtile import launch_shape, region_limits, workspace


@triton.jit
def _prefill_guarded_kernel(
    dsa_kv_indptr_ptr,  # int32 [T+1]: token t's region in out
    token_to_seq_idxs_ptr,  # int32 [T]: request of token t
    topk_ptr,  # int32 [T, K] (strided): batch-flat key indices, -1 unused
    block_table_ptr,  # int32 [R, B] (strided): physical block of request r's page b
    cu_seqlens_ptr,  # int32 [R+1]: request r's tokens (and keys) in the batch
    out_ptr,  # int32 [>= T*K]: flat output workspace
    num_seq_ids,
    num_rows,
    num_requests,
    width,
    num_out,
    tk_stride0,
    tk_stride1,
    bt_stride0,
    bt_stride1,
    fill,
    PAGE_SIZE: tl.constexpr,
    NUM_TOPK_TOKENS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    token = tl.program_id(0)
    req = tl.load(token_to_seq_idxs_ptr + token, mask=token < num_seq_ids, other=-1)
    known = (req >= 0) & (req < num_requests)
    req = tl.where(known, req, 0)
    start = tl.load(cu_seqlens_ptr + req, mask=known, other=0).to(tl.int64)
    end = tl.load(cu_seqlens_ptr + req + 1, mask=known, other=0).to(tl.int64)
    length = tl.where(known, end - start, 0)
    out_start = tl.load(dsa_kv_indptr_ptr + token)
    first, last = region_limits(out_start, tl.load(dsa_kv_indptr_ptr + token + 1), num_out,
                                NUM_TOPK_TOKENS)
    readable = tl.where(token < num_rows, last, 0)  # a row past the top-k buffer reads nothing
    # Row offsets in int64 (top-k and table rows): a [T, K] buffer or an [R, B] table may hold
    # more than 2^31 elements.
    row_ptr = topk_ptr + token.to(tl.int64) * tk_stride0
    for col0 in range(tl.program_id(1) * BLOCK_N, last, tl.num_programs(1) * BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        key = tl.load(row_ptr + cols * tk_stride1, mask=cols < readable, other=-1)
        s = key.to(tl.int64) - start
        page = s // PAGE_SIZE
        valid = (key >= 0) & (s >= 0) & (s < length) & (page < width)
        block = tl.load(block_table_ptr + req.to(tl.int64) * bt_stride0 + page * bt_stride1,
                        mask=valid, other=-1)
        valid = valid & (block >= 0)
        slot = block * PAGE_SIZE + (s % PAGE_SIZE).to(tl.int32)
        tl.store(out_ptr + out_start + cols, tl.where(valid, slot, fill),
                 mask=(cols >= first) & (cols < last))


@triton.jit
def _prefill_unguarded_kernel(
    dsa_kv_indptr_ptr,  # int32 [T+1]: token t's region in out
    token_to_seq_idxs_ptr,  # int32 [T]: trusted blindly as the request of token t
    topk_ptr,  # int32 [T, K] (strided): batch-flat key indices, -1 unused
    block_table_ptr,  # int32 [R, B] (strided)
    cu_seqlens_ptr,  # int32 [R+1]
    out_ptr,  # int32 [>= T*K]
    tk_stride0,
    tk_stride1,
    bt_stride0,
    bt_stride1,
    PAGE_SIZE: tl.constexpr,
    NUM_TOPK_TOKENS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    token = tl.program_id(0)
    req = tl.load(token_to_seq_idxs_ptr + token)  # no bound on the request id
    start = tl.load(cu_seqlens_ptr + req)
    out_start = tl.load(dsa_kv_indptr_ptr + token)
    length = tl.load(dsa_kv_indptr_ptr + token + 1) - out_start
    row_ptr = topk_ptr + token * tk_stride0
    for col0 in range(tl.program_id(1) * BLOCK_N, tl.minimum(length, NUM_TOPK_TOKENS),
                      tl.num_programs(1) * BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        in_region = cols < length
        key = tl.load(row_ptr + cols * tk_stride1, mask=in_region, other=-1)
        s = key - start  # no check that s lies in the request
        valid = in_region & (key >= 0)
        block = tl.load(block_table_ptr + req * bt_stride0 + (s // PAGE_SIZE) * bt_stride1,
                        mask=valid, other=0)
        tl.store(out_ptr + out_start + cols, tl.where(valid, block * PAGE_SIZE + s % PAGE_SIZE, 0),
                 mask=in_region)


def _strides(t: torch.Tensor) -> tuple[int, int]:
    return (t.stride(0), t.stride(1)) if t.dim() == 2 else (0, 0)


def prefill_guarded(
    dsa_qo_indptr: torch.Tensor,
    dsa_kv_indptr: torch.Tensor,
    token_to_seq_idxs: torch.Tensor,
    topk_indices: torch.Tensor,
    block_table: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    PAGE_SIZE: int = 1,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 1024,
    out: torch.Tensor | None = None,
    fill: int = 0,
    *,
    num_warps: int | None = None,
    column_programs: int | None = None,
) -> torch.Tensor:
    """Prefill convert that bounds every request id, key, page, block id, row and store."""
    if PAGE_SIZE < 1:
        raise ValueError(f"PAGE_SIZE must be at least 1, got {PAGE_SIZE}")
    num_tokens = dsa_kv_indptr.shape[0] - 1
    requests = min(cu_seqlens_q.shape[0] - 1, block_table.shape[0])
    grid, warps = launch_shape(num_tokens, NUM_TOPK_TOKENS, BLOCK_N, num_warps,
                               column_programs, dsa_kv_indptr.device)
    out = workspace(out, num_tokens, NUM_TOPK_TOKENS, dsa_kv_indptr)
    if num_tokens > 0:
        _prefill_guarded_kernel[grid](
            dsa_kv_indptr, token_to_seq_idxs, topk_indices, block_table, cu_seqlens_q, out,
            token_to_seq_idxs.shape[0], topk_indices.shape[0], requests,
            block_table.shape[1] if block_table.dim() == 2 else 0, out.numel(),
            *_strides(topk_indices), *_strides(block_table), fill,
            PAGE_SIZE=PAGE_SIZE, NUM_TOPK_TOKENS=NUM_TOPK_TOKENS, BLOCK_N=BLOCK_N,
            num_warps=warps,
        )
    return out


def prefill_unguarded(
    dsa_qo_indptr: torch.Tensor,
    dsa_kv_indptr: torch.Tensor,
    token_to_seq_idxs: torch.Tensor,
    topk_indices: torch.Tensor,
    block_table: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    PAGE_SIZE: int = 1,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 1024,
    out: torch.Tensor | None = None,
    fill: int = 0,
    *,
    num_warps: int | None = None,
    column_programs: int | None = None,
) -> torch.Tensor:
    """UNSAFE on purpose: a fixture for the checker, never a kernel to ship.

    Trusts token_to_seq_idxs and every key: a key outside its request (the previous
    request's, or past its end) reads another request's page or past the block table.
    Writes 0 for an unused entry whatever ``fill``.
    """
    num_tokens = dsa_kv_indptr.shape[0] - 1
    grid, warps = launch_shape(num_tokens, NUM_TOPK_TOKENS, BLOCK_N, num_warps,
                               column_programs, dsa_kv_indptr.device)
    out = workspace(out, num_tokens, NUM_TOPK_TOKENS, dsa_kv_indptr)
    if num_tokens > 0:
        _prefill_unguarded_kernel[grid](
            dsa_kv_indptr, token_to_seq_idxs, topk_indices, block_table, cu_seqlens_q, out,
            *_strides(topk_indices), *_strides(block_table),
            PAGE_SIZE=PAGE_SIZE, NUM_TOPK_TOKENS=NUM_TOPK_TOKENS, BLOCK_N=BLOCK_N,
            num_warps=warps,
        )
    return out
