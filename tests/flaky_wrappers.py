"""Wrappers whose output changes from call to call: what the red-zone reruns must see through.

Each takes its fill from a call counter, so the constant and the tagged filling disagree on
every invalid entry with no tag to explain it, which sends the runner into its reruns.
"""

from diffcheck.kernels.decode import decode_pid

_calls = 0


def reset() -> None:
    global _calls
    _calls = 0


def decode_fill_cycles_by_three(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                                BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=1024, out=None,
                                fill=0):
    """Never the same twice in a row (like racing writes): a rerun of either filling differs
    from that filling's first run."""
    global _calls
    _calls += 1
    return decode_pid(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                      BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill - _calls % 3)


def decode_faults_on_the_third_call(qo_indptr, kv_indptr, page_kv_indptr, kv_indices,
                                    token_indices, BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048,
                                    BLOCK_N=1024, out=None, fill=0):
    """The two fillings disagree, and the first rerun takes the device down."""
    global _calls
    _calls += 1
    if _calls == 3:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    return decode_pid(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                      BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out, fill - _calls)
