"""Kernels that read one element outside a per-request buffer and then bound what they read by
their own checks, so that no filling of the red zones (constant, tagged or plausible) ever
reaches the output: on a GPU only the instrumented kernel sees these reads (issue 22).

Each is correct on every well-formed and malformed batch but for that one read.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _convert_row(region_ptr, topk_row_ptr, stride1, slots_ptr, ctx, out_ptr, fill,
                 NUM_TOPK_TOKENS: tl.constexpr, BLOCK_N: tl.constexpr):
    """One row, correctly: its region [region_ptr[0], region_ptr[1]) of out gets the slots of
    its positions inside the context, FILL elsewhere (the part both kernels share)."""
    out_start = tl.load(region_ptr)
    length = tl.load(region_ptr + 1) - out_start
    for col0 in range(0, NUM_TOPK_TOKENS, BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        in_region = cols < length
        pos = tl.load(topk_row_ptr + cols * stride1, mask=in_region, other=-1)
        valid = in_region & (pos >= 0) & (pos < ctx)
        slot = tl.load(slots_ptr + pos, mask=valid, other=0)
        tl.store(out_ptr + out_start + cols, tl.where(valid, slot, fill), mask=in_region)


@triton.jit
def _next_start_kernel(kv_indptr_ptr, page_kv_indptr_ptr, kv_indices_ptr, topk_ptr, out_ptr,
                       num_requests, stride0, stride1, fill,
                       NUM_TOPK_TOKENS: tl.constexpr, BLOCK_N: tl.constexpr):
    req = tl.program_id(0)
    kv_start = tl.load(kv_indptr_ptr + req)
    kv_end = tl.load(kv_indptr_ptr + req + 1)
    # "prefetch" the next request's end: the last program reads kv_indptr[R + 1], one past
    # the end, and then ignores it (it has no next request)
    next_end = tl.load(kv_indptr_ptr + req + 2)
    kv_end = tl.where(req + 1 < num_requests, tl.minimum(kv_end, next_end), kv_end)
    ctx = kv_end - kv_start
    _convert_row(page_kv_indptr_ptr + req, topk_ptr + req * stride0, stride1,
                 kv_indices_ptr + kv_start, ctx, out_ptr, fill, NUM_TOPK_TOKENS, BLOCK_N)


def decode_peeks_past_kv_indptr(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128,
                                out=None, fill=0):
    """The last request reads kv_indptr[R + 1] and discards it."""
    rows = kv_indptr.shape[0] - 1
    if out is None:
        out = torch.empty(rows * NUM_TOPK_TOKENS, dtype=torch.int32, device=kv_indptr.device)
    if rows > 0:
        _next_start_kernel[(rows,)](
            kv_indptr, page_kv_indptr, kv_indices, token_indices, out, rows,
            token_indices.stride(0), token_indices.stride(1), fill,
            NUM_TOPK_TOKENS=NUM_TOPK_TOKENS, BLOCK_N=BLOCK_N)
    return out


@triton.jit
def _request_first_kernel(sparse_kv_indptr_ptr, req_of_row_ptr, topk_ptr, kv_indices_ptr,
                          kv_indptr_ptr, out_ptr, stride0, stride1, num_requests, fill,
                          NUM_TOPK_TOKENS: tl.constexpr, BLOCK_N: tl.constexpr):
    t = tl.program_id(0)
    req = tl.load(req_of_row_ptr + t)
    # reads kv_indptr[req] before checking req: a -1 id (a padded token) reads kv_indptr[-1],
    # which the check below then throws away
    kv_start = tl.load(kv_indptr_ptr + req)
    kv_end = tl.load(kv_indptr_ptr + req + 1)
    req_ok = (req >= 0) & (req < num_requests)
    kv_start = tl.where(req_ok, kv_start, 0)
    ctx = tl.where(req_ok, kv_end - kv_start, 0)
    _convert_row(sparse_kv_indptr_ptr + t, topk_ptr + t * stride0, stride1,
                 kv_indices_ptr + kv_start, ctx, out_ptr, fill, NUM_TOPK_TOKENS, BLOCK_N)


def mtp_reads_before_kv_indptr(sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices,
                               kv_indptr, NUM_TOPK_TOKENS=2048, BLOCK_N=1024, out=None, fill=0):
    """A token whose request id is -1 reads kv_indptr[-1] before the id is checked."""
    tokens = min(sparse_kv_indptr.shape[0] - 1, token_to_seq_idxs.shape[0],
                 topk_indices.shape[0])
    if out is None:
        out = torch.empty((sparse_kv_indptr.shape[0] - 1) * NUM_TOPK_TOKENS, dtype=torch.int32,
                          device=kv_indptr.device)
    if tokens > 0:
        _request_first_kernel[(tokens,)](
            sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices, kv_indptr, out,
            topk_indices.stride(0), topk_indices.stride(1), kv_indptr.shape[0] - 1, fill,
            NUM_TOPK_TOKENS=NUM_TOPK_TOKENS, BLOCK_N=BLOCK_N)
    return out
