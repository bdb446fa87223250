"""Kernels a checker must never pass, and correct kernels of other shapes that it must.

Each misbehaving kernel is one change away from a correct one: a contract bug (a missing
mask, a constant for the fill, a row stride ignored, a launch sized on the host and frozen
into a graph), a write into its inputs, an output that changes from call to call or with the
order of programs, or a launcher that ends or changes the process it runs in.
test_no_false_passes.py ties each to the status it must get under the default command and
under the full suites. Process-ending kernels act only at NUM_TOPK_TOKENS == 512 (one smoke
case), so a run shows both the fault row and the rows after it.

All decode kernels take the decode call (DESIGN.md); every pointer is guarded as in the
shipped kernels unless the misbehaviour is the point.
"""

import ctypes
import os
import signal
import sys
import tempfile
import threading
import time

import torch
import triton
import triton.language as tl

#: the tile width the kernels default to: wide, as the interpreter runs a tile's loop
#: iterations one by one (2.5x faster than 128 on the smoke suites); the 2-D kernel and the
#: one whose bug is its tile count keep 128
WIDE = 1024

# What the one Triton kernel below does differently (a constexpr, as the compiler needs).
(CORRECT, NO_CTX_MASK, CONSTANT_FILL, IGNORES_ROW_STRIDE, WRITES_KV_INDICES,
 RACES, BORROWS_KV_INDICES, FAR_READ, FAR_HANG) = (tl.constexpr(i) for i in range(9))
#: FAR_READ and FAR_HANG act on positions from this far past the context to below 2^30: a band
#: only fuzz's device mutants reach (a position plus 2^16 to 2^17), above the declared domain's
#: far positions (2^16 to 2^16 + 4095 past) and below its int32-max ones
MUTANTS_FAR_FROM, MUTANTS_FAR_TO = 65536 + 4096, 1 << 30
_FAR_FROM, _FAR_TO = tl.constexpr(MUTANTS_FAR_FROM), tl.constexpr(MUTANTS_FAR_TO)


@triton.jit
def _convert_rows(
    kv_indptr_ptr,  # int32 [R+1]: request r owns kv_indices[kv_indptr[r]:kv_indptr[r+1]]
    region_ptr,  # int32 [R+1]: request r's region in out
    kv_indices_ptr,  # int32 [N]: physical slots
    topk_ptr,  # int32 [>= R, K] (strided): request-local positions
    out_ptr,  # int32 flat workspace
    num_requests,  # requests every indptr can describe
    num_rows,  # rows of the top-k buffer
    num_kv,
    num_out,
    stride0,
    stride1,
    fill,
    NUM_TOPK_TOKENS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ROW_PROGRAMS: tl.constexpr,  # programs along axis 0 (rows are strided over them)
    TILE_PROGRAMS: tl.constexpr,  # 0: one program walks every tile; else one tile each
    BUG: tl.constexpr,
):
    first_row = tl.program_id(0)
    for r in range(first_row, num_requests, ROW_PROGRAMS):
        kv_start = tl.load(kv_indptr_ptr + r)
        ctx = tl.load(kv_indptr_ptr + r + 1) - kv_start
        out_start = tl.load(region_ptr + r)
        length = tl.minimum(tl.load(region_ptr + r + 1) - out_start, NUM_TOPK_TOKENS)
        row_stride = stride0
        if BUG == IGNORES_ROW_STRIDE:
            row_stride = NUM_TOPK_TOKENS
        if TILE_PROGRAMS == 0:
            tile_lo = 0
            tile_hi = NUM_TOPK_TOKENS
        else:
            tile_lo = tl.program_id(1) * BLOCK_N
            tile_hi = tile_lo + BLOCK_N
        if BUG == RACES:  # both programs of a row write all of it
            tile_lo = 0
            tile_hi = NUM_TOPK_TOKENS
        for col0 in range(tile_lo, tile_hi, BLOCK_N):
            cols = col0 + tl.arange(0, BLOCK_N)
            inside = (cols < length) & (out_start + cols >= 0) & (out_start + cols < num_out)
            readable = inside & (r < num_rows)
            pos = tl.load(topk_ptr + r * row_stride + cols * stride1, mask=readable, other=-1)
            valid = readable & (pos >= 0) & (pos < ctx)
            if BUG == NO_CTX_MASK:
                valid = readable
            valid = valid & (kv_start + pos >= 0) & (kv_start + pos < num_kv)
            slot = tl.load(kv_indices_ptr + kv_start + pos, mask=valid, other=0)
            if BUG == FAR_READ:  # a position in the mutants' far band read 2^40 bytes away
                far = readable & (pos >= ctx + _FAR_FROM) & (pos < _FAR_TO)
                slot += tl.load(kv_indices_ptr + (pos.to(tl.int64) << 24), mask=far, other=0)
            if BUG == FAR_HANG:  # a loop as long as such a position is large
                far = readable & (pos >= ctx + _FAR_FROM) & (pos < _FAR_TO)
                for _ in range(tl.sum(far.to(tl.int32), axis=0) * 100000000):
                    slot += 0
            value = tl.where(valid, slot, fill)
            if BUG == CONSTANT_FILL:
                value = tl.where(valid, slot, 0)
            if BUG == RACES:
                value = value ^ tl.program_id(1)  # program 1 writes wrong values over 0's
            tl.store(out_ptr + out_start + cols, value, mask=inside)
            if BUG == WRITES_KV_INDICES:  # "marks" every slot it gathered
                tl.store(kv_indices_ptr + kv_start + pos, -slot, mask=valid)
            if BUG == BORROWS_KV_INDICES:  # marks, then puts every slot back
                tl.store(kv_indices_ptr + kv_start + pos, -slot, mask=valid)
                tl.store(kv_indices_ptr + kv_start + pos, slot, mask=valid)


def _launch(kv_indptr, page_kv_indptr, kv_indices, token_indices, k, block_n, out, fill,
            bug=CORRECT, row_programs=None, tiles=False, race=False):
    requests = min(kv_indptr.shape[0], page_kv_indptr.shape[0]) - 1
    if out is None:
        out = torch.empty(max(requests, 0) * k, dtype=torch.int32, device=kv_indptr.device)
    if requests <= 0:
        return out
    programs = requests if row_programs is None else min(row_programs, requests)
    tile_programs = triton.cdiv(k, block_n) if tiles else (2 if race else 1)
    _convert_rows[(programs, tile_programs)](
        kv_indptr, page_kv_indptr, kv_indices, token_indices, out, requests,
        token_indices.shape[0], kv_indices.numel(), out.numel(), token_indices.stride(0),
        token_indices.stride(1), fill, NUM_TOPK_TOKENS=k, BLOCK_N=block_n,
        ROW_PROGRAMS=programs, TILE_PROGRAMS=tile_programs if tiles else 0,
        BUG=(RACES if race else bug).value,
    )
    return out


def _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices, k, block_n, out,
            fill, **how):
    return _launch(kv_indptr, page_kv_indptr, kv_indices, token_indices, k, block_n, out, fill,
                   **how)


# -- correct kernels of other shapes -----------------------------------------------------------
def decode_persistent(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                      BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """Correct: three persistent programs stride over the rows (a grid-stride loop)."""
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill, row_programs=3)


def decode_tiles_2d(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                    BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Correct: a 2-D grid, one program per (row, tile of BLOCK_N columns)."""
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill, tiles=True)


def decode_torch_prologue(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                          BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """Correct: rebuilds both indptrs from their lengths with torch ops before the launch
    (graph-capturable: no host reads), as launchers that preprocess metadata do."""
    starts = torch.cumsum(torch.cat([kv_indptr[:1], kv_indptr.diff()]), 0).to(torch.int32)
    regions = torch.cat([page_kv_indptr[:1],
                         page_kv_indptr[:1] + torch.cumsum(page_kv_indptr.diff(), 0)])
    return _decode(qo_indptr, starts, regions.to(torch.int32), kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill)


# -- contract bugs the default selection must catch --------------------------------------------
def decode_no_ctx_mask(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                       BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """Gathers every position in the region: no `0 <= p < ctx` mask (bounded by kv_indices
    only, so it reads other requests' slots)."""
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill, bug=NO_CTX_MASK)


def decode_constant_fill(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                         BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """Takes fill= but writes 0 for every invalid entry."""
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill, bug=CONSTANT_FILL)


def decode_ignores_row_stride(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                              BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None,
                              fill=0):
    """Steps rows by K instead of the top-k buffer's stride (wrong for a [:, :K] view)."""
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill, bug=IGNORES_ROW_STRIDE)


_tiles_by_shape: dict = {}


def decode_launch_frozen_at_capture(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                    token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048,
                                    BLOCK_N=128, out=None, fill=0):
    """Sizes its column loop on the host from the longest region of the first call of each
    shape (a graph's warm-up), then reuses it: a graph warmed up and captured on a dummy
    batch stays that small for every replay."""
    key = (tuple(kv_indptr.shape), tuple(token_indices.shape))
    if key not in _tiles_by_shape:  # never inside a capture: the warm-up always comes first
        longest = int((page_kv_indptr[1:] - page_kv_indptr[:-1]).max().item()) \
            if page_kv_indptr.numel() > 1 else 0
        _tiles_by_shape[key] = max(1, triton.cdiv(min(longest, NUM_TOPK_TOKENS), BLOCK_N))
    k = min(_tiles_by_shape[key] * BLOCK_N, NUM_TOPK_TOKENS)
    if out is None:
        out = torch.empty((kv_indptr.shape[0] - 1) * NUM_TOPK_TOKENS, dtype=torch.int32,
                          device=kv_indptr.device)
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   k, min(BLOCK_N, k), out, fill)


# -- inputs are read-only ----------------------------------------------------------------------
def decode_zeroes_kv_indices(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """Correct output, then `kv_indices.zero_()` in the launcher."""
    out = decode_persistent(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                            BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)
    kv_indices.zero_()
    return out


def decode_scribbles_on_qo_indptr(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                  token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE,
                                  out=None, fill=0):
    """`qo_indptr.fill_(12345)`: a buffer the kernel does not even need."""
    qo_indptr.fill_(12345)
    return decode_persistent(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_clears_token_indices(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE,
                                out=None, fill=0):
    """Consumes the top-k rows: `token_indices.fill_(-1)` after the conversion."""
    out = decode_persistent(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                            BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)
    token_indices.fill_(-1)
    return out


def decode_triton_writes_kv_indices(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                    token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048,
                                    BLOCK_N=128, out=None, fill=0):
    """A Triton store into kv_indices (negates every slot it gathered)."""
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill, bug=WRITES_KV_INDICES)


def decode_borrows_kv_indices(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                              BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None,
                              fill=0):
    """Stores into kv_indices and puts every slot back before returning: the table is as
    staged afterwards, but another kernel reading it meanwhile (another stream) sees
    negated slots."""
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill, bug=BORROWS_KV_INDICES)


# -- outputs that change between identical calls -----------------------------------------------
_calls = {"later": 0}


def decode_wrong_after_first_call(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                  token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE,
                                  out=None, fill=0):
    """Right on its first call; every later call reads the positions one off (state kept on
    the host between calls)."""
    _calls["later"] += 1
    positions = token_indices if _calls["later"] == 1 else token_indices + 1
    return decode_persistent(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, positions,
                             BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_racy(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """Two programs per row write the whole row, the second one wrongly: whichever runs last
    wins, as on a GPU."""
    return _decode(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, BLOCK_N, out, fill, race=True)


# -- launchers that end the process (only at K == 512: one smoke case) --------------------------
def _correct_unless_512(k, then, *args):
    if k == 512:
        then()
    return decode_persistent(*args)


def decode_calls_sys_exit(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                          BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """`sys.exit(0)` at K=512."""
    return _correct_unless_512(NUM_TOPK_TOKENS, lambda: sys.exit(0), qo_indptr, kv_indptr,
                               page_kv_indptr, kv_indices, token_indices, BLOCK_SIZE,
                               NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_calls_os_exit(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                         BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """`os._exit(0)` at K=512: no exception, no cleanup, exit code 0."""
    return _correct_unless_512(NUM_TOPK_TOKENS, lambda: os._exit(0), qo_indptr, kv_indptr,
                               page_kv_indptr, kv_indices, token_indices, BLOCK_SIZE,
                               NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_segfaults(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                     BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """Reads address 0 from C at K=512: SIGSEGV."""
    return _correct_unless_512(NUM_TOPK_TOKENS, lambda: ctypes.string_at(0), qo_indptr,
                               kv_indptr, page_kv_indptr, kv_indices, token_indices, BLOCK_SIZE,
                               NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_kills_itself(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                        BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """SIGKILL to its own process at K=512."""
    return _correct_unless_512(NUM_TOPK_TOKENS, lambda: os.kill(os.getpid(), signal.SIGKILL),
                               qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                               BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def _hang_deaf_to_alarms():
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
    time.sleep(3600)


def decode_hangs_ignoring_alarms(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                 token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE,
                                 out=None, fill=0):
    """At K=512, ignores SIGALRM (an in-process time limit) and sleeps for an hour."""
    return _correct_unless_512(NUM_TOPK_TOKENS, _hang_deaf_to_alarms, qo_indptr, kv_indptr,
                               page_kv_indptr, kv_indices, token_indices, BLOCK_SIZE,
                               NUM_TOPK_TOKENS, BLOCK_N, out, fill)


# -- launchers that change the process they run in ---------------------------------------------
#: set to let leftover threads end (a test's teardown)
LEFTOVERS_MAY_END = threading.Event()


def decode_leaves_a_thread(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                           BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """Starts a non-daemon thread that outlives the call (it would keep a process alive)."""
    threading.Thread(target=LEFTOVERS_MAY_END.wait, args=(600,), daemon=False,
                     name="kernel-leftover").start()
    return decode_persistent(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_changes_directory(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """`os.chdir` to another folder (the file system's root, or the temporary folder when
    run from the root): relative paths now point elsewhere."""
    os.chdir("/" if os.getcwd() != "/" else tempfile.gettempdir())
    return decode_persistent(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_reseeds_the_rng(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                           BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """`torch.manual_seed(1234)` in the launcher: every sampler after it repeats itself."""
    torch.manual_seed(1234)
    return decode_persistent(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_sets_default_dtype(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                              BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """`torch.set_default_dtype(torch.float64)` and leaves it so."""
    torch.set_default_dtype(torch.float64)
    return decode_persistent(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_sets_an_environment_variable(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                        token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048,
                                        BLOCK_N=WIDE, out=None, fill=0):
    """Exports a variable into the process environment."""
    os.environ["MISBEHAVING_KERNEL_WAS_HERE"] = "1"
    return decode_persistent(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def decode_switches_the_stream(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                               token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE,
                               out=None, fill=0):
    """On a GPU, makes a new stream current and leaves it current (nothing on the CPU)."""
    if kv_indptr.is_cuda and not torch.cuda.is_current_stream_capturing():
        torch.cuda.set_stream(torch.cuda.Stream(kv_indptr.device))
    return decode_persistent(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def _write_later(out, seconds):
    time.sleep(seconds)
    out[: min(8, out.numel())].fill_(777)


def decode_writes_out_late(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                           BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=WIDE, out=None, fill=0):
    """Returns a correct output, and a thread overwrites its first elements 50 ms later."""
    out = decode_persistent(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                            BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)
    threading.Thread(target=_write_later, args=(out, 0.05), daemon=True,
                     name="late-writer").start()
    return out


def _touch_the_device(device):
    while not LEFTOVERS_MAY_END.wait(0.001):
        torch.ones(16, device=device).sum()


_toucher: list = []


def decode_leaves_a_thread_on_the_device(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                         token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048,
                                         BLOCK_N=WIDE, out=None, fill=0):
    """On its first call in a process, starts a helper thread that keeps launching work on
    the device and never ends: on a GPU, a graph captured in the same process meanwhile is
    invalidated (the thread's launches join the capture)."""
    if not any(t.is_alive() for t in _toucher):
        _toucher[:] = [threading.Thread(target=_touch_the_device, args=(kv_indptr.device,),
                                        daemon=True, name="device-toucher")]
        _toucher[0].start()
    return decode_persistent(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)
