"""A literal, loop-by-loop transcription of DESIGN.md's contracts: slow on purpose.

The vectorized references in refimpl/ are checked against these on many random cases.
Returns {output index: expected value} for every element inside a region.
"""

from __future__ import annotations


def _slot(kv_indices, kv_start, ctx, p, fill):
    if 0 <= p < ctx:
        return int(kv_indices[kv_start + p])
    return fill


def decode_oracle(kv_indptr, page_kv_indptr, kv_indices, token_indices, k, fill):
    kv_indptr, page = kv_indptr.tolist(), page_kv_indptr.tolist()
    kv_indices, rows = kv_indices.tolist(), token_indices.tolist()
    expected = {}
    for r in range(len(kv_indptr) - 1):
        ctx = kv_indptr[r + 1] - kv_indptr[r]
        length = page[r + 1] - page[r]
        for j in range(min(length, k)):
            expected[page[r] + j] = _slot(kv_indices, kv_indptr[r], ctx, rows[r][j], fill)
    return expected


def mtp_oracle(sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices, kv_indptr, k, fill):
    sparse, seq = sparse_kv_indptr.tolist(), token_to_seq_idxs.tolist()
    kv_indptr, kv_indices, rows = kv_indptr.tolist(), kv_indices.tolist(), topk_indices.tolist()
    expected = {}
    for t in range(len(sparse) - 1):
        r = seq[t]
        ctx = kv_indptr[r + 1] - kv_indptr[r]
        length = sparse[t + 1] - sparse[t]
        for j in range(min(length, k)):
            expected[sparse[t] + j] = _slot(kv_indices, kv_indptr[r], ctx, rows[t][j], fill)
    return expected
