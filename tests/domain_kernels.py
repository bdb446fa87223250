"""Kernels that pass every named suite and fail only in a value partition no suite produces.

Each is correct everywhere but for one bug class, so the default command passes it (exit 0);
a hand-made case in its partition catches it:

- blocktable_page_by_shift: page and offset by shift and mask, right only for power-of-two
  page sizes (the suites use 1, 16 and 64).
- blocktable_zero_block_is_null: block id 0 of a used page taken as vLLM's null block by the
  bounded variant (the generators number used blocks from 1; unused pages hold 0).
- prefill_minus_one_block: no check that a used page's block id is >= 0 (an evicted page).
- prefill_trusts_cu_seqlens: no check of a key's page against the table's width; a stale
  cu_seqlens_q is caught only when its ends disagree with the batch, so a half-updated one of
  the same total reads past the block table.
- decode_fixed_tile: a full row is converted in unmasked tiles of 128 columns, right only when
  128 divides K (the suites use 256 to 2048).
- blocktable_int32_row_offset: the table's and the top-k buffer's row offsets in int32, wrong
  only for tables past 2^31 elements (GPU-sized); blocktable_int64_row_offset is its twin.
- blocktable_stride_by_16: the top-k buffer's row stride taken as a multiple of 16 (rounded
  down, as a tile-aligned copy would), right for contiguous rows and [:, :K] views of buffers
  16 or 64 columns wider (the suites'), wrong for a stride of K + 3. It stands in on the CPU
  for a kernel whose tl.multiple_of(stride, 16) hint lies, which the interpreter ignores.
- blocktable_page_by_reciprocal: page = position * ceil(2^20 / P) >> 20, a division by a
  multiply: exact for powers of two, right for the other page sizes at small positions only
  (672 goes wrong at 2687; 48 past 32K), so it needs those pages with far contexts.
- decode_ends_at_the_table: the last request's context taken as the slot table's size minus
  its start: right for a table of exactly the slots in use (the suites' eager cases), wrong
  for a pool with stale slots past the last request, as engines allocate it.

EXPECTED names each broken kernel's status on the case that catches it; CORRECT lists the
kernels that must pass everything.
"""

import torch
import triton
import triton.language as tl

#: broken kernel -> its status (diffcheck.status.Status's value) on a case of its class
EXPECTED = {
    "blocktable_page_by_shift": "mismatch",
    "blocktable_zero_block_is_null": "mismatch",
    "prefill_minus_one_block": "mismatch",
    "prefill_trusts_cu_seqlens": "oob_read",
    # the extra tile of a full region reads token_indices past its K columns (and, where
    # that region ends the out= workspace, writes out[+1]: oob_write; else a stray_write)
    "decode_fixed_tile": "oob_read",
    # On a GPU, with a table of 2^31 to 2^32 elements: the row offset of a late request wraps
    # to a negative int32, so the load lands up to 8 GiB before the table, far from every
    # red zone (the plausible fillings see nothing) and in unmapped memory: an illegal address,
    # a `fault` row. (Past 2^32 elements, rows whose offset passes 2^32 wrap back into the
    # table instead, wrong values alone; those between still fault.) The CPU cannot hold
    # such a table, so no suite or CPU test can show it.
    "blocktable_int32_row_offset": "fault",
    # rows read from the wrong place: other positions, other slots (a row past the end of a
    # small buffer would read past it, but each row's start moves back, never forward)
    "blocktable_stride_by_16": "mismatch",
    "blocktable_page_by_reciprocal": "mismatch",
    # a position past the last request's context reads a stale slot of the pool
    "decode_ends_at_the_table": "mismatch",
}
#: kernels without a bug (they must pass everything)
CORRECT = ("blocktable_int64_row_offset",)
#: kernels whose class only a GPU's memory holds (the GPU default's domain-gpu suite)
GPU_ONLY = ("blocktable_int32_row_offset",)
#: each kernel's path
PATH_OF = {name: name.split("_")[0] for name in (*EXPECTED, *CORRECT)}

# Bug selectors (globals a compiled kernel reads must be constexpr)
(RIGHT, PAGE_BY_SHIFT, ZERO_IS_NULL, INT32_ROWS, MINUS_ONE_BLOCK,
 TRUSTS_CU, STRIDE_BY_16, RECIPROCAL) = (tl.constexpr(i) for i in range(8))

#: the tile width decode_fixed_tile hard-codes
FIXED_TILE = 128


# -- blocktable ------------------------------------------------------------------------------
@triton.jit
def _blocktable_kernel(req_ptr, table_ptr, topk_ptr, seq_ptr, out_ptr, counts_ptr, num_ids,
                       num_requests, num_seq, width, stride_rows, layer_id, bt_s0, bt_s1,
                       ti_s0, ti_s1, out_s0, fill, PAGE: tl.constexpr, SHIFT: tl.constexpr,
                       K: tl.constexpr, BLOCK_N: tl.constexpr, BOUNDED: tl.constexpr,
                       COUNT: tl.constexpr, BUG: tl.constexpr):
    token = tl.program_id(0)
    req = tl.load(req_ptr + token, mask=token < num_ids, other=-1)
    known = (req >= 0) & (req < num_requests)
    if BOUNDED:
        known = known & (req < num_seq)
    req = tl.where(known, req, 0)
    seq_len = 0
    if BOUNDED:
        seq_len = tl.load(seq_ptr + req, mask=known, other=0)
    if BUG == STRIDE_BY_16:  # the bug: the top-k rows taken as 16-aligned
        ti_s0 = ti_s0 // 16 * 16
    if BUG == INT32_ROWS:  # the bug: both row offsets in int32
        table_row = table_ptr + req * bt_s0
        topk_row = topk_ptr + token * ti_s0
    else:
        table_row = table_ptr + req.to(tl.int64) * bt_s0
        topk_row = topk_ptr + token.to(tl.int64) * ti_s0
    out_row = out_ptr + token.to(tl.int64) * out_s0
    count = 0
    for col0 in range(0, K, BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        inside = cols < K
        pos = tl.load(topk_row + cols * ti_s1, mask=inside, other=-1)
        if BUG == PAGE_BY_SHIFT:  # the bug: exact for powers of two only
            page = pos >> SHIFT
            offset = pos & (PAGE - 1)
        elif BUG == RECIPROCAL:  # the bug: a multiply for the division, exact for 2^n only
            page = ((pos.to(tl.int64) * (((1 << 20) + PAGE - 1) // PAGE)) >> 20).to(tl.int32)
            offset = pos - page * PAGE
        else:
            page = pos // PAGE
            offset = pos % PAGE
        valid = inside & known & (pos >= 0) & (page < width)
        if BOUNDED:
            valid = valid & (pos < seq_len)
        block = tl.load(table_row + page * bt_s1, mask=valid, other=0)
        if BOUNDED and BUG == ZERO_IS_NULL:  # the bug: block 0 of a used page is "null"
            valid = valid & (block != 0)
        slot = block * stride_rows + layer_id * PAGE + offset
        tl.store(out_row + cols, tl.where(valid, slot, fill), mask=inside)
        count += tl.sum(valid.to(tl.int32))
    if COUNT:
        tl.store(counts_ptr + token, count)


def _blocktable(req_id, block_table, token_indices, page, stride_rows, k, block_n, out, fill,
                layer_id, seq_lens, return_valid_counts, bug):
    tokens = token_indices.shape[0]
    device = req_id.device
    if out is None:
        out = torch.empty((tokens, k), dtype=torch.int32, device=device)
    counts = torch.zeros(tokens, dtype=torch.int32, device=device)
    requests, width = block_table.shape if block_table.dim() == 2 else (0, 0)
    bounded = seq_lens is not None
    if tokens:
        _blocktable_kernel[(tokens,)](
            req_id, block_table, token_indices, seq_lens if bounded else req_id, out, counts,
            req_id.numel(), requests, seq_lens.numel() if bounded else 0, width,
            stride_rows or page, layer_id, block_table.stride(0) if requests else 0,
            block_table.stride(1) if requests else 0, token_indices.stride(0),
            token_indices.stride(1), out.stride(0) if out.dim() == 2 else k, fill,
            PAGE=page, SHIFT=page.bit_length() - 1, K=k,
            BLOCK_N=min(block_n, triton.next_power_of_2(k)), BOUNDED=bounded,
            COUNT=return_valid_counts, BUG=bug.value)
    return (out, counts) if return_valid_counts else out


def blocktable_page_by_shift(req_id, block_table, token_indices, BLOCK_SIZE=64,
                             BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None,
                             fill=-1, layer_id=0, seq_lens=None, return_valid_counts=False):
    """Page index pos >> log2(BLOCK_SIZE) and offset pos & (BLOCK_SIZE - 1), the log taken on
    the host as bit_length() - 1: exact for power-of-two pages, wrong for pages of 48 or 528."""
    return _blocktable(req_id, block_table, token_indices, BLOCK_SIZE, BLOCK_STRIDE_ROWS,
                       NUM_TOPK_TOKENS, BLOCK_N, out, fill, layer_id, seq_lens,
                       return_valid_counts, PAGE_BY_SHIFT)


def blocktable_zero_block_is_null(req_id, block_table, token_indices, BLOCK_SIZE=64,
                                  BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048, BLOCK_N=128,
                                  out=None, fill=-1, layer_id=0, seq_lens=None,
                                  return_valid_counts=False):
    """With seq_lens= (the bounded variant) block id 0 in a used page (p < seq_lens[r]) is
    taken as vLLM's null block and written as the fill; the contract converts it (0 * S + p % P
    is a real slot). Without seq_lens it leaves block 0 alone: it cannot tell a used page from
    the table's zeroed tail, which the suites' positions at and past ctx do reach."""
    return _blocktable(req_id, block_table, token_indices, BLOCK_SIZE, BLOCK_STRIDE_ROWS,
                       NUM_TOPK_TOKENS, BLOCK_N, out, fill, layer_id, seq_lens,
                       return_valid_counts, ZERO_IS_NULL)


def blocktable_int32_row_offset(req_id, block_table, token_indices, BLOCK_SIZE=64,
                                BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048, BLOCK_N=128,
                                out=None, fill=-1, layer_id=0, seq_lens=None,
                                return_valid_counts=False):
    """Row offsets req * stride(0) of the block table and token * stride(0) of the top-k
    buffer in int32: they wrap once a table holds 2^31 elements (a GPU's, never the CPU's)."""
    return _blocktable(req_id, block_table, token_indices, BLOCK_SIZE, BLOCK_STRIDE_ROWS,
                       NUM_TOPK_TOKENS, BLOCK_N, out, fill, layer_id, seq_lens,
                       return_valid_counts, INT32_ROWS)


def blocktable_stride_by_16(req_id, block_table, token_indices, BLOCK_SIZE=64,
                            BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048, BLOCK_N=128,
                            out=None, fill=-1, layer_id=0, seq_lens=None,
                            return_valid_counts=False):
    """The top-k buffer's row stride rounded down to a multiple of 16 in the kernel: exact
    for every stride the named suites use, wrong for one Triton does not see as aligned."""
    return _blocktable(req_id, block_table, token_indices, BLOCK_SIZE, BLOCK_STRIDE_ROWS,
                       NUM_TOPK_TOKENS, BLOCK_N, out, fill, layer_id, seq_lens,
                       return_valid_counts, STRIDE_BY_16)


def blocktable_page_by_reciprocal(req_id, block_table, token_indices, BLOCK_SIZE=64,
                                  BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048, BLOCK_N=128,
                                  out=None, fill=-1, layer_id=0, seq_lens=None,
                                  return_valid_counts=False):
    """Divides a position by the page with a multiply by ceil(2^20 / P) and a shift: exact
    for powers of two, off by one page near a page's end once the position is large."""
    return _blocktable(req_id, block_table, token_indices, BLOCK_SIZE, BLOCK_STRIDE_ROWS,
                       NUM_TOPK_TOKENS, BLOCK_N, out, fill, layer_id, seq_lens,
                       return_valid_counts, RECIPROCAL)


def blocktable_int64_row_offset(req_id, block_table, token_indices, BLOCK_SIZE=64,
                                BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048, BLOCK_N=128,
                                out=None, fill=-1, layer_id=0, seq_lens=None,
                                return_valid_counts=False):
    """blocktable_int32_row_offset's correct twin: the row offsets cast to int64 first."""
    return _blocktable(req_id, block_table, token_indices, BLOCK_SIZE, BLOCK_STRIDE_ROWS,
                       NUM_TOPK_TOKENS, BLOCK_N, out, fill, layer_id, seq_lens,
                       return_valid_counts, RIGHT)


# -- prefill ---------------------------------------------------------------------------------
@triton.jit
def _prefill_kernel(kv_ptr, seq_ptr, topk_ptr, table_ptr, cu_ptr, out_ptr, num_tokens, num_seq,
                    num_rows, num_requests, num_cu, width, num_out, tk_s0, tk_s1, bt_s0, bt_s1,
                    PAGE: tl.constexpr, K: tl.constexpr, BLOCK_N: tl.constexpr,
                    BUG: tl.constexpr):
    token = tl.program_id(0)
    out_start = tl.load(kv_ptr + token).to(tl.int64)
    length = tl.minimum(tl.load(kv_ptr + token + 1).to(tl.int64) - out_start, K)
    first = tl.minimum(tl.maximum(-out_start, 0), K).to(tl.int32)
    last = tl.maximum(tl.minimum(length, num_out - out_start), 0).to(tl.int32)
    req = tl.load(seq_ptr + token, mask=token < num_seq, other=-1)
    known = (req >= 0) & (req < num_requests)
    req = tl.where(known, req, 0)
    start = tl.load(cu_ptr + req, mask=known, other=0).to(tl.int64)
    len_r = tl.load(cu_ptr + req + 1, mask=known, other=0).to(tl.int64) - start
    if BUG == TRUSTS_CU:  # its only guard against stale metadata: both ends of cu_seqlens_q
        head = tl.load(cu_ptr)
        total = tl.load(cu_ptr + num_cu - 1)
        known = known & (head == 0) & (total <= num_tokens)
    readable = token < num_rows
    table_row = table_ptr + req.to(tl.int64) * bt_s0
    topk_row = topk_ptr + token.to(tl.int64) * tk_s0
    for col0 in range(0, last, BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        write = (cols >= first) & (cols < last)
        key = tl.load(topk_row + cols * tk_s1, mask=write & readable, other=-1).to(tl.int64)
        s = key - start
        valid = write & known & (key >= 0) & (s >= 0) & (s < len_r)
        page = s // PAGE
        if BUG != TRUSTS_CU:  # the bug: a range longer than the request's pages is trusted
            valid = valid & (page < width)
        block = tl.load(table_row + page * bt_s1, mask=valid, other=-1)
        if BUG != MINUS_ONE_BLOCK:  # the bug: an evicted page (-1) is converted
            valid = valid & (block >= 0)
        slot = block * PAGE + (s % PAGE).to(tl.int32)
        tl.store(out_ptr + out_start + cols, tl.where(valid, slot, 0), mask=write)


def _prefill(dsa_kv_indptr, token_to_seq_idxs, topk_indices, block_table, cu_seqlens_q, page,
             k, block_n, out, bug):
    tokens = dsa_kv_indptr.shape[0] - 1
    if out is None:
        out = torch.empty(max(tokens, 0) * k, dtype=torch.int32, device=dsa_kv_indptr.device)
    two_d = block_table.dim() == 2
    requests = min(cu_seqlens_q.shape[0] - 1, block_table.shape[0] if two_d else 0)
    if tokens > 0:
        _prefill_kernel[(tokens,)](
            dsa_kv_indptr, token_to_seq_idxs, topk_indices, block_table, cu_seqlens_q, out,
            tokens, token_to_seq_idxs.numel(), topk_indices.shape[0], requests,
            cu_seqlens_q.numel(), block_table.shape[1] if two_d else 0, out.numel(),
            topk_indices.stride(0), topk_indices.stride(1),
            block_table.stride(0) if two_d else 0, block_table.stride(1) if two_d else 0,
            PAGE=page, K=k, BLOCK_N=min(block_n, triton.next_power_of_2(k)), BUG=bug.value)
    return out


def prefill_minus_one_block(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices,
                            block_table, cu_seqlens_q, PAGE_SIZE=1, NUM_TOPK_TOKENS=2048,
                            BLOCK_N=1024, out=None):
    """Never checks that the block id is >= 0: a used page evicted to -1 gives
    -PAGE_SIZE + s % PAGE_SIZE where the contract wants the fill."""
    return _prefill(dsa_kv_indptr, token_to_seq_idxs, topk_indices, block_table, cu_seqlens_q,
                    PAGE_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, MINUS_ONE_BLOCK)


def prefill_trusts_cu_seqlens(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices,
                              block_table, cu_seqlens_q, PAGE_SIZE=1, NUM_TOPK_TOKENS=2048,
                              BLOCK_N=1024, out=None):
    """Bounds a key by its request's range s < cu[r+1] - cu[r] but never its page by the
    table's width; a stale cu_seqlens_q is caught only by cu[0] != 0 or cu[R] > T (then all
    fill), so a half-updated one of the same total reads past the block table."""
    return _prefill(dsa_kv_indptr, token_to_seq_idxs, topk_indices, block_table, cu_seqlens_q,
                    PAGE_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, TRUSTS_CU)


# -- decode ----------------------------------------------------------------------------------
@triton.jit
def _decode_kernel(kv_indptr_ptr, region_ptr, slots_ptr, topk_ptr, out_ptr, num_rows, num_kv,
                   num_out, num_requests, ti_s0, ti_s1, fill, K: tl.constexpr,
                   TILE: tl.constexpr, FULL_TILES: tl.constexpr, OPEN_END: tl.constexpr):
    req = tl.program_id(0)
    kv_start = tl.load(kv_indptr_ptr + req).to(tl.int64)
    ctx = tl.load(kv_indptr_ptr + req + 1).to(tl.int64) - kv_start
    if OPEN_END:  # the bug: the last request runs to the end of the slot table
        ctx = tl.where(req == num_requests - 1, num_kv - kv_start, ctx)
    out_start = tl.load(region_ptr + req).to(tl.int64)
    length = tl.minimum(tl.load(region_ptr + req + 1).to(tl.int64) - out_start, K)
    first = tl.minimum(tl.maximum(-out_start, 0), K).to(tl.int32)
    last = tl.maximum(tl.minimum(length, num_out - out_start), 0).to(tl.int32)
    readable = req < num_rows
    row = topk_ptr + req.to(tl.int64) * ti_s0
    dst = out_ptr + out_start
    if FULL_TILES and readable & (first == 0) & (last == K):
        # the bug: a full row is taken as whole tiles (right only when TILE divides K)
        for col0 in range(0, K, TILE):
            cols = col0 + tl.arange(0, TILE)
            pos = tl.load(row + cols * ti_s1).to(tl.int64)
            valid = (pos >= 0) & (pos < ctx) & (kv_start + pos >= 0) & (kv_start + pos < num_kv)
            slot = tl.load(slots_ptr + kv_start + pos, mask=valid, other=0)
            tl.store(dst + cols, tl.where(valid, slot, fill))
    else:
        for col0 in range(0, last, TILE):
            cols = col0 + tl.arange(0, TILE)
            write = (cols >= first) & (cols < last)
            pos = tl.load(row + cols * ti_s1, mask=write & readable, other=-1).to(tl.int64)
            valid = (write & (pos >= 0) & (pos < ctx) & (kv_start + pos >= 0)
                     & (kv_start + pos < num_kv))
            slot = tl.load(slots_ptr + kv_start + pos, mask=valid, other=0)
            tl.store(dst + cols, tl.where(valid, slot, fill), mask=write)


def _decode(kv_indptr, page_kv_indptr, kv_indices, token_indices, k, out, fill, full_tiles,
            open_end):
    requests = min(kv_indptr.shape[0], page_kv_indptr.shape[0]) - 1
    if out is None:
        out = torch.empty(max(page_kv_indptr.shape[0] - 1, 0) * k, dtype=torch.int32,
                          device=kv_indptr.device)
    if requests > 0:
        _decode_kernel[(requests,)](
            kv_indptr, page_kv_indptr, kv_indices, token_indices, out, token_indices.shape[0],
            kv_indices.numel(), out.numel(), requests, token_indices.stride(0),
            token_indices.stride(1), fill, K=k, TILE=FIXED_TILE, FULL_TILES=full_tiles,
            OPEN_END=open_end)
    return out


def decode_fixed_tile(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                      BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Ignores BLOCK_N and converts a full row (region of K) in unmasked tiles of a hard-coded
    128 columns: right when 128 divides K; at K = 320 the last tile reads 64 columns past the
    row and writes 64 past the region."""
    return _decode(kv_indptr, page_kv_indptr, kv_indices, token_indices, NUM_TOPK_TOKENS, out,
                   fill, full_tiles=True, open_end=False)


def decode_ends_at_the_table(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                             token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128,
                             out=None, fill=0):
    """Masked tiles throughout, but the last request's context is the slot table's size minus
    its start instead of kv_indptr[R] minus it: right while the table holds exactly the slots
    in use, and past the last context it reads the stale slots of a pooled table."""
    return _decode(kv_indptr, page_kv_indptr, kv_indices, token_indices, NUM_TOPK_TOKENS, out,
                   fill, full_tiles=False, open_end=True)
