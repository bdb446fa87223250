"""Reference of the decode convert path (one query token per request).

Contract (DESIGN.md, "decode"), for request r < R with ctx_r = kv_indptr[r+1] - kv_indptr[r],
region [page_kv_indptr[r], page_kv_indptr[r+1]) of length L_r = min(ctx_r, K), and
p = token_indices[r, j]:

    out[page_kv_indptr[r] + j] = kv_indices[kv_indptr[r] + p]   if 0 <= p < ctx_r
                                 fill                           otherwise        (j < L_r)

``qo_indptr`` carries no information in decode (qo_indptr[r] == r) and is not read.
"""

from __future__ import annotations

import torch

from diffcheck.refimpl.regions import apply_reference, rows_or_unused, scatter_regions


def decode_reference(
    qo_indptr: torch.Tensor,
    kv_indptr: torch.Tensor,
    page_kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    token_indices: torch.Tensor,
    BLOCK_SIZE: int = 1,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 128,
    out: torch.Tensor | None = None,
    fill: int = 0,
    *,
    num_out: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(expected, mask)`` over the flat workspace (``num_out`` elements, else
    ``out``'s, else one K-row per output row); ``mask`` marks the regions."""
    if BLOCK_SIZE != 1:
        raise ValueError(f"decode contract has BLOCK_SIZE == 1, got {BLOCK_SIZE}")
    num_requests = kv_indptr.numel() - 1
    k = NUM_TOPK_TOKENS
    if num_out is None:
        num_out = out.numel() if out is not None else num_requests * k
    positions = rows_or_unused(token_indices, num_requests, k)
    return scatter_regions(
        kv_indices, kv_indptr[:num_requests], kv_indptr[1:], positions,
        page_kv_indptr[:num_requests], page_kv_indptr[1 : num_requests + 1], num_out, fill,
    )


def decode_reference_impl(
    qo_indptr: torch.Tensor,
    kv_indptr: torch.Tensor,
    page_kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    token_indices: torch.Tensor,
    BLOCK_SIZE: int = 1,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 128,
    out: torch.Tensor | None = None,
    fill: int = 0,
) -> torch.Tensor:
    """The reference run as an implementation (a sanity row that must always pass)."""
    expected, mask = decode_reference(
        qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
        BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill,
    )
    return apply_reference(out, expected, mask)


def decode_violations(tensors: dict[str, torch.Tensor], k: int) -> list[str]:
    """Every way ``tensors`` break the decode contract, as short phrases (empty: well-formed)."""
    from diffcheck.refimpl.checks import (
        check_indptr,
        check_regions_fit,
        check_rows,
        check_slots,
        same_length,
    )

    problems = same_length(tensors, ("qo_indptr", "kv_indptr", "page_kv_indptr"))
    if problems:
        return problems
    qo, kv, page = tensors["qo_indptr"], tensors["kv_indptr"], tensors["page_kv_indptr"]
    num_requests = kv.numel() - 1
    problems += check_indptr("kv_indptr", kv)
    problems += check_indptr("page_kv_indptr", page)
    if not torch.equal(qo.cpu(), torch.arange(num_requests + 1, dtype=qo.dtype)):
        problems.append("qo_indptr is not [0, 1, ..., R] (decode has one query token per request)")
    problems += check_slots(tensors["kv_indices"], kv)
    problems += check_rows("token_indices", tensors["token_indices"], num_requests, k)
    if not problems:
        ctx = (kv[1:] - kv[:-1]).cpu()
        problems += check_regions_fit("page_kv_indptr", page, ctx.clamp(max=k), num_requests * k)
    return problems
