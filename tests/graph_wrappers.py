"""Wrappers around a correct decode kernel that break only under graph capture or replay.

Each is a mistake engines have made: reading device data on the host to size a launch,
allocating a scratch buffer lazily and reusing it for a larger graph, taking a scalar from
host-side state that changes from call to call. test_graphs.py ties each to what diffcheck
must report.
"""

import torch
import triton
import triton.language as tl

from diffcheck.kernels.decode import decode_pid


def _host_read(how):
    def wrapper(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
        lengths = page_kv_indptr[1:] - page_kv_indptr[:-1]
        if how == "item":
            tiles = int(lengths.max().item()) // BLOCK_N + 1  # sizes the launch from data
        elif how == "tolist":
            tiles = max(lengths.tolist()) // BLOCK_N + 1
        elif how == "print":
            print("region lengths", lengths)
            tiles = 1
        elif how == "tensor":  # a constant made from Python data: a host-to-device copy
            tiles = lengths + torch.tensor(1, dtype=torch.int32, device=lengths.device)
        else:  # boolean-mask indexing: its output size depends on the data
            tiles = lengths[lengths > 0].numel()
        del tiles
        return decode_pid(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                          BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)

    return wrapper


decode_grid_from_item = _host_read("item")
decode_grid_from_tolist = _host_read("tolist")
decode_prints_a_tensor = _host_read("print")
decode_masked_select = _host_read("mask")
decode_tensor_from_data = _host_read("tensor")


@triton.jit
def _stash_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    # Copies n elements with no bound on dst: the wrapper trusts its scratch to be big enough.
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=offs < n), mask=offs < n)


_scratch = None


def decode_lazy_scratch(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                        BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Allocates a scratch copy of the output on its first call and reuses it ever after:
    a graph captured for a larger batch later overruns it."""
    global _scratch
    out = decode_pid(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                     BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)
    n = (kv_indptr.shape[0] - 1) * NUM_TOPK_TOKENS
    if _scratch is None:
        _scratch = torch.empty(n, dtype=torch.int32, device=out.device)
    _stash_kernel[(triton.cdiv(n, 1024),)](out, _scratch, n, BLOCK=1024)
    return out


def reset_scratch():
    global _scratch
    _scratch = None


_calls = 0


def decode_fill_from_call_count(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128,
                                out=None, fill=0):
    """Takes its fill from host-side state that changes on every call: a graph freezes the
    value of the call it captured, so replay differs from eager on the same inputs."""
    global _calls
    _calls += 1
    return decode_pid(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                      BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill - (_calls % 2))


def decode_functional_prologue(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                               token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128,
                               out=None, fill=0):
    """Correct: derives its own copies of the indptrs with torch ops before the launch (a
    graph must re-run them on replay, or it would use the captured step's metadata)."""
    kv = kv_indptr + 0
    page = torch.cumsum(torch.cat([page_kv_indptr[:1], page_kv_indptr.diff()]), 0).to(
        torch.int32)
    return decode_pid(qo_indptr, kv, page, kv_indices, token_indices,
                      BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)


_short = {"last": False}


def decode_refuses_capturing_a_short_batch(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                           token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048,
                                           BLOCK_N=128, out=None, fill=0):
    """Correct when called; refuses to be captured after a warm-up call on fewer than 8 live
    requests: a scenario's capture rows raise at some steps only."""
    if torch.cuda.is_current_stream_capturing():
        if _short["last"]:
            raise RuntimeError("refuses to capture a batch of fewer than 8 requests")
    else:
        _short["last"] = int((kv_indptr[1:] > kv_indptr[:-1]).sum()) < 8
    return decode_pid(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                      BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)


#: the last metadata a launcher derived from: (data pointer, shape, version) -> its copy
_derived: dict = {}


def _keeps_derived(key_of):
    def wrapper(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
        if torch.cuda.is_current_stream_capturing():
            kv = kv_indptr + 0  # captured: a replay derives it again
        else:
            key = key_of(kv_indptr)
            if _derived.get("key") != key:
                _derived["key"], _derived["kv"] = key, kv_indptr + 0
            kv = _derived["kv"]
        return decode_pid(qo_indptr, kv, page_kv_indptr, kv_indices, token_indices,
                          BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill)

    return wrapper


#: Derives its kv_indptr once per step for the many layers that share it, and knows a new
#: step by the tensor's address, shape and torch version counter. Wrong in serving: metadata
#: an engine's own kernel or a graph replay rewrites in its persistent buffer keeps its
#: version, and the eager call after such a step uses the step before's offsets.
decode_keeps_metadata_by_version = _keeps_derived(
    lambda t: (t.data_ptr(), tuple(t.shape), t._version))
#: Its correct twin: the same cache keyed by the contents themselves.
decode_keeps_metadata_by_contents = _keeps_derived(
    lambda t: (t.data_ptr(), tuple(t.shape), tuple(t.tolist())))


def reset_derived() -> None:
    _derived.clear()
