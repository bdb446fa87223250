"""Reference of the block-table family (vLLM's ``triton_convert_req_index_to_global_index``,
TensorRT-LLM's variant, ATOM's vLLM/SGLang plugins, LMDeploy-style).

Contract (DESIGN.md, "blocktable"), for every element of the [T, K] output (column j in,
column j out), with r = req_id[t], p = token_indices[t, j], page size P, stride rows S
(default P), layer id L (TensorRT-LLM's layer interleaving, default 0) and B the table's width:

    out[t, j] = block_table[r, p // P] * S + L * P + p % P     if p >= 0 and p // P < B
                fill (-1)                                      otherwise

The *bounded* variant (vLLM DeepSeek-V4, and what a careful kernel does) also needs
p < seq_lens[r]. A token whose request id is not a request of the batch (negative, past the
table's rows, or a row with no request id) is all fill. The optional second output counts
each row's valid entries.
"""

from __future__ import annotations

import torch

from diffcheck.refimpl.regions import rows_or_unused


def blocktable_values(
    req_id: torch.Tensor,
    block_table: torch.Tensor,
    token_indices: torch.Tensor,
    seq_lens: torch.Tensor | None,
    page: int,
    stride: int,
    layer: int,
    k: int,
    fill: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [T, K] int32, valid [T, K]): the output of the contract, computed on the
    device with every index bounded (no host synchronisation)."""
    if page < 1:
        raise ValueError(f"BLOCK_SIZE must be at least 1, got {page}")
    rows = token_indices.shape[0]
    requests, width = block_table.shape if block_table.dim() == 2 else (0, 0)
    req = req_id[:rows].to(torch.int64)
    if req.numel() < rows:  # a row with no request id (malformed) is unknown
        req = torch.cat([req, req.new_full((rows - req.numel(),), -1)])
    p = rows_or_unused(token_indices, rows, k).to(torch.int64)
    known = (req >= 0) & (req < requests)
    if seq_lens is not None:
        known &= req < seq_lens.numel()
    if requests == 0 or width == 0:
        valid = torch.zeros_like(p, dtype=torch.bool)
        return torch.full(p.shape, fill, dtype=torch.int32, device=p.device), valid
    r = req.clamp(0, requests - 1)
    blk = torch.div(p, page, rounding_mode="floor")
    valid = known[:, None] & (p >= 0) & (blk < width)
    if seq_lens is not None:
        lengths = seq_lens.to(torch.int64)[r.clamp(0, max(seq_lens.numel() - 1, 0))]
        valid &= p < lengths[:, None]
    base = block_table[r[:, None], blk.clamp(0, width - 1)].to(torch.int64)
    slots = base * stride + layer * page + torch.remainder(p, page)
    return torch.where(valid, slots, fill).to(torch.int32), valid


def blocktable_reference(
    req_id: torch.Tensor,
    block_table: torch.Tensor,
    token_indices: torch.Tensor,
    BLOCK_SIZE: int = 64,
    BLOCK_STRIDE_ROWS: int | None = None,
    NUM_TOPK_TOKENS: int = 2048,
    *,
    seq_lens: torch.Tensor | None = None,
    layer_id: int = 0,
    fill: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [T, K], valid counts [T]) of the contract."""
    stride = BLOCK_STRIDE_ROWS if BLOCK_STRIDE_ROWS else BLOCK_SIZE
    values, valid = blocktable_values(req_id, block_table, token_indices, seq_lens,
                                      BLOCK_SIZE, stride, layer_id, NUM_TOPK_TOKENS, fill)
    return values, valid.sum(dim=1).to(torch.int32)


def blocktable_reference_impl(
    req_id: torch.Tensor,
    block_table: torch.Tensor,
    token_indices: torch.Tensor,
    BLOCK_SIZE: int = 64,
    BLOCK_STRIDE_ROWS: int | None = None,
    NUM_TOPK_TOKENS: int = 2048,
    BLOCK_N: int = 128,
    out: torch.Tensor | None = None,
    fill: int = -1,
    return_valid_counts: bool = False,
    seq_lens: torch.Tensor | None = None,
    layer_id: int = 0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The reference run as an implementation (a sanity row that must always pass): writes
    ``out`` when given, else returns a new [T, K] tensor, as vLLM's does."""
    values, counts = blocktable_reference(
        req_id, block_table, token_indices, BLOCK_SIZE, BLOCK_STRIDE_ROWS, NUM_TOPK_TOKENS,
        seq_lens=seq_lens, layer_id=layer_id, fill=fill)
    if out is None:
        out = values
    else:  # a malformed batch may have fewer (or more) top-k rows than the workspace
        rows = min(out.shape[0], values.shape[0])
        out[:rows].copy_(values[:rows])
    return (out, counts) if return_valid_counts else out


def blocktable_violations(tensors: dict[str, torch.Tensor], k: int,
                          page_size: int) -> list[str]:
    """Every way ``tensors`` break the block-table contract (empty: well-formed)."""
    from diffcheck.refimpl.checks import check_rows

    req, table = tensors["req_id"], tensors["block_table"]
    tokens, seq_lens = tensors["token_indices"], tensors["seq_lens"]
    rows = tokens.shape[0] if tokens.dim() == 2 else 0
    problems = check_rows("token_indices", tokens, req.numel(), k)
    if req.numel() != rows:
        problems.append(f"req_id has {req.numel()} entries, token_indices {rows} rows (they "
                        "must cover the same tokens)")
    if table.dim() != 2:
        problems.append(f"block_table has {table.dim()} dimensions, expected 2")
    if problems:
        return problems
    requests = table.shape[0]
    if seq_lens.numel() != requests:
        problems.append(f"seq_lens has {seq_lens.numel()} entries, block_table {requests} rows")
    ids = req.cpu()
    if ids.numel() and (int(ids.min()) < -1 or int(ids.max()) >= requests):
        problems.append(f"req_id holds a request outside 0..{requests - 1} (or -1, the "
                        "padding id)")
    if problems:
        return problems
    lengths = seq_lens.cpu().to(torch.int64)
    if lengths.numel() and int(lengths.min()) < 0:
        return ["seq_lens holds a negative length"]
    pages = -(-lengths // page_size)
    if requests and table.shape[1] < int(pages.max()):
        return [f"block_table has {table.shape[1]} columns, fewer than the {int(pages.max())} "
                "pages of the longest request"]
    if bool((table.cpu() < 0).any()):
        problems.append("block_table holds a negative block id")
    return problems
