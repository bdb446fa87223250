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


def prefill_oracle(dsa_kv_indptr, token_to_seq_idxs, topk_indices, block_table, cu_seqlens_q,
                   page, k, fill):
    kv, seq, cu = dsa_kv_indptr.tolist(), token_to_seq_idxs.tolist(), cu_seqlens_q.tolist()
    rows, table = topk_indices.tolist(), block_table.tolist()
    width = len(table[0]) if table else 0
    expected = {}
    for t in range(len(kv) - 1):
        r = seq[t]
        start, length = cu[r], cu[r + 1] - cu[r]
        for j in range(min(kv[t + 1] - kv[t], k)):
            i = rows[t][j]
            s = i - start
            value = fill
            if i >= 0 and 0 <= s < length and s // page < width and table[r][s // page] >= 0:
                value = table[r][s // page] * page + s % page
            expected[kv[t] + j] = value
    return expected


def blocktable_oracle(req_id, block_table, token_indices, seq_lens, page, stride, layer, k,
                      fill, bounded):
    """{flat index: value} over the whole [T, K] output, and the valid count of each row."""
    req, table, rows = req_id.tolist(), block_table.tolist(), token_indices.tolist()
    lengths = seq_lens.tolist()
    width = len(table[0]) if table else 0
    expected, counts = {}, []
    for t in range(len(rows)):
        valid_here = 0
        for j in range(k):
            p, r = rows[t][j], req[t]
            # a request id that is negative (padding) or past the table: the row is all FILL
            ok = 0 <= r < len(table) and p >= 0 and p // page < width and (
                not bounded or p < lengths[r])
            expected[t * k + j] = table[r][p // page] * (stride or page) + layer * page + \
                p % page if ok else fill
            valid_here += ok
        counts.append(valid_here)
    return expected, counts
