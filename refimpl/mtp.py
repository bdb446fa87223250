"""Reference of the MTP gather path (several query tokens per request).

Contract (DESIGN.md, "mtp"), for token t < T of request r = token_to_seq_idxs[t], with
ctx_r = kv_indptr[r+1] - kv_indptr[r], region [sparse_kv_indptr[t], sparse_kv_indptr[t+1]) of
length L_t, and p = topk_indices[t, j]:

    out[sparse_kv_indptr[t] + j] = kv_indices[kv_indptr[r] + p]   if 0 <= p < ctx_r
                                   fill                           otherwise        (j < L_t)

With q tokens per request, token j of request r sees L_t = clamp(ctx_r - q + j + 1, 0, K).
"""

from __future__ import annotations

import torch

from diffcheck.refimpl.regions import apply_reference, rows_or_unused, scatter_regions


def mtp_reference(
    sparse_kv_indptr: torch.Tensor,
    token_to_seq_idxs: torch.Tensor,
    topk_indices: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_indptr: torch.Tensor,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 1024,
    out: torch.Tensor | None = None,
    fill: int = 0,
    *,
    num_out: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(expected, mask)`` over the flat workspace (``num_out`` elements, else
    ``out``'s, else one K-row per output row); ``mask`` marks the regions."""
    num_tokens = sparse_kv_indptr.numel() - 1
    num_requests = kv_indptr.numel() - 1
    k = NUM_TOPK_TOKENS
    if num_out is None:
        num_out = out.numel() if out is not None else num_tokens * k
    req = token_to_seq_idxs[:num_tokens].to(torch.int64)
    if req.numel() < num_tokens:  # a token without a request id (malformed) is unknown
        req = torch.cat([req, req.new_full((num_tokens - req.numel(),), -1)])
    positions = rows_or_unused(topk_indices, num_tokens, k)
    if num_requests > 0:
        # Both ends of each token's slice in one gather; an unknown request owns nothing.
        slices = torch.stack([kv_indptr[:-1], kv_indptr[1:]], dim=1)
        known = (req >= 0) & (req < num_requests)
        ends = slices[req.clamp(0, num_requests - 1)]
        kv_start, kv_end = ends[:, 0], torch.where(known, ends[:, 1], ends[:, 0])
    else:
        kv_start = kv_end = torch.zeros_like(req)
    return scatter_regions(
        kv_indices, kv_start, kv_end, positions, sparse_kv_indptr[:num_tokens],
        sparse_kv_indptr[1 : num_tokens + 1], num_out, fill,
    )


def mtp_reference_impl(
    sparse_kv_indptr: torch.Tensor,
    token_to_seq_idxs: torch.Tensor,
    topk_indices: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_indptr: torch.Tensor,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 1024,
    out: torch.Tensor | None = None,
    fill: int = 0,
) -> torch.Tensor:
    """The reference run as an implementation (a sanity row that must always pass)."""
    expected, mask = mtp_reference(
        sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices, kv_indptr,
        NUM_TOPK_TOKENS, BLOCK_N, out, fill,
    )
    return apply_reference(out, expected, mask)


def mtp_violations(tensors: dict[str, torch.Tensor], k: int) -> list[str]:
    """Every way ``tensors`` break the MTP contract, as short phrases (empty: well-formed)."""
    from diffcheck.refimpl.checks import check_indptr, check_regions_fit, check_rows, check_slots

    sparse, seq = tensors["sparse_kv_indptr"], tensors["token_to_seq_idxs"]
    kv = tensors["kv_indptr"]
    num_tokens, num_requests = sparse.numel() - 1, kv.numel() - 1
    problems = check_indptr("kv_indptr", kv) + check_indptr("sparse_kv_indptr", sparse)
    if seq.numel() < num_tokens:
        problems.append(
            f"token_to_seq_idxs has {seq.numel()} entries, expected at least {num_tokens}"
        )
    elif num_tokens > 0:
        seq = seq[:num_tokens].cpu()
        if int(seq.min()) < 0 or int(seq.max()) >= num_requests:
            problems.append(f"token_to_seq_idxs holds a request outside 0..{num_requests - 1}")
    problems += check_slots(tensors["kv_indices"], kv)
    problems += check_rows("topk_indices", tensors["topk_indices"], num_tokens, k)
    if not problems:
        lengths = causal_lengths(kv.cpu(), seq.cpu().long() if num_tokens else seq[:0].long(), k)
        problems += check_regions_fit("sparse_kv_indptr", sparse, lengths, num_tokens * k)
    return problems


def causal_lengths(kv_indptr: torch.Tensor, seq: torch.Tensor, k: int) -> torch.Tensor:
    """L_t = clamp(ctx_r - q_r + j + 1, 0, K) for token t, the j-th of the q_r of request r."""
    ctx = kv_indptr[1:] - kv_indptr[:-1]
    num_requests = ctx.numel()
    q = torch.bincount(seq, minlength=num_requests)
    one_hot = torch.nn.functional.one_hot(seq, num_requests) if seq.numel() else seq[:, None]
    j = (one_hot.cumsum(0) * one_hot).sum(1) - 1 if seq.numel() else seq
    return (ctx[seq] - q[seq] + j + 1).clamp(0, k)
