"""Decode kernels the way engines write them (issue 25): autotuned, with heuristics, refusing
malformed input, and launchers that keep tensors a captured graph points at.

All follow the decode contract (``--path decode``) and share one guarded row body; each
variant differs from it in one place:

- ``tuned_decode`` / ``tuned_decode_own_bench``: correct, ``@triton.autotune`` over two
  configs (``num_warps``/``num_stages`` set, ``key`` over two arguments), the second with
  a custom ``do_bench``.
- ``tuned_decode_second_config_unmasked``: its second config drops the gather's mask.
- ``heuristic_decode`` (correct) and ``heuristic_decode_even_k_unmasked``: an ``EVEN_K``
  fast path (K a multiple of the tile) from ``@triton.heuristics``; the broken one drops the
  store's mask there.
- ``refusing_blocktable``: vLLM's block-table call that raises on request ids outside the
  table before launching anything (and on a row-count skew, as vLLM asserts).
- ``cached_columns_decode``: caches a warm-up-time tensor per launcher and reallocates it
  (freeing the old one) when a larger batch comes; a graph keeps the freed one.
- ``shared_scratch_decode``: one scratch buffer shared by every call, eager or captured,
  regrown (the old one freed) when a larger batch comes.
"""

import time

import torch
import triton
import triton.language as tl

from diffcheck.kernels.rowtile import row_limits, workspace


@triton.jit
def _row(kv_indptr_ptr, page_ptr, kv_indices_ptr, ti_ptr, out_ptr, req, num_rows, num_kv,
         num_out, s0, s1, fill, K: tl.constexpr, BLOCK_N: tl.constexpr,
         MASK_GATHER: tl.constexpr, MASK_STORE: tl.constexpr):
    """One request's row, every access bounded (unless a MASK_ flag says otherwise)."""
    kv_start = tl.load(kv_indptr_ptr + req)
    out_start = tl.load(page_ptr + req)
    lo, span, first, last = row_limits(kv_start, tl.load(kv_indptr_ptr + req + 1), num_kv,
                                       out_start, tl.load(page_ptr + req + 1), num_out, K)
    readable = tl.where(req < num_rows, last, 0)
    for col0 in range(0, last, BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        pos = tl.load(ti_ptr + req.to(tl.int64) * s0 + cols * s1, mask=cols < readable,
                      other=-1)
        valid = (pos - lo).to(tl.uint32, bitcast=True) < span
        if MASK_GATHER:
            slot = tl.load(kv_indices_ptr + kv_start + pos, mask=valid, other=fill)
        else:  # the gather unmasked, invalid entries replaced afterwards
            slot = tl.where(valid, tl.load(kv_indices_ptr + kv_start + pos), fill)
        if MASK_STORE:
            tl.store(out_ptr + out_start + cols, slot, mask=(cols >= first) & (cols < last))
        else:  # whole tiles stored: right only where the row fills its tiles
            tl.store(out_ptr + out_start + cols, slot)


def _tuned_body(kv_indptr_ptr, page_ptr, kv_indices_ptr, ti_ptr, out_ptr, num_rows, num_kv,
                num_out, s0, s1, fill, K: tl.constexpr, BLOCK_N: tl.constexpr,
                MASK_GATHER: tl.constexpr):
    _row(kv_indptr_ptr, page_ptr, kv_indices_ptr, ti_ptr, out_ptr, tl.program_id(0),
         num_rows, num_kv, num_out, s0, s1, fill, K, BLOCK_N, MASK_GATHER, True)


def _one_run_bench(kernel_call, quantiles=None):
    """A custom do_bench (as engines pass one): one timed call."""
    start = time.perf_counter()
    kernel_call()
    elapsed = (time.perf_counter() - start) * 1e3
    return [elapsed, elapsed, elapsed] if quantiles else elapsed


_GOOD = [triton.Config({"BLOCK_N": 128, "MASK_GATHER": True}, num_warps=4, num_stages=2),
         triton.Config({"BLOCK_N": 64, "MASK_GATHER": True}, num_warps=2, num_stages=3)]
_SECOND_UNMASKED = [_GOOD[0],
                    triton.Config({"BLOCK_N": 256, "MASK_GATHER": False}, num_warps=8,
                                  num_stages=1)]
_KEY = ["K", "num_rows"]

_tuned_kernel = triton.autotune(configs=_GOOD, key=_KEY)(triton.jit(_tuned_body))
_tuned_own_bench_kernel = triton.autotune(configs=_GOOD, key=_KEY, do_bench=_one_run_bench)(
    triton.jit(_tuned_body))
_tuned_unmasked_kernel = triton.autotune(configs=_SECOND_UNMASKED, key=_KEY)(
    triton.jit(_tuned_body))


def _requests(kv_indptr, page_kv_indptr):
    return min(kv_indptr.shape[0], page_kv_indptr.shape[0]) - 1


def _launch_tuned(kernel, kv_indptr, page_kv_indptr, kv_indices, token_indices, k, out, fill,
                  grid_of_meta=False):
    num_requests = _requests(kv_indptr, page_kv_indptr)
    out = workspace(out, max(num_requests, 0), k, kv_indptr)
    # a grid computed from the config's meta-parameters, as engines write it (one program per
    # request whatever the tile)
    grid = (lambda meta: (num_requests * meta["BLOCK_N"] // meta["BLOCK_N"],)) if \
        grid_of_meta else (num_requests,)
    if num_requests > 0:
        kernel[grid](kv_indptr, page_kv_indptr, kv_indices, token_indices, out,
                                token_indices.shape[0], kv_indices.numel(), out.numel(),
                                token_indices.stride(0), token_indices.stride(1), fill, K=k)
    return out


def tuned_decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                 NUM_TOPK_TOKENS=2048, out=None, fill=0):
    """Correct; autotuned over two configs with Triton's own benchmarker."""
    return _launch_tuned(_tuned_kernel, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                         NUM_TOPK_TOKENS, out, fill)


def tuned_decode_grid_of_meta(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                              NUM_TOPK_TOKENS=2048, out=None, fill=0):
    """Correct; autotuned, its grid a function of the config (``lambda meta: ...``)."""
    return _launch_tuned(_tuned_kernel, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                         NUM_TOPK_TOKENS, out, fill, grid_of_meta=True)


def tuned_decode_own_bench(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                           NUM_TOPK_TOKENS=2048, out=None, fill=0):
    """Correct; autotuned with a custom do_bench."""
    return _launch_tuned(_tuned_own_bench_kernel, kv_indptr, page_kv_indptr, kv_indices,
                         token_indices, NUM_TOPK_TOKENS, out, fill)


def tuned_decode_second_config_unmasked(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                        token_indices, NUM_TOPK_TOKENS=2048, out=None, fill=0):
    """Broken in its second config only: the gather reads kv_indices at any position."""
    return _launch_tuned(_tuned_unmasked_kernel, kv_indptr, page_kv_indptr, kv_indices,
                         token_indices, NUM_TOPK_TOKENS, out, fill)


def _heuristic_body(kv_indptr_ptr, page_ptr, kv_indices_ptr, ti_ptr, out_ptr, num_rows, num_kv,
                    num_out, s0, s1, fill, K: tl.constexpr, BLOCK_N: tl.constexpr,
                    EVEN_K: tl.constexpr, TRUST_EVEN_K: tl.constexpr):
    if EVEN_K and TRUST_EVEN_K:  # the broken fast path: whole tiles stored
        _row(kv_indptr_ptr, page_ptr, kv_indices_ptr, ti_ptr, out_ptr, tl.program_id(0),
             num_rows, num_kv, num_out, s0, s1, fill, K, BLOCK_N, True, False)
    else:
        _row(kv_indptr_ptr, page_ptr, kv_indices_ptr, ti_ptr, out_ptr, tl.program_id(0),
             num_rows, num_kv, num_out, s0, s1, fill, K, BLOCK_N, True, True)


_EVEN_K = {"EVEN_K": lambda args: args["K"] % args["BLOCK_N"] == 0}
_heuristic_kernel = triton.heuristics(_EVEN_K)(triton.jit(_heuristic_body))


def _launch_heuristic(kv_indptr, page_kv_indptr, kv_indices, token_indices, k, out, fill,
                      trust):
    num_requests = _requests(kv_indptr, page_kv_indptr)
    out = workspace(out, max(num_requests, 0), k, kv_indptr)
    if num_requests > 0:
        _heuristic_kernel[(num_requests,)](
            kv_indptr, page_kv_indptr, kv_indices, token_indices, out, token_indices.shape[0],
            kv_indices.numel(), out.numel(), token_indices.stride(0), token_indices.stride(1),
            fill, K=k, BLOCK_N=128, TRUST_EVEN_K=trust)
    return out


def heuristic_decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                     NUM_TOPK_TOKENS=2048, out=None, fill=0):
    """Correct; an EVEN_K heuristic picks a specialisation that changes nothing."""
    return _launch_heuristic(kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             NUM_TOPK_TOKENS, out, fill, False)


def heuristic_decode_even_k_unmasked(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                     token_indices, NUM_TOPK_TOKENS=2048, out=None, fill=0):
    """Broken on the EVEN_K side only: whole tiles stored past a short row's region."""
    return _launch_heuristic(kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             NUM_TOPK_TOKENS, out, fill, True)


@triton.jit
def _ordered_rows(order_ptr, kv_indptr_ptr, page_ptr, kv_indices_ptr, ti_ptr, out_ptr,
                  num_requests, num_rows, num_kv, num_out, s0, s1, fill, K: tl.constexpr,
                  BLOCK_N: tl.constexpr):
    # the request this program converts, from a table the launcher keeps (kept in range)
    req = tl.load(order_ptr + tl.program_id(0))
    req = tl.minimum(tl.maximum(req, 0), num_requests - 1)
    _row(kv_indptr_ptr, page_ptr, kv_indices_ptr, ti_ptr, out_ptr, req, num_rows, num_kv,
         num_out, s0, s1, fill, K, BLOCK_N, True, True)


@triton.jit
def _stage_starts(kv_indptr_ptr, page_ptr, scratch_ptr):
    req = tl.program_id(0)
    tl.store(scratch_ptr + 2 * req, tl.load(kv_indptr_ptr + req))
    tl.store(scratch_ptr + 2 * req + 1, tl.load(page_ptr + req))


@triton.jit
def _from_scratch(scratch_ptr, kv_indptr_ptr, page_ptr, kv_indices_ptr, ti_ptr, out_ptr,
                  num_rows, num_kv, num_out, s0, s1, fill, K: tl.constexpr,
                  BLOCK_N: tl.constexpr):
    req = tl.program_id(0)
    # the row's starts as staged by the first kernel; the ends from the metadata
    kv_start = tl.load(scratch_ptr + 2 * req)
    out_start = tl.load(scratch_ptr + 2 * req + 1)
    lo, span, first, last = row_limits(kv_start, tl.load(kv_indptr_ptr + req + 1), num_kv,
                                       out_start, tl.load(page_ptr + req + 1), num_out, K)
    readable = tl.where(req < num_rows, last, 0)
    for col0 in range(0, last, BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        pos = tl.load(ti_ptr + req.to(tl.int64) * s0 + cols * s1, mask=cols < readable,
                      other=-1)
        valid = (pos - lo).to(tl.uint32, bitcast=True) < span
        slot = tl.load(kv_indices_ptr + kv_start + pos, mask=valid, other=fill)
        tl.store(out_ptr + out_start + cols, slot, mask=(cols >= first) & (cols < last))


#: launcher state kept between calls: a request-order table and a staging scratch, each
#: regrown (the old one dropped) when a larger batch comes
_ORDER: dict = {}
_SCRATCH: dict = {}


def _grown(cache: dict, device, needed: int, make) -> torch.Tensor:
    kept = cache.get(device)
    if kept is None or kept.numel() < needed:
        kept = cache[device] = make(max(needed, 1))
    return kept


def _launch_ordered(order, kv_indptr, page_kv_indptr, kv_indices, token_indices, k, out,
                    fill, num_requests):
    if num_requests > 0:
        _ordered_rows[(num_requests,)](
            order, kv_indptr, page_kv_indptr, kv_indices, token_indices, out, num_requests,
            token_indices.shape[0], kv_indices.numel(), out.numel(), token_indices.stride(0),
            token_indices.stride(1), fill, K=k, BLOCK_N=128)
    return out


def _launch_staged(scratch, kv_indptr, page_kv_indptr, kv_indices, token_indices, k, out,
                   fill, num_requests):
    if num_requests > 0:
        _stage_starts[(num_requests,)](kv_indptr, page_kv_indptr, scratch)
        _from_scratch[(num_requests,)](
            scratch, kv_indptr, page_kv_indptr, kv_indices, token_indices, out,
            token_indices.shape[0], kv_indices.numel(), out.numel(), token_indices.stride(0),
            token_indices.stride(1), fill, K=k, BLOCK_N=128)
    return out


def cached_columns_decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                          NUM_TOPK_TOKENS=2048, out=None, fill=0):
    """Keeps a request-order table made at warm-up (an arange), regrown for a larger batch:
    a graph captured earlier still points at the old, freed one."""
    num_requests = _requests(kv_indptr, page_kv_indptr)
    out = workspace(out, max(num_requests, 0), NUM_TOPK_TOKENS, kv_indptr)
    order = _grown(_ORDER, kv_indptr.device, num_requests, lambda n: torch.arange(
        n, dtype=torch.int32, device=kv_indptr.device))
    return _launch_ordered(order, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                           NUM_TOPK_TOKENS, out, fill, num_requests)


def shared_scratch_decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                          NUM_TOPK_TOKENS=2048, out=None, fill=0):
    """Stages each row's starts in one scratch buffer shared by every call, eager or
    captured, regrown for a larger batch: a graph captured earlier writes into the old one."""
    num_requests = _requests(kv_indptr, page_kv_indptr)
    out = workspace(out, max(num_requests, 0), NUM_TOPK_TOKENS, kv_indptr)
    scratch = _grown(_SCRATCH, kv_indptr.device, 2 * num_requests, lambda n: torch.empty(
        n, dtype=torch.int32, device=kv_indptr.device))
    return _launch_staged(scratch, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                          NUM_TOPK_TOKENS, out, fill, num_requests)


def tuned_decode_keyed_on_graph_size(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                     token_indices, NUM_TOPK_TOKENS=2048, out=None, fill=0):
    """Correct kernel, wrong launcher: its autotune key (the number of rows) differs at
    capture from its warm-up (a warm-up on a smaller view of the batch), so it tunes inside
    the capture."""
    if torch.cuda.is_current_stream_capturing():
        token_indices = token_indices  # the whole batch
    else:
        token_indices = token_indices[: max(token_indices.shape[0] - 1, 0)]
    return _launch_tuned(_tuned_kernel, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                         NUM_TOPK_TOKENS, out, fill)


def cached_view_decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                       NUM_TOPK_TOKENS=2048, out=None, fill=0):
    """cached_columns_decode passing a view of its cached table (made in the call, over the
    cached storage)."""
    num_requests = _requests(kv_indptr, page_kv_indptr)
    out = workspace(out, max(num_requests, 0), NUM_TOPK_TOKENS, kv_indptr)
    order = _grown(_ORDER, (kv_indptr.device, "view"), num_requests, lambda n: torch.arange(
        n, dtype=torch.int32, device=kv_indptr.device))
    return _launch_ordered(order[:num_requests], kv_indptr, page_kv_indptr, kv_indices,
                           token_indices, NUM_TOPK_TOKENS, out, fill, num_requests)


def zeroed_scratch_decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                          NUM_TOPK_TOKENS=2048, out=None, fill=0):
    """shared_scratch_decode clearing its scratch with a torch op before the launches (the
    op is captured too), its capacity rounded up to a power of two."""
    num_requests = _requests(kv_indptr, page_kv_indptr)
    out = workspace(out, max(num_requests, 0), NUM_TOPK_TOKENS, kv_indptr)
    need = 1 << max(2 * num_requests - 1, 0).bit_length()
    scratch = _grown(_SCRATCH, (kv_indptr.device, "zeroed"), need, lambda n: torch.empty(
        n, dtype=torch.int32, device=kv_indptr.device))
    scratch.zero_()
    return _launch_staged(scratch, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                          NUM_TOPK_TOKENS, out, fill, num_requests)
