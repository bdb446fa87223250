"""The shipped kernels launched with several column programs per row and narrow tiles: the
launch shape a GPU gets by default, which the interpreter otherwise never runs."""

from functools import partial

from diffcheck.kernels.decode import decode_guarded, decode_pid, decode_unguarded
from diffcheck.kernels.mtp import mtp_guarded, mtp_unguarded
from diffcheck.kernels.prefill import prefill_guarded, prefill_unguarded

# Three column programs over tiles of 64: a program strides over non-adjacent tiles, and the
# last program of a row gets fewer tiles than the others.
SPLIT = {"BLOCK_N": 64, "column_programs": 3, "num_warps": 2}

decode_guarded_split = partial(decode_guarded, **SPLIT)
decode_pid_split = partial(decode_pid, **SPLIT)
decode_unguarded_split = partial(decode_unguarded, **SPLIT)
mtp_guarded_split = partial(mtp_guarded, **SPLIT)
mtp_unguarded_split = partial(mtp_unguarded, **SPLIT)
prefill_guarded_split = partial(prefill_guarded, **SPLIT)
prefill_unguarded_split = partial(prefill_unguarded, **SPLIT)
