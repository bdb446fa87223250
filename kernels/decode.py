"""Decode convert kernels: request-local top-k positions -> physical KV slots.

Three variants share one call signature (DESIGN.md, "decode") and differ only in their guards:
``guarded`` bounds every access, ``pid`` takes the row from the program id, ``unguarded``
reproduces the kernel that faulted under graph replay (a fixture for the checker only).
BLOCK_N defaults to 1024, not the contract's 128: 1024-wide tiles measured fastest on an H100
(docs/tiling.md); any power of two gives the same result.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from diffcheck.kernels.rowtile import convert_tiles_guarded, launch_shape, row_limits, workspace


@triton.jit
def _decode_guarded_kernel(
    qo_indptr_ptr,  # int32 [R+1]: query rows of request r are qo_indptr[r]..qo_indptr[r+1]
    kv_indptr_ptr,  # int32 [R+1]: request r owns kv_indices[kv_indptr[r]:kv_indptr[r+1]]
    page_kv_indptr_ptr,  # int32 [R+1]: request r's region in out
    kv_indices_ptr,  # int32 [N]: physical KV slots
    token_indices_ptr,  # int32 [T, K] (strided): request-local positions, -1 unused
    out_ptr,  # int32 [>= R*K]: flat output workspace
    num_requests,
    num_rows,
    num_kv,
    num_out,
    ti_stride0,
    ti_stride1,
    fill,
    NUM_TOPK_TOKENS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    req = tl.program_id(0)
    # The query-row loop is clamped to rows that exist: a stale qo_indptr cannot walk past R
    # requests, nor past the rows the top-k buffer has (row-count skew).
    row_start = tl.maximum(tl.load(qo_indptr_ptr + req), 0)
    row_end = tl.minimum(tl.load(qo_indptr_ptr + req + 1), tl.minimum(num_requests, num_rows))
    kv_start = tl.load(kv_indptr_ptr + req)
    out_start = tl.load(page_kv_indptr_ptr + req)
    lo, span, first, last = row_limits(
        kv_start, tl.load(kv_indptr_ptr + req + 1), num_kv, out_start,
        tl.load(page_kv_indptr_ptr + req + 1), num_out, NUM_TOPK_TOKENS,
    )
    for row in range(row_start, row_end):
        # The row offset in int64: a [T, K] buffer may hold more than 2^31 elements (tl.cast,
        # since the interpreter's loop variable is a Python int, without .to).
        convert_tiles_guarded(
            token_indices_ptr + tl.cast(row, tl.int64) * ti_stride0, ti_stride1, last,
            kv_indices_ptr + kv_start, lo, span, out_ptr + out_start, first, last, fill, BLOCK_N,
        )


@triton.jit
def _decode_pid_kernel(
    kv_indptr_ptr,  # int32 [R+1]: request r owns kv_indices[kv_indptr[r]:kv_indptr[r+1]]
    page_kv_indptr_ptr,  # int32 [R+1]: request r's region in out
    kv_indices_ptr,  # int32 [N]: physical KV slots
    token_indices_ptr,  # int32 [T, K] (strided): request-local positions, -1 unused
    out_ptr,  # int32 [>= R*K]: flat output workspace
    num_rows,
    num_kv,
    num_out,
    ti_stride0,
    ti_stride1,
    fill,
    NUM_TOPK_TOKENS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # Decode has one query token per request, so the top-k row is the program id itself and
    # qo_indptr (the buffer that went stale in the GLM-5.2 failure) is never read.
    req = tl.program_id(0)
    kv_start = tl.load(kv_indptr_ptr + req)
    out_start = tl.load(page_kv_indptr_ptr + req)
    lo, span, first, last = row_limits(
        kv_start, tl.load(kv_indptr_ptr + req + 1), num_kv, out_start,
        tl.load(page_kv_indptr_ptr + req + 1), num_out, NUM_TOPK_TOKENS,
    )
    readable = tl.where(req < num_rows, last, 0)  # a row past the top-k buffer reads nothing
    # The row offset in int64: a [T, K] buffer may hold more than 2^31 elements.
    convert_tiles_guarded(
        token_indices_ptr + req.to(tl.int64) * ti_stride0, ti_stride1, readable,
        kv_indices_ptr + kv_start, lo, span, out_ptr + out_start, first, last, fill, BLOCK_N,
    )


@triton.jit
def _decode_unguarded_kernel(
    qo_indptr_ptr,  # int32 [R+1]: trusted blindly as the query-row range of request r
    kv_indptr_ptr,  # int32 [R+1]: request r's slice starts at kv_indptr[r]
    page_kv_indptr_ptr,  # int32 [R+1]: request r's region in out
    kv_indices_ptr,  # int32 [N]: physical KV slots
    token_indices_ptr,  # int32 [T, K] (strided): request-local positions, -1 unused
    out_ptr,  # int32 [>= R*K]: flat output workspace
    ti_stride0,
    ti_stride1,
    NUM_TOPK_TOKENS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    req = tl.program_id(0)
    row_start = tl.load(qo_indptr_ptr + req)
    row_end = tl.load(qo_indptr_ptr + req + 1)
    kv_start = tl.load(kv_indptr_ptr + req)
    out_start = tl.load(page_kv_indptr_ptr + req)
    length = tl.load(page_kv_indptr_ptr + req + 1) - out_start
    for row in range(row_start, row_end):
        row_ptr = token_indices_ptr + row * ti_stride0  # no row bound
        # The same tiling as the safe kernels (the loop stops at the region, at most K).
        for col0 in range(tl.program_id(1) * BLOCK_N, tl.minimum(length, NUM_TOPK_TOKENS),
                          tl.num_programs(1) * BLOCK_N):
            cols = col0 + tl.arange(0, BLOCK_N)
            in_region = cols < length
            pos = tl.load(row_ptr + cols * ti_stride1, mask=in_region,
                          eviction_policy="evict_first")
            slot = tl.load(kv_indices_ptr + kv_start + pos, mask=in_region)  # no check on pos
            tl.store(out_ptr + out_start + cols, slot, mask=in_region)


def _safe_request_count(*indptrs: torch.Tensor) -> int:
    """Requests every indptr can describe: skewed lengths must not send a program past one."""
    return min(t.shape[0] for t in indptrs) - 1


def _check_block_size(block_size: int) -> None:
    if block_size != 1:
        raise ValueError(f"decode kernels support BLOCK_SIZE=1 only, got {block_size}")


def decode_guarded(
    qo_indptr: torch.Tensor,
    kv_indptr: torch.Tensor,
    page_kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    token_indices: torch.Tensor,
    BLOCK_SIZE: int = 1,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 1024,
    out: torch.Tensor | None = None,
    fill: int = 0,
    *,
    num_warps: int | None = None,
    column_programs: int | None = None,
) -> torch.Tensor:
    """Decode convert that bounds every load and store; still walks qo_indptr's query rows.

    ``num_warps`` and ``column_programs`` override the tuned launch shape (kernels/rowtile.py).
    """
    _check_block_size(BLOCK_SIZE)
    num_requests = _safe_request_count(qo_indptr, kv_indptr, page_kv_indptr)
    grid, warps = launch_shape(num_requests, NUM_TOPK_TOKENS, BLOCK_N, num_warps,
                               column_programs, kv_indptr.device)
    out = workspace(out, num_requests, NUM_TOPK_TOKENS, kv_indptr)
    if num_requests > 0:
        _decode_guarded_kernel[grid](
            qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices, out,
            num_requests, token_indices.shape[0], kv_indices.numel(), out.numel(),
            token_indices.stride(0), token_indices.stride(1), fill,
            NUM_TOPK_TOKENS=NUM_TOPK_TOKENS, BLOCK_N=BLOCK_N, num_warps=warps,
        )
    return out


def decode_pid(
    qo_indptr: torch.Tensor,
    kv_indptr: torch.Tensor,
    page_kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    token_indices: torch.Tensor,
    BLOCK_SIZE: int = 1,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 1024,
    out: torch.Tensor | None = None,
    fill: int = 0,
    *,
    num_warps: int | None = None,
    column_programs: int | None = None,
) -> torch.Tensor:
    """Decode convert with the row from the program id; never reads qo_indptr (decode only)."""
    _check_block_size(BLOCK_SIZE)
    num_requests = _safe_request_count(kv_indptr, page_kv_indptr)
    grid, warps = launch_shape(num_requests, NUM_TOPK_TOKENS, BLOCK_N, num_warps,
                               column_programs, kv_indptr.device)
    out = workspace(out, num_requests, NUM_TOPK_TOKENS, kv_indptr)
    if num_requests > 0:
        _decode_pid_kernel[grid](
            kv_indptr, page_kv_indptr, kv_indices, token_indices, out,
            token_indices.shape[0], kv_indices.numel(), out.numel(),
            token_indices.stride(0), token_indices.stride(1), fill,
            NUM_TOPK_TOKENS=NUM_TOPK_TOKENS, BLOCK_N=BLOCK_N, num_warps=warps,
        )
    return out


def decode_unguarded(
    qo_indptr: torch.Tensor,
    kv_indptr: torch.Tensor,
    page_kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    token_indices: torch.Tensor,
    BLOCK_SIZE: int = 1,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 1024,
    out: torch.Tensor | None = None,
    fill: int = 0,
    *,
    num_warps: int | None = None,
    column_programs: int | None = None,
) -> torch.Tensor:
    """UNSAFE on purpose: a fixture for the checker, never a kernel to ship.

    Faithful to the kernel that faulted: loops over qo_indptr[r]..qo_indptr[r+1], loads the
    top-k row without a row bound, and loads kv_indices[kv_start + p] masked only by the column
    bound, with no check on p (so p = -1 with kv_start == 0 reads kv_indices[-1]). It writes the
    raw slot and ignores ``fill``. Its launch shape is the safe kernels', so `diffcheck bench`
    prices their guards against it.
    """
    _check_block_size(BLOCK_SIZE)
    num_requests = kv_indptr.shape[0] - 1
    grid, warps = launch_shape(num_requests, NUM_TOPK_TOKENS, BLOCK_N, num_warps,
                               column_programs, kv_indptr.device)
    out = workspace(out, num_requests, NUM_TOPK_TOKENS, kv_indptr)
    if num_requests > 0:
        _decode_unguarded_kernel[grid](
            qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices, out,
            token_indices.stride(0), token_indices.stride(1),
            NUM_TOPK_TOKENS=NUM_TOPK_TOKENS, BLOCK_N=BLOCK_N, num_warps=warps,
        )
    return out
