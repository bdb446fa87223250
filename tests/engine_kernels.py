"""Kernels in the style of each engine's public index kernel: our own code, with the engines'
call signatures and conventions, passed to diffcheck as they are (``--impl file.py:fn``).

- vLLM ``triton_convert_req_index_to_global_index``: returns a new [T, K] tensor (and the valid
  counts when asked), no out=, no fill (-1), asserts req_id and token_indices agree and
  ``NUM_TOPK_TOKENS % BLOCK_N == 0``.
- ``vllm_convert_checked``: vLLM's call whose launcher raises on request ids outside the
  table (``refused`` on such stale cases).
- TensorRT-LLM's variant: BLOCK_SIZE required, ``stride_factor`` and ``layer_id``, a negative
  block id reads as -1.
- LMDeploy-style: ``block_size``, writes a caller's ``out=`` [T, K], takes K from the shape.
- ATOM's DSA prefill convert and MTP gather: ``out=``, no fill (0), ``BLOCK_N=1024`` that must
  divide K.

Below them, broken variants of the new contracts' known bug classes.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _paged_rows(req_ptr, table_ptr, pos_ptr, out_ptr, counts_ptr, num_requests, width,
                stride_rows, layer_id, t_s0, t_s1, p_s0, p_s1, o_s0,
                PAGE: tl.constexpr, K: tl.constexpr, BLOCK_N: tl.constexpr,
                NEGATIVE_IS_INVALID: tl.constexpr, COUNT: tl.constexpr,
                STRIDE_IS_PAGE: tl.constexpr):
    token = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    req = tl.load(req_ptr + token)
    known = (req >= 0) & (req < num_requests)
    req = tl.where(known, req, 0)
    # Row offsets in int64 (top-k and table rows): a [T, K] buffer or an [R, B] table may hold
    # more than 2^31 elements.
    pos = tl.load(pos_ptr + token.to(tl.int64) * p_s0 + cols * p_s1)
    page = pos // PAGE
    valid = known & (pos >= 0) & (page < width)
    base = tl.load(table_ptr + req.to(tl.int64) * t_s0 + page * t_s1, mask=valid,
                   other=0)
    if NEGATIVE_IS_INVALID:
        valid = valid & (base >= 0)
    stride = stride_rows
    if STRIDE_IS_PAGE:  # the bug: rows per block taken as the page size
        stride = PAGE
    value = tl.where(valid, base * stride + layer_id * PAGE + pos % PAGE, -1)
    tl.store(out_ptr + token.to(tl.int64) * o_s0 + cols, value)
    if COUNT:
        tl.atomic_add(counts_ptr + token, tl.sum(valid.to(tl.int32)))


def _paged(req_id, block_table, token_indices, page, k, block_n, out, stride, layer=0,
           negative_invalid=False, counts=False, stride_is_page=False):
    tokens = req_id.shape[0]
    valid_counts = torch.zeros(tokens, dtype=torch.int32, device=req_id.device)
    if tokens:
        _paged_rows[(tokens, k // block_n)](
            req_id, block_table, token_indices, out, valid_counts, block_table.shape[0],
            block_table.shape[1], stride, layer, block_table.stride(0), block_table.stride(1),
            token_indices.stride(0), token_indices.stride(1), out.stride(0),
            PAGE=page, K=k, BLOCK_N=block_n, NEGATIVE_IS_INVALID=negative_invalid,
            COUNT=counts, STRIDE_IS_PAGE=stride_is_page)
    return valid_counts


def vllm_convert(req_id, block_table, token_indices, BLOCK_SIZE=64, BLOCK_STRIDE_ROWS=None,
                 NUM_TOPK_TOKENS=2048, BLOCK_N=128, HAS_PREFILL_WORKSPACE=False,
                 prefill_workspace_request_ids=None, prefill_workspace_starts=None,
                 return_valid_counts=False):
    """vLLM's call: a new output, the valid counts when asked."""
    assert req_id.dtype == block_table.dtype == token_indices.dtype == torch.int32
    assert req_id.shape[0] == token_indices.shape[0]
    assert token_indices.shape[1] == NUM_TOPK_TOKENS
    assert NUM_TOPK_TOKENS % BLOCK_N == 0
    token_indices = token_indices.contiguous()
    out = torch.empty_like(token_indices)
    counts = _paged(req_id, block_table, token_indices, BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N,
                    out, BLOCK_STRIDE_ROWS or BLOCK_SIZE, counts=return_valid_counts)
    return (out, counts) if return_valid_counts else out


def vllm_convert_checked(req_id, block_table, token_indices, BLOCK_SIZE=64,
                         BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048, BLOCK_N=128):
    """vLLM's call, with a launcher that checks its request ids on the host (outside graph
    capture, where a host read is allowed) and raises on one outside the table, before
    launching anything: what a careful launcher does with malformed metadata. -1 is a
    padding token's id (the contract's all FILL), not malformed."""
    assert req_id.shape[0] == token_indices.shape[0], "req_id and token_indices disagree"
    if not torch.cuda.is_current_stream_capturing() and req_id.numel():
        low, high = int(req_id.min()), int(req_id.max())
        if low < -1 or high >= block_table.shape[0]:
            raise ValueError(f"request ids {low}..{high} outside the block table's "
                             f"{block_table.shape[0]} rows")
    token_indices = token_indices.contiguous()
    out = torch.empty_like(token_indices)
    _paged(req_id, block_table, token_indices, BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out,
           BLOCK_STRIDE_ROWS or BLOCK_SIZE)
    return out


def trtllm_convert(req_id, block_table, token_indices, BLOCK_SIZE, NUM_TOPK_TOKENS=2048,
                   BLOCK_N=128, stride_factor=None, layer_id=0):
    """TensorRT-LLM's call: BLOCK_SIZE required, stride_factor and layer_id."""
    assert token_indices.shape[1] == NUM_TOPK_TOKENS and NUM_TOPK_TOKENS % BLOCK_N == 0
    out = torch.empty_like(token_indices.contiguous())
    _paged(req_id, block_table, token_indices, BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out,
           stride_factor or BLOCK_SIZE, layer_id, negative_invalid=True)
    return out


def lmdeploy_convert(req_id, block_table, token_indices, block_size, out=None):
    """LMDeploy-style: K from the shape, a caller's out= [T, K] written in place."""
    k = token_indices.shape[1]
    if out is None:
        out = torch.empty((req_id.shape[0], k), dtype=torch.int32, device=req_id.device)
    _paged(req_id, block_table, token_indices, block_size, k, min(k, 256), out, block_size)
    return out


@triton.jit
def _atom_prefill_kernel(qo_ptr, kv_ptr, seq_ptr, topk_ptr, table_ptr, cu_ptr, out_ptr,
                         num_requests, width, tk_s0, tk_s1, bt_s0, bt_s1,
                         PAGE_SIZE: tl.constexpr, K: tl.constexpr, BLOCK_N: tl.constexpr,
                         BUG: tl.constexpr):
    token = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    req = tl.load(seq_ptr + token)
    known = (req >= 0) & (req < num_requests)
    if BUG == 3:  # the request id is not bounded
        known = req == req
    req = tl.where(known, req, 0)
    kv_start = tl.load(kv_ptr + token)
    kv_len = tl.load(kv_ptr + token + 1) - kv_start
    # Row offsets in int64 (top-k and table rows): a [T, K] buffer or an [R, B] table may hold
    # more than 2^31 elements.
    key = tl.load(topk_ptr + token.to(tl.int64) * tk_s0 + cols * tk_s1)
    start = tl.load(cu_ptr + req, mask=known, other=0)
    length = tl.load(cu_ptr + req + 1, mask=known, other=0) - start
    if BUG == 4:  # the token's own cu_seqlens_q entry, not its request's
        start = tl.load(cu_ptr + token)
    s = key - start
    store = cols < kv_len
    valid = store & known & (key >= 0)
    if BUG != 1:  # 1: no check that the key lies in the request
        valid = valid & (s >= 0) & (s < length)
    page = s // PAGE_SIZE
    valid = valid & (page < width)
    block = tl.load(table_ptr + req.to(tl.int64) * bt_s0 + page * bt_s1,
                    mask=valid, other=-1)
    valid = valid & (block >= 0)
    offset = s % PAGE_SIZE
    if BUG == 2:  # the page's offset dropped
        offset = 0
    tl.store(out_ptr + kv_start + cols, tl.where(valid, block * PAGE_SIZE + offset, 0),
             mask=store)


def _atom_prefill(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices, block_table,
                  cu_seqlens_q, PAGE_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, bug):
    assert topk_indices.shape[1] == NUM_TOPK_TOKENS
    assert NUM_TOPK_TOKENS % BLOCK_N == 0, "NUM_TOPK_TOKENS must be divisible by BLOCK_N"
    tokens = dsa_qo_indptr.shape[0] - 1
    if out is None:
        out = torch.empty(tokens * NUM_TOPK_TOKENS, dtype=torch.int32,
                          device=dsa_kv_indptr.device)
    if tokens:
        _atom_prefill_kernel[(tokens, NUM_TOPK_TOKENS // BLOCK_N)](
            dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices, block_table,
            cu_seqlens_q, out, min(cu_seqlens_q.shape[0] - 1, block_table.shape[0]),
            block_table.shape[1], topk_indices.stride(0), topk_indices.stride(1),
            block_table.stride(0), block_table.stride(1),
            PAGE_SIZE=PAGE_SIZE, K=NUM_TOPK_TOKENS, BLOCK_N=BLOCK_N, BUG=bug)
    return out


def atom_prefill(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices, block_table,
                 cu_seqlens_q, PAGE_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=1024, out=None):
    """ATOM's prefill call (BLOCK_N=1024 must divide K; an invalid entry is 0)."""
    return _atom_prefill(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices,
                         block_table, cu_seqlens_q, PAGE_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, 0)


@triton.jit
def _atom_mtp_kernel(sparse_ptr, seq_ptr, topk_ptr, slots_ptr, kv_ptr, out_ptr, num_requests,
                     num_kv, s0, s1, K: tl.constexpr, BLOCK_N: tl.constexpr):
    token = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    req = tl.load(seq_ptr + token)
    known = (req >= 0) & (req < num_requests)
    req = tl.where(known, req, 0)
    kv_start = tl.load(kv_ptr + req)
    ctx = tl.where(known, tl.load(kv_ptr + req + 1) - kv_start, 0)
    out_start = tl.load(sparse_ptr + token)
    length = tl.load(sparse_ptr + token + 1) - out_start
    inside = cols < length
    # Row offsets in int64: a [T, K] buffer may hold more than 2^31 elements.
    pos = tl.load(topk_ptr + token.to(tl.int64) * s0 + cols * s1, mask=inside,
                  other=-1)
    valid = inside & (pos >= 0) & (pos < ctx) & (kv_start + pos < num_kv)
    slot = tl.load(slots_ptr + kv_start + pos, mask=valid, other=0)
    tl.store(out_ptr + out_start + cols, tl.where(valid, slot, 0), mask=inside)


def atom_mtp(sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices, kv_indptr,
             NUM_TOPK_TOKENS=2048, BLOCK_N=1024, out=None):
    """ATOM's MTP gather call: asserts NUM_TOPK_TOKENS % BLOCK_N == 0 with BLOCK_N=1024."""
    assert NUM_TOPK_TOKENS % BLOCK_N == 0, "NUM_TOPK_TOKENS must be divisible by BLOCK_N"
    tokens = sparse_kv_indptr.shape[0] - 1
    if out is None:
        out = torch.empty(tokens * NUM_TOPK_TOKENS, dtype=torch.int32,
                          device=kv_indices.device)
    if tokens:
        _atom_mtp_kernel[(tokens, NUM_TOPK_TOKENS // BLOCK_N)](
            sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices, kv_indptr, out,
            kv_indptr.shape[0] - 1, kv_indices.numel(), topk_indices.stride(0),
            topk_indices.stride(1), K=NUM_TOPK_TOKENS, BLOCK_N=BLOCK_N)
    return out


# -- broken variants of the new contracts ----------------------------------------------------
def prefill_no_request_bound(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices,
                             block_table, cu_seqlens_q, PAGE_SIZE=1, NUM_TOPK_TOKENS=2048,
                             BLOCK_N=1024, out=None):
    """Only checks key >= 0: a key of another request (or past this one) is converted."""
    return _atom_prefill(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices,
                         block_table, cu_seqlens_q, PAGE_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, 1)


def prefill_drops_page_offset(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices,
                              block_table, cu_seqlens_q, PAGE_SIZE=1, NUM_TOPK_TOKENS=2048,
                              BLOCK_N=1024, out=None):
    """Writes the page's first slot: wrong whenever PAGE_SIZE > 1."""
    return _atom_prefill(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices,
                         block_table, cu_seqlens_q, PAGE_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, 2)


def prefill_trusts_request_ids(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices,
                               block_table, cu_seqlens_q, PAGE_SIZE=1, NUM_TOPK_TOKENS=2048,
                               BLOCK_N=1024, out=None):
    """A request id past the batch, or -1, reads past cu_seqlens_q and the block table."""
    return _atom_prefill(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices,
                         block_table, cu_seqlens_q, PAGE_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, 3)


def prefill_token_as_request(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices,
                             block_table, cu_seqlens_q, PAGE_SIZE=1, NUM_TOPK_TOKENS=2048,
                             BLOCK_N=1024, out=None):
    """Subtracts cu_seqlens_q[t] (the token's index) instead of cu_seqlens_q[r]."""
    return _atom_prefill(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices,
                         block_table, cu_seqlens_q, PAGE_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, 4)


def blocktable_stride_is_page(req_id, block_table, token_indices, BLOCK_SIZE=64,
                              BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048, BLOCK_N=128):
    """Takes BLOCK_STRIDE_ROWS and ignores it: interleaved layers are misaddressed."""
    out = torch.empty_like(token_indices.contiguous())
    _paged(req_id, block_table, token_indices, BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out,
           BLOCK_STRIDE_ROWS or BLOCK_SIZE, stride_is_page=True)
    return out


def blocktable_counts_every_entry(req_id, block_table, token_indices, BLOCK_SIZE=64,
                                  BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048, BLOCK_N=128,
                                  return_valid_counts=False):
    """Returns K as every row's valid count."""
    out = torch.empty_like(token_indices.contiguous())
    _paged(req_id, block_table, token_indices, BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out,
           BLOCK_STRIDE_ROWS or BLOCK_SIZE)
    counts = torch.full((req_id.shape[0],), NUM_TOPK_TOKENS, dtype=torch.int32,
                        device=req_id.device)
    return (out, counts) if return_valid_counts else out


def blocktable_ignores_seq_lens(req_id, block_table, token_indices, BLOCK_SIZE=64,
                                BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048, BLOCK_N=128,
                                seq_lens=None):
    """The bounded variant's call, without the bound: positions past seq_lens convert."""
    out = torch.empty_like(token_indices.contiguous())
    _paged(req_id, block_table, token_indices, BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out,
           BLOCK_STRIDE_ROWS or BLOCK_SIZE)
    return out


_first_output: list = []


def blocktable_returns_its_first_output(req_id, block_table, token_indices, BLOCK_SIZE=64,
                                        BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048,
                                        BLOCK_N=128):
    """Converts into a fresh tensor every call but returns the one of its first call (the
    TensorRT-LLM #16290 shape: an output pointer kept from another call)."""
    out = torch.empty_like(token_indices.contiguous())
    _paged(req_id, block_table, token_indices, BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out,
           BLOCK_STRIDE_ROWS or BLOCK_SIZE)
    shape_matches = _first_output and _first_output[0].shape == out.shape
    if not shape_matches:
        _first_output[:] = [out]
    return _first_output[0]
