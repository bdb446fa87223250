"""Kernels every named suite passes and `diffcheck fuzz` must find: the four classes the
engines' bug history showed slipping through fixed suites (issue "Find what no suite names").

- decode_fast_path_for_large_batches: a fast path taken for batches of 8 requests or more at
  K >= 1024 drops the context mask; the named large batches run at K=256 and the K=2048 ones
  hold a few rows, so no named batch takes it with odd positions.
- decode_grid_frozen_at_warm_up: sizes its grid on the host from the last non-empty request
  of the first call on a set of buffers (a graph's warm-up) and keeps it: exact in eager, and
  for graphs captured on full or dummy batches (every named scenario), short for a graph
  captured on a real batch padded with empty requests.
- blocktable_padding_id_wraps: request id -1 (an engine's padding id) indexes from the end,
  as Python does, instead of giving all fill.
- blocktable_slot_through_float: the slot is computed with a float stride (a launcher that
  divides), exact only below 2^24.

And two for the GPU's device mutants (`fuzz --fast`), wrong only on far positions that only
mutants make (2^16 + 4096 past the context and more, below 2^30: the declared domain's far
positions stop short of it, misbehaving_kernels.MUTANTS_FAR_FROM):
decode_faults_on_far_positions reads 2^40 bytes away there, which faults a GPU;
decode_hangs_on_far_positions loops 10^8 times per such position.
"""

import weakref

import torch
import triton
import triton.language as tl
from misbehaving_kernels import FAR_HANG, FAR_READ, NO_CTX_MASK, WIDE, _decode

#: the fast path's thresholds
FAST_ROWS, FAST_K = 8, 1024


def decode_fast_path_for_large_batches(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                       token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048,
                                       BLOCK_N=WIDE, out=None, fill=0):
    """Correct for small batches; from 8 requests at K >= 1024 a path without the context
    mask (positions at or past ctx read the next request's slots)."""
    fast = kv_indptr.shape[0] - 1 >= FAST_ROWS and NUM_TOPK_TOKENS >= FAST_K
    how = {"bug": NO_CTX_MASK} if fast else {}
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill, **how)


def decode_faults_on_far_positions(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                   token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048,
                                   BLOCK_N=WIDE, out=None, fill=0):
    """Correct but for a position in the mutants' far band: a wild read (a GPU faults)."""
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill, bug=FAR_READ)


def decode_hangs_on_far_positions(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                  token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048,
                                  BLOCK_N=WIDE, out=None, fill=0):
    """Correct but for a position in the mutants' far band: a loop that runs away."""
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill, bug=FAR_HANG)


#: id of a kv_indptr tensor -> (a weak reference to it, the grid counted for it)
_grid_of: dict = {}


def decode_grid_frozen_at_warm_up(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                  token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048,
                                  BLOCK_N=WIDE, out=None, fill=0):
    """Launches programs for the requests up to the last non-empty one, counted on the host
    at the first call on these buffers (trailing padding needs no program) and kept."""
    known = _grid_of.get(id(kv_indptr))
    if known is None or known[0]() is not kv_indptr:  # a warm-up comes before any capture
        lengths = (kv_indptr[1:] - kv_indptr[:-1]).tolist()
        filled = [r for r, n in enumerate(lengths) if n > 0]
        known = (weakref.ref(kv_indptr), filled[-1] + 1 if filled else 0)
        _grid_of[id(kv_indptr)] = known
    rows = known[1]
    if out is None:
        out = torch.empty((page_kv_indptr.shape[0] - 1) * NUM_TOPK_TOKENS, dtype=torch.int32,
                          device=kv_indptr.device)
    if rows == 0:
        return out
    return _decode(qo_indptr, kv_indptr[: rows + 1], page_kv_indptr[: rows + 1], kv_indices,
                   token_indices, NUM_TOPK_TOKENS, BLOCK_N, out, fill)


(RIGHT, WRAPS_PADDING_ID, FLOAT_STRIDE) = (tl.constexpr(i) for i in range(3))


@triton.jit
def _blocktable(req_ptr, table_ptr, topk_ptr, out_ptr, num_requests, width, stride_rows,
                layer_id, table_stride, topk_stride, fill, PAGE: tl.constexpr,
                K: tl.constexpr, BLOCK_N: tl.constexpr, BUG: tl.constexpr):
    token = tl.program_id(0)
    req = tl.load(req_ptr + token)
    if BUG == WRAPS_PADDING_ID:
        req = tl.where(req < 0, req + num_requests, req)
    known = (req >= 0) & (req < num_requests)
    for col0 in range(0, K, BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        inside = cols < K
        # Row offsets in int64: a [T, K] buffer or an [R, B] table may hold more than 2^31
        # elements.
        pos = tl.load(topk_ptr + token.to(tl.int64) * topk_stride + cols, mask=inside, other=-1)
        page = pos // PAGE
        valid = inside & known & (pos >= 0) & (page < width)
        block = tl.load(table_ptr + req.to(tl.int64) * table_stride + page, mask=valid, other=0)
        slot = block * stride_rows + layer_id * PAGE + pos % PAGE
        tl.store(out_ptr + token.to(tl.int64) * K + cols, tl.where(valid, slot, fill),
                 mask=inside)


def _launch_blocktable(req_id, block_table, token_indices, page, stride, k, block_n, out,
                       fill, layer_id, bug):
    rows = token_indices.shape[0]
    if out is None:
        out = torch.empty((rows, k), dtype=torch.int32, device=req_id.device)
    if rows:
        _blocktable[(rows,)](req_id, block_table, token_indices, out, block_table.shape[0],
                             block_table.shape[1], stride, layer_id, block_table.stride(0),
                             token_indices.stride(0), fill, PAGE=page, K=k,
                             BLOCK_N=min(block_n, triton.next_power_of_2(k)), BUG=bug.value)
    return out


def blocktable_padding_id_wraps(req_id, block_table, token_indices, BLOCK_SIZE=64,
                                BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE,
                                out=None, fill=-1, layer_id=0):
    """Request id -1 reads the last request's row (Python's negative index)."""
    return _launch_blocktable(req_id, block_table, token_indices, BLOCK_SIZE,
                              BLOCK_STRIDE_ROWS or BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out,
                              fill, layer_id, WRAPS_PADDING_ID)


def blocktable_slot_through_float(req_id, block_table, token_indices, BLOCK_SIZE=64,
                                  BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE,
                                  out=None, fill=-1, layer_id=0):
    """The stride arrives as a float (rows per block / 1.0): the slot is computed in float32
    and rounded to an even number past 2^24."""
    stride = (BLOCK_STRIDE_ROWS or BLOCK_SIZE) / 1.0
    return _launch_blocktable(req_id, block_table, token_indices, BLOCK_SIZE, stride,
                              NUM_TOPK_TOKENS, BLOCK_N, out, fill, layer_id, RIGHT)


def blocktable_right(req_id, block_table, token_indices, BLOCK_SIZE=64, BLOCK_STRIDE_ROWS=None,
                     NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=-1, layer_id=0):
    """The same kernel without a bug (it must survive a long fuzz run)."""
    return _launch_blocktable(req_id, block_table, token_indices, BLOCK_SIZE,
                              BLOCK_STRIDE_ROWS or BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out,
                              fill, layer_id, RIGHT)
