"""Kernels wrong only for some batches, by the batch's size or layout: each a launch decision
a real launcher makes, and each a partition of the declared domain (diffcheck.domain:
``requests``, ``<positions>.rows`` spare rows, ``req_id.values`` padding) that the default
selection once never reached.

- decode_one_request_fast_path: a latency path for a single request converts one column past
  its region (a bound written `<=`).
- decode_medium_batch_path: batches of 32 to 255 requests take a path without it.
- mtp_grid_from_topk_rows: one program per row of the top-k buffer, not per token: a buffer
  with spare rows (a persistent one passed whole) reads the region indptr past its end.
- blocktable_skips_padding_tokens: a token of request -1 (padding) stores nothing, where the
  contract wants its row all FILL.
"""

import torch
import triton
import triton.language as tl
from broken_kernels import CORRECT, LEN_PLUS_ONE, _mtp
from broken_kernels import _decode as _broken_decode
from misbehaving_kernels import NO_CTX_MASK, WIDE, _decode


def _requests(kv_indptr) -> int:
    return kv_indptr.shape[0] - 1


def decode_one_request_fast_path(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                 token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048,
                                 BLOCK_N=WIDE, out=None, fill=0):
    if _requests(kv_indptr) == 1:
        return _broken_decode(LEN_PLUS_ONE, kv_indptr, page_kv_indptr, kv_indices,
                              token_indices, NUM_TOPK_TOKENS, BLOCK_N, out, fill)
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_medium_batch_path(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None,
                             fill=0):
    how = {"bug": NO_CTX_MASK} if 32 <= _requests(kv_indptr) < 256 else {}
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill, **how)


def mtp_grid_from_topk_rows(sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices,
                            kv_indptr, NUM_TOPK_TOKENS=2048, BLOCK_N=1024, out=None, fill=0):
    return _mtp(CORRECT, sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices,
                kv_indptr, NUM_TOPK_TOKENS, BLOCK_N, out, fill, topk_indices.shape[0])


@triton.jit
def _skipping_padding(req_id_ptr, block_table_ptr, token_indices_ptr, out_ptr, num_ids,
                      num_requests, width, bt_stride0, ti_stride0, ti_stride1, fill,
                      BLOCK_SIZE: tl.constexpr, K: tl.constexpr, BLOCK_N: tl.constexpr):
    token = tl.program_id(0)
    req = tl.load(req_id_ptr + token, mask=token < num_ids, other=-1)
    known = (req >= 0) & (req < num_requests)
    if known:  # BUG: a padding token's row is left as the output held it
        req64 = req.to(tl.int64)
        for col0 in range(0, K, BLOCK_N):
            cols = col0 + tl.arange(0, BLOCK_N)
            inside = cols < K
            pos = tl.load(token_indices_ptr + token.to(tl.int64) * ti_stride0
                          + cols * ti_stride1, mask=inside, other=-1)
            page = pos // BLOCK_SIZE
            valid = inside & (pos >= 0) & (page < width)
            block = tl.load(block_table_ptr + req64 * bt_stride0 + page, mask=valid, other=0)
            tl.store(out_ptr + token.to(tl.int64) * K + cols,
                     tl.where(valid, block * BLOCK_SIZE + pos % BLOCK_SIZE, fill), mask=inside)


def blocktable_skips_padding_tokens(req_id, block_table, token_indices, BLOCK_SIZE=64,
                                    NUM_TOPK_TOKENS=2048, BLOCK_N=512, out=None, fill=-1):
    rows = token_indices.shape[0]
    if out is None:
        out = torch.empty((rows, NUM_TOPK_TOKENS), dtype=torch.int32, device=req_id.device)
    if block_table.stride(1) != 1:
        block_table = block_table.contiguous()
    if rows:
        _skipping_padding[(rows,)](req_id, block_table, token_indices, out, req_id.shape[0],
                                   block_table.shape[0], block_table.shape[1],
                                   block_table.stride(0), token_indices.stride(0),
                                   token_indices.stride(1), fill, BLOCK_SIZE=BLOCK_SIZE,
                                   K=NUM_TOPK_TOKENS,
                                   BLOCK_N=min(BLOCK_N, triton.next_power_of_2(NUM_TOPK_TOKENS)))
    return out
