"""Reference of ATOM's DSA prefill convert
(``triton_convert_req_index_to_global_index_dsa_prefill``).

Contract (DESIGN.md, "prefill"), for token t < T of request r = token_to_seq_idxs[t], whose
tokens are the batch-flat range [cu_seqlens_q[r], cu_seqlens_q[r+1]) of length len_r, region
[dsa_kv_indptr[t], dsa_kv_indptr[t+1]) of length L_t (token q of a request sees keys 0..q, so
L_t = min(q + 1, K)), page size P and i = topk_indices[t, j], s = i - cu_seqlens_q[r]:

    out[dsa_kv_indptr[t] + j] = block_table[r, s // P] * P + s % P
        if i >= 0, 0 <= s < len_r, s // P < B and that block id >= 0;   else fill  (j < L_t)

``dsa_qo_indptr`` is part of the call; the result does not depend on it. A token whose request
id is not a request of the batch (negative, or past the requests that cu_seqlens_q and
block_table both describe) owns nothing: its region is all fill.
"""

from __future__ import annotations

import torch

from diffcheck.refimpl.regions import apply_reference, place_rows, rows_or_unused


def prefill_reference(
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
    num_out: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(expected, mask)`` over the flat workspace; ``mask`` marks the regions."""
    if PAGE_SIZE < 1:
        raise ValueError(f"PAGE_SIZE must be at least 1, got {PAGE_SIZE}")
    num_tokens = dsa_kv_indptr.numel() - 1
    k = NUM_TOPK_TOKENS
    if num_out is None:
        num_out = out.numel() if out is not None else num_tokens * k
    requests = min(cu_seqlens_q.numel() - 1, block_table.shape[0])
    width = block_table.shape[1] if block_table.dim() == 2 else 0
    req = token_to_seq_idxs[:num_tokens].to(torch.int64)
    if req.numel() < num_tokens:  # a token without a request id (malformed) is unknown
        req = torch.cat([req, req.new_full((num_tokens - req.numel(),), -1)])
    keys = rows_or_unused(topk_indices, num_tokens, k).to(torch.int64)
    device = keys.device
    if requests > 0 and width > 0:
        known = (req >= 0) & (req < requests)
        r = req.clamp(0, requests - 1)
        cu = cu_seqlens_q.to(torch.int64)
        start = cu[r]
        length = torch.where(known, cu[r + 1] - start, 0)
        s = keys - start[:, None]
        valid = (keys >= 0) & (s >= 0) & (s < length[:, None])
        page = torch.div(s, PAGE_SIZE, rounding_mode="floor")
        valid &= page < width
        blocks = block_table[r[:, None], page.clamp(0, width - 1)].to(torch.int64)
        valid &= blocks >= 0
        slots = blocks * PAGE_SIZE + torch.remainder(s, PAGE_SIZE)
        values = torch.where(valid, slots, fill).to(torch.int32)  # wraps like the kernel
    else:
        values = torch.full(keys.shape, fill, dtype=torch.int32, device=device)
    return place_rows(values, dsa_kv_indptr[:num_tokens],
                      dsa_kv_indptr[1 : num_tokens + 1], num_out)


def prefill_reference_impl(
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
) -> torch.Tensor:
    """The reference run as an implementation (a sanity row that must always pass)."""
    expected, mask = prefill_reference(
        dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices, block_table,
        cu_seqlens_q, PAGE_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)
    return apply_reference(out, expected, mask)


def prefill_violations(tensors: dict[str, torch.Tensor], k: int, page_size: int) -> list[str]:
    """Every way ``tensors`` break the prefill contract, as short phrases (empty: well-formed)."""
    from diffcheck.refimpl.checks import check_indptr, check_regions_fit, check_rows

    kv, seq, cu = tensors["dsa_kv_indptr"], tensors["token_to_seq_idxs"], tensors["cu_seqlens_q"]
    table, qo = tensors["block_table"], tensors["dsa_qo_indptr"]
    num_tokens = kv.numel() - 1
    problems = check_indptr("dsa_kv_indptr", kv) + check_indptr("cu_seqlens_q", cu)
    if qo.numel() != kv.numel():
        problems.append(f"dsa_qo_indptr has {qo.numel()} entries, expected {kv.numel()}")
    requests = cu.numel() - 1
    if table.dim() != 2 or table.shape[0] < requests:
        problems.append(f"block_table is {tuple(table.shape)}, expected at least {requests} rows")
    if seq.numel() < num_tokens:
        problems.append(f"token_to_seq_idxs has {seq.numel()} entries, expected at least "
                        f"{num_tokens}")
    problems += check_rows("topk_indices", tensors["topk_indices"], num_tokens, k)
    if problems:
        return problems
    seq = seq[:num_tokens].cpu().to(torch.int64)
    if num_tokens and (int(seq.min()) < 0 or int(seq.max()) >= requests):
        return [f"token_to_seq_idxs holds a request outside 0..{requests - 1}"]
    cu = cu.cpu().to(torch.int64)
    lengths = cu[1:] - cu[:-1]
    total = int(cu[-1])
    if total > num_tokens:
        return [f"cu_seqlens_q ends at {total}, past the {num_tokens} tokens"]
    # Tokens past the batch are padding (a graph's): they own no region.
    owner = torch.repeat_interleave(torch.arange(requests), lengths)
    if not torch.equal(seq[:total], owner):
        return ["token_to_seq_idxs does not follow cu_seqlens_q (token t of request r must "
                "lie in r's range)"]
    pages = -(-lengths // page_size)
    if requests and table.shape[1] < int(pages.max()):
        return [f"block_table has {table.shape[1]} columns, fewer than the "
                f"{int(pages.max())} pages of the longest request"]
    # A negative block id in a used page (an evicted page) is well-formed: its keys are fill.
    regions = torch.zeros(num_tokens, dtype=torch.int64)
    regions[:total] = (torch.arange(total) - cu[owner] + 1).clamp(max=k)
    return problems + check_regions_fit("dsa_kv_indptr", kv, regions, num_tokens * k)
