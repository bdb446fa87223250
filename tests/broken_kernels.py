"""Deliberately broken kernels: each one is a bug diffcheck claims to catch.

test_broken_kernels.py ties every public function here to the status it must get. They share
one Triton kernel whose BUG constexpr selects the mistake, so each differs from the correct
pid-row kernel in exactly one place.
"""

import torch
import triton
import triton.language as tl

# Globals a compiled kernel reads must be constexpr (the interpreter would take plain ints).
(CORRECT, LEN_PLUS_ONE, WRONG_FILL, SKIP_LAST_TILE, WRITE_BEFORE_OUT, TOKEN_AS_REQUEST,
 READ_NEXT_ROW, NEXT_REQUEST, WILD_INDEX, RUNAWAY) = (tl.constexpr(i) for i in range(10))


@triton.jit
def _buggy_row_kernel(
    req_of_row_ptr,  # int32 [rows] or unused: request of each output row (MTP layout)
    kv_indptr_ptr,  # int32 [R+1]
    region_indptr_ptr,  # int32 [rows+1]: output regions
    kv_indices_ptr,  # int32 [N]
    topk_ptr,  # int32 [rows, K] (strided)
    out_ptr,  # int32 flat workspace
    stride0,
    stride1,
    fill,
    NUM_TOPK_TOKENS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BUG: tl.constexpr,
    USE_REQ_MAP: tl.constexpr,
):
    row = tl.program_id(0)
    req = row
    if USE_REQ_MAP and BUG != TOKEN_AS_REQUEST:
        req = tl.load(req_of_row_ptr + row)
    if BUG == NEXT_REQUEST:
        req = req + 1
    topk_row = row
    if BUG == READ_NEXT_ROW:
        topk_row = row + 1
    kv_start = tl.load(kv_indptr_ptr + req)
    ctx = tl.load(kv_indptr_ptr + req + 1) - kv_start
    out_start = tl.load(region_indptr_ptr + row)
    length = tl.load(region_indptr_ptr + row + 1) - out_start
    if BUG == LEN_PLUS_ONE:
        length = length + 1
    tiles_end = NUM_TOPK_TOKENS
    if BUG == SKIP_LAST_TILE:
        tiles_end = NUM_TOPK_TOKENS - BLOCK_N
    if BUG == RUNAWAY:  # a loop bound read one past kv_indptr by the last program
        tiles_end = tl.load(kv_indptr_ptr + req + 2)
    for col0 in range(0, tiles_end, BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        in_region = cols < length
        pos = tl.load(topk_ptr + topk_row * stride0 + cols * stride1, mask=in_region, other=-1)
        valid = in_region & (pos >= 0) & (pos < ctx)
        if BUG == WILD_INDEX:
            pos = pos + (1 << 30)
        slot = tl.load(kv_indices_ptr + kv_start + pos, mask=valid, other=0)
        if BUG == WRONG_FILL:
            value = tl.where(valid, slot, -1)
        else:
            value = tl.where(valid, slot, fill)
        dst = out_start + cols
        if BUG == WRITE_BEFORE_OUT:
            dst = dst - 1
        tl.store(out_ptr + dst, value, mask=in_region)


def _decode(bug, kv_indptr, page_kv_indptr, kv_indices, token_indices, k, block_n, out, fill):
    rows = kv_indptr.shape[0] - 1
    if out is None:  # a kernel's own output lives on its inputs' device
        out = torch.empty(rows * k, dtype=torch.int32, device=kv_indptr.device)
    _buggy_row_kernel[(rows,)](
        kv_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices, out,
        token_indices.stride(0), token_indices.stride(1), fill,
        NUM_TOPK_TOKENS=k, BLOCK_N=block_n, BUG=bug.value, USE_REQ_MAP=False,
    )
    return out


def decode_len_plus_one(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                        BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Writes one element past the end of every region."""
    return _decode(LEN_PLUS_ONE, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_wrong_fill(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                      BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Writes -1 for invalid entries whatever the contract's fill."""
    return _decode(WRONG_FILL, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_skips_last_tile(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                           BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Its tile loop stops one tile short of K."""
    return _decode(SKIP_LAST_TILE, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_writes_before_out(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Off by one backwards: request 0 writes out[-1]."""
    return _decode(WRITE_BEFORE_OUT, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_raises(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                  BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """A launcher that rejects a valid call."""
    raise ValueError(f"unsupported NUM_TOPK_TOKENS={NUM_TOPK_TOKENS}")


def decode_ignores_out(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                       BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Correct values, but in a tensor of its own instead of the out= workspace."""
    return _decode(CORRECT, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, None, fill)


def _mtp(bug, sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices, kv_indptr,
         k, block_n, out, fill, rows=None):
    tokens = sparse_kv_indptr.shape[0] - 1
    if out is None:
        out = torch.empty(tokens * k, dtype=torch.int32, device=kv_indptr.device)
    _buggy_row_kernel[(tokens if rows is None else rows,)](
        token_to_seq_idxs, kv_indptr, sparse_kv_indptr, kv_indices, topk_indices, out,
        topk_indices.stride(0), topk_indices.stride(1), fill,
        NUM_TOPK_TOKENS=k, BLOCK_N=block_n, BUG=bug.value, USE_REQ_MAP=True,
    )
    return out


def mtp_token_as_request(sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices,
                         kv_indptr, NUM_TOPK_TOKENS=2048, BLOCK_N=1024, out=None, fill=0):
    """The decode mistake on the MTP layout: token t taken as request t."""
    # Clamp the token count so request t+1 exists: the bug is the wrong row, not a wild read.
    rows = min(sparse_kv_indptr.shape[0] - 1, kv_indptr.shape[0] - 1)
    return _mtp(TOKEN_AS_REQUEST, sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices,
                kv_indptr, NUM_TOPK_TOKENS, BLOCK_N, out, fill, rows)


def decode_reads_next_row(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                          BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Reads top-k row r+1 for request r: the last request reads one row past the tensor."""
    return _decode(READ_NEXT_ROW, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_wild_index(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                      BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Adds 2^30 to every position: a gather 4 GiB past kv_indices (SIGSEGV if unchecked)."""
    return _decode(WILD_INDEX, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_faults_on_k512(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                          BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Correct, except that at K=512 it gathers 4 GiB past kv_indices: a device fault on a GPU,
    SIGSEGV on the CPU without the interpreter check. The cases after it must still pass."""
    bug = WILD_INDEX if NUM_TOPK_TOKENS == 512 else CORRECT
    return _decode(bug, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_runaway(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Its tile loop runs to kv_indptr[req + 2]: the last request reads that bound from the
    red zone (about 2^30), so the loop never ends in practice."""
    return _decode(RUNAWAY, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def mtp_unbounded_request(sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices,
                          kv_indptr, NUM_TOPK_TOKENS=2048, BLOCK_N=1024, out=None, fill=0):
    """Takes request token_to_seq_idxs[t] + 1 with no bound: the last reads kv_indptr[R+1]."""
    return _mtp(NEXT_REQUEST, sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices,
                kv_indptr, NUM_TOPK_TOKENS, BLOCK_N, out, fill)


@triton.jit
def _checked_row_kernel(sparse_kv_indptr_ptr, req_of_row_ptr, topk_ptr, kv_indices_ptr,
                        kv_indptr_ptr, out_ptr, stride0, stride1, num_requests, fill,
                        NUM_TOPK_TOKENS: tl.constexpr, BLOCK_N: tl.constexpr):
    # Checks the request id and every position, but not the token: rows past the end of
    # token_to_seq_idxs and topk_indices are read when sparse_kv_indptr is longer.
    t = tl.program_id(0)
    req = tl.load(req_of_row_ptr + t)
    req_ok = (req >= 0) & (req < num_requests)
    safe_req = tl.where(req_ok, req, 0)
    kv_start = tl.load(kv_indptr_ptr + safe_req)
    ctx = tl.where(req_ok, tl.load(kv_indptr_ptr + safe_req + 1) - kv_start, 0)
    out_start = tl.load(sparse_kv_indptr_ptr + t)
    length = tl.load(sparse_kv_indptr_ptr + t + 1) - out_start
    for col0 in range(0, NUM_TOPK_TOKENS, BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        in_region = cols < length
        pos = tl.load(topk_ptr + t * stride0 + cols * stride1, mask=in_region, other=-1)
        valid = in_region & (pos >= 0) & (pos < ctx)
        slot = tl.load(kv_indices_ptr + kv_start + pos, mask=valid, other=0)
        tl.store(out_ptr + out_start + cols, tl.where(valid, slot, fill), mask=in_region)


def mtp_counts_tokens_from_indptr(sparse_kv_indptr, token_to_seq_idxs, topk_indices,
                                  kv_indices, kv_indptr, NUM_TOPK_TOKENS=2048, BLOCK_N=1024,
                                  out=None, fill=0):
    """Validates request ids and positions, but takes its token count from sparse_kv_indptr
    alone: with a shorter token_to_seq_idxs or topk_indices it reads one entry past their end,
    and its own checks turn the constant and tagged red zones into its fill."""
    tokens = sparse_kv_indptr.shape[0] - 1
    if out is None:
        out = torch.empty(tokens * NUM_TOPK_TOKENS, dtype=torch.int32, device=kv_indptr.device)
    if tokens > 0:
        _checked_row_kernel[(tokens,)](
            sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices, kv_indptr, out,
            topk_indices.stride(0), topk_indices.stride(1), kv_indptr.shape[0] - 1, fill,
            NUM_TOPK_TOKENS=NUM_TOPK_TOKENS, BLOCK_N=BLOCK_N)
    return out
