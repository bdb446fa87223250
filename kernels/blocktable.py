"""Block-table convert kernels (the vLLM family): request-local top-k positions -> physical
KV rows through a paged block table; column j in, column j out.

``guarded`` takes vLLM's call plus what the family's other members take: ``out=`` (returns a
new [T, K] tensor without it, as vLLM does), ``fill``, ``return_valid_counts``, ``seq_lens``
(the bounded variant) and TensorRT-LLM's ``layer_id``. It bounds the request id, the table's
rows and width and every store. ``unguarded`` is vLLM's kernel as it was before its fixes: the
grid follows req_id and nothing bounds the request (a fixture for the checker only).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _blocktable_guarded_kernel(
    req_id_ptr,  # int32 [T]: request of token t
    block_table_ptr,  # int32 [R, B] (strided): physical block of request r's page b
    token_indices_ptr,  # int32 [T, K] (strided): request-local positions, -1 unused
    seq_lens_ptr,  # int32 [R]: request r's length (read when BOUNDED)
    out_ptr,  # int32 [T, K]
    counts_ptr,  # int32 [T]: valid entries per row (written when COUNT)
    num_ids,
    num_rows,
    num_requests,
    num_lengths,
    width,
    stride_rows,
    layer_id,
    bt_stride0,
    bt_stride1,
    ti_stride0,
    ti_stride1,
    out_stride0,
    fill,
    BLOCK_SIZE: tl.constexpr,
    NUM_TOPK_TOKENS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BOUNDED: tl.constexpr,
    COUNT: tl.constexpr,
):
    token = tl.program_id(0)
    req = tl.load(req_id_ptr + token, mask=token < num_ids, other=-1)
    known = (req >= 0) & (req < num_requests)
    if BOUNDED:
        known = known & (req < num_lengths)
    req = tl.where(known, req, 0)
    length = tl.load(seq_lens_ptr + req, mask=known & BOUNDED, other=0)
    readable = token < num_rows
    valid_count = 0
    for col0 in range(tl.program_id(1) * BLOCK_N, NUM_TOPK_TOKENS, tl.num_programs(1) * BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        inside = cols < NUM_TOPK_TOKENS
        # Row offsets in int64: a [T, K] buffer may hold more than 2^31 elements.
        pos = tl.load(token_indices_ptr + token.to(tl.int64) * ti_stride0
                      + cols * ti_stride1, mask=inside & readable, other=-1)
        page = pos // BLOCK_SIZE
        valid = known & (pos >= 0) & (page < width)
        if BOUNDED:
            valid = valid & (pos < length)
        base = tl.load(block_table_ptr + req.to(tl.int64) * bt_stride0
                       + page * bt_stride1, mask=valid, other=0)
        slot = base * stride_rows + layer_id * BLOCK_SIZE + pos % BLOCK_SIZE
        tl.store(out_ptr + token.to(tl.int64) * out_stride0 + cols, tl.where(valid, slot, fill),
                 mask=inside)
        if COUNT:
            valid_count += tl.sum((valid & inside).to(tl.int32))
    if COUNT:
        tl.store(counts_ptr + token, valid_count)


@triton.jit
def _blocktable_unguarded_kernel(
    req_id_ptr,  # int32 [T]: trusted blindly
    block_table_ptr,  # int32 [R, B] (strided)
    token_indices_ptr,  # int32 [T, K] (strided)
    out_ptr,  # int32 [T, K]
    width,
    stride_rows,
    bt_stride0,
    bt_stride1,
    ti_stride0,
    ti_stride1,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    token = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    req = tl.load(req_id_ptr + token)  # no bound on the request id
    pos = tl.load(token_indices_ptr + token * ti_stride0 + cols * ti_stride1)
    page = pos // BLOCK_SIZE
    valid = (pos >= 0) & (page < width)
    base = tl.load(block_table_ptr + req * bt_stride0 + page * bt_stride1, mask=valid, other=0)
    value = tl.where(valid, base * stride_rows + pos % BLOCK_SIZE, -1)
    tl.store(out_ptr + token * (BLOCK_N * tl.num_programs(1)) + cols, value)


def _checked_page(block_size: int) -> None:
    if block_size < 1:
        raise ValueError(f"BLOCK_SIZE must be at least 1, got {block_size}")


def blocktable_guarded(
    req_id: torch.Tensor,
    block_table: torch.Tensor,
    token_indices: torch.Tensor,
    BLOCK_SIZE: int = 64,
    BLOCK_STRIDE_ROWS: int | None = None,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 512,
    out: torch.Tensor | None = None,
    fill: int = -1,
    return_valid_counts: bool = False,
    seq_lens: torch.Tensor | None = None,
    layer_id: int = 0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Block-table convert that bounds every request id, page, row and store; bounded by
    ``seq_lens`` when given. Returns ``out`` (a new [T, K] tensor when None), and the valid
    counts per row too when asked."""
    _checked_page(BLOCK_SIZE)
    rows = token_indices.shape[0]
    if out is None:
        out = torch.empty((rows, NUM_TOPK_TOKENS), dtype=torch.int32, device=req_id.device)
    counts = torch.zeros(rows, dtype=torch.int32, device=req_id.device)
    # Counting reduces a whole row in one program; otherwise rows split over columns on a GPU.
    columns = 1 if return_valid_counts or req_id.device.type == "cpu" else \
        max(1, min(4, triton.cdiv(NUM_TOPK_TOKENS, BLOCK_N)))
    if rows > 0:
        bounded = seq_lens is not None
        _blocktable_guarded_kernel[(rows, columns)](
            req_id, block_table, token_indices, seq_lens if bounded else req_id, out, counts,
            req_id.shape[0], rows, block_table.shape[0],
            seq_lens.shape[0] if bounded else 0, block_table.shape[1],
            BLOCK_STRIDE_ROWS or BLOCK_SIZE, layer_id, block_table.stride(0),
            block_table.stride(1), token_indices.stride(0), token_indices.stride(1),
            out.stride(0), fill,
            BLOCK_SIZE=BLOCK_SIZE, NUM_TOPK_TOKENS=NUM_TOPK_TOKENS, BLOCK_N=BLOCK_N,
            BOUNDED=bounded, COUNT=bool(return_valid_counts), num_warps=4,
        )
    return (out, counts) if return_valid_counts else out


def blocktable_unguarded(
    req_id: torch.Tensor,
    block_table: torch.Tensor,
    token_indices: torch.Tensor,
    BLOCK_SIZE: int = 64,
    BLOCK_STRIDE_ROWS: int | None = None,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 128,
) -> torch.Tensor:
    """UNSAFE on purpose: a fixture for the checker, never a kernel to ship.

    vLLM's converter before its fixes: the grid follows req_id (a longer req_id writes past
    the output, vLLM #47327), and the request id is not bounded (a padding id past the
    table's rows reads past it, vLLM #55637). Returns a new [T, K] tensor.
    """
    _checked_page(BLOCK_SIZE)
    if NUM_TOPK_TOKENS % BLOCK_N:
        raise ValueError(f"NUM_TOPK_TOKENS ({NUM_TOPK_TOKENS}) must be divisible by BLOCK_N "
                         f"({BLOCK_N})")
    out = torch.empty((token_indices.shape[0], NUM_TOPK_TOKENS), dtype=torch.int32,
                      device=req_id.device)
    tokens = req_id.shape[0]
    if tokens > 0:
        _blocktable_unguarded_kernel[(tokens, NUM_TOPK_TOKENS // BLOCK_N)](
            req_id, block_table, token_indices, out, block_table.shape[1],
            BLOCK_STRIDE_ROWS or BLOCK_SIZE, block_table.stride(0), block_table.stride(1),
            token_indices.stride(0), token_indices.stride(1),
            BLOCK_SIZE=BLOCK_SIZE, BLOCK_N=BLOCK_N,
        )
    return out
