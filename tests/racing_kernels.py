"""Block-table kernels whose rows are split over two column programs that both add into the
row's valid count: a race a GPU shows and the interpreter, one program after another in
either order, never does (diffcheck.sandbox records it).

- blocktable_counts_lost_update: each program reads the count, adds its share and stores it
  back, with plain loads and stores: two programs of a row running at once lose one share.
- blocktable_counts_atomic: the same with tl.atomic_add (correct).
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _split_rows(req_id_ptr, block_table_ptr, token_indices_ptr, out_ptr, counts_ptr, num_ids,
                num_requests, width, bt_stride0, ti_stride0, fill,
                BLOCK_SIZE: tl.constexpr, NUM_TOPK_TOKENS: tl.constexpr, HALF: tl.constexpr,
                ATOMIC: tl.constexpr):
    token = tl.program_id(0)
    req = tl.load(req_id_ptr + token, mask=token < num_ids, other=-1)
    known = (req >= 0) & (req < num_requests)
    req = tl.where(known, req, 0).to(tl.int64)
    cols = tl.program_id(1) * HALF + tl.arange(0, HALF)
    inside = cols < NUM_TOPK_TOKENS
    pos = tl.load(token_indices_ptr + token.to(tl.int64) * ti_stride0 + cols, mask=inside,
                  other=-1)
    page = pos // BLOCK_SIZE
    valid = known & inside & (pos >= 0) & (page < width)
    block = tl.load(block_table_ptr + req * bt_stride0 + page, mask=valid, other=0)
    tl.store(out_ptr + token.to(tl.int64) * NUM_TOPK_TOKENS + cols,
             tl.where(valid, block * BLOCK_SIZE + pos % BLOCK_SIZE, fill), mask=inside)
    share = tl.sum(valid.to(tl.int32))
    if ATOMIC:
        tl.atomic_add(counts_ptr + token, share)
    else:
        tl.store(counts_ptr + token, tl.load(counts_ptr + token) + share)


def _split(atomic, req_id, block_table, token_indices, BLOCK_SIZE, NUM_TOPK_TOKENS, out,
           fill, return_valid_counts):
    rows = token_indices.shape[0]
    if out is None:
        out = torch.empty((rows, NUM_TOPK_TOKENS), dtype=torch.int32, device=req_id.device)
    counts = torch.zeros(rows, dtype=torch.int32, device=req_id.device)
    if token_indices.stride(1) != 1:
        token_indices = token_indices.contiguous()
    if rows:
        half = triton.next_power_of_2(triton.cdiv(NUM_TOPK_TOKENS, 2))
        _split_rows[(rows, 2)](req_id, block_table, token_indices, out, counts,
                               req_id.shape[0], block_table.shape[0], block_table.shape[1],
                               block_table.stride(0), token_indices.stride(0), fill,
                               BLOCK_SIZE=BLOCK_SIZE, NUM_TOPK_TOKENS=NUM_TOPK_TOKENS,
                               HALF=half, ATOMIC=atomic)
    return (out, counts) if return_valid_counts else out


def blocktable_counts_lost_update(req_id, block_table, token_indices, BLOCK_SIZE=64,
                                  NUM_TOPK_TOKENS=2048, out=None, fill=-1,
                                  return_valid_counts=False):
    return _split(False, req_id, block_table, token_indices, BLOCK_SIZE, NUM_TOPK_TOKENS, out,
                  fill, return_valid_counts)


def blocktable_counts_atomic(req_id, block_table, token_indices, BLOCK_SIZE=64,
                             NUM_TOPK_TOKENS=2048, out=None, fill=-1, return_valid_counts=False):
    return _split(True, req_id, block_table, token_indices, BLOCK_SIZE, NUM_TOPK_TOKENS, out,
                  fill, return_valid_counts)
