"""decode: the decode convert (one query token per request; engines use it when
max_seqlen_q == 1).

Call: ``(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices, BLOCK_SIZE=1,
NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None) -> out``

- ``qo_indptr`` [R+1]: cu_seqlens_q; in decode qo_indptr[r] == r, so it carries no
  information.
- ``kv_indptr`` [R+1]: request r owns ``kv_indices[kv_indptr[r] : kv_indptr[r+1]]``; ctx_r is
  that length.
- ``page_kv_indptr`` [R+1]: request r's output region is
  ``out[page_kv_indptr[r] : page_kv_indptr[r+1]]``, of length L_r = min(ctx_r, K).
- ``kv_indices`` [N]: physical slots (>= 0).
- ``token_indices`` [T, K], T >= R, possibly a strided view: row r holds request-local
  positions, -1 where unused.

Result, for j < L_r and p = token_indices[r, j]:
``out[page_kv_indptr[r] + j] = kv_indices[kv_indptr[r] + p]`` if 0 <= p < ctx_r, else FILL
(0 by default, the ATOM contract). Nothing outside the regions is written; ``out`` is a
workspace of at least R*K elements, or allocated when None.

Allowed reads: the first R+1 entries of the three indptrs, rows 0..R-1 of token_indices and
request r's own slice of kv_indices.
"""

from __future__ import annotations

from diffcheck.impls import Implementation
from diffcheck.paths import PathSpec, Scalar, Tensor


def _reference(t, k, fill, scalars, out_size):
    from diffcheck.refimpl.decode import decode_reference

    expected, mask = decode_reference(
        t["qo_indptr"], t["kv_indptr"], t["page_kv_indptr"], t["kv_indices"],
        t["token_indices"], scalars["block_size"], k, fill=fill, num_out=out_size)
    return {"out": (expected, mask)}


def _violations(t, k, scalars):
    from diffcheck.refimpl.decode import decode_violations

    return decode_violations(t, k)


def _counts(t):
    return t["kv_indptr"].numel() - 1, t["page_kv_indptr"].numel() - 1


def _regions(t, k):
    page = t["page_kv_indptr"].cpu().long()
    return page[:-1], page[1:]


def _suites():
    from diffcheck.fixtures.decode import SUITES
    from diffcheck.fixtures.derived import derived_suites

    return {**SUITES, **derived_suites("decode")}


def _bench_case(high, rows, k, q, shuffled):
    from diffcheck.fixtures.decode import decode_batch
    from diffcheck.fixtures.layouts import Layout, spread_contexts

    build = decode_batch(spread_contexts(high, rows), shuffled=shuffled)
    return Layout(f"bench-decode-{high}", f"bench up to {high}", k, build).case(
        "decode", "bench", 0, 0)


def _gathered(case):
    from diffcheck.fixtures.layouts import gathered_from_slices

    t = case.kernel_inputs()
    rows = t["kv_indptr"].numel() - 1
    return "kv_indices", gathered_from_slices(t["kv_indptr"], list(range(rows)),
                                              t["token_indices"], t["page_kv_indptr"], case.k)


def _rows_seen(t, k, scalars):
    import numpy as np

    from diffcheck.domain import rows_from_slices

    requests = np.arange(max(t["kv_indptr"].size - 1, 0))
    return rows_from_slices(t["kv_indptr"], t["page_kv_indptr"], t["token_indices"], requests,
                            k)


def _generators():
    from diffcheck.fixtures.decode import (
        SPOILERS,
        STALE_STEPS,
        generated_layout,
        generated_scenario,
    )
    from diffcheck.fixtures.generated import Generators

    return Generators(generated_layout, spoilers=tuple(SPOILERS), scenario=generated_scenario,
                      stale_steps=STALE_STEPS, pooled=True, spare_rows=True)


PATH = PathSpec(
    name="decode",
    summary="decode convert: one query token per request, top-k positions to KV slots",
    tensors=(
        Tensor("qo_indptr", role="indptr", doc="int32 [R+1]: cu_seqlens_q (r in decode)"),
        Tensor("kv_indptr", role="indptr", offsets=True,
               doc="int32 [R+1]: request r's slice of kv_indices"),
        Tensor("page_kv_indptr", role="indptr", fresh=True,
               doc="int32 [R+1]: request r's output region"),
        Tensor("kv_indices", role="slots", doc="int32 [N]: physical KV slots"),
        Tensor("token_indices", ndim=2, role="positions",
               doc="int32 [T, K] (strided): request-local positions, -1 unused"),
    ),
    scalars=(Scalar("block_size", ("BLOCK_SIZE",), 1, choices=(1,),
                    doc="KV page size; the decode contract has 1"),),
    reference=_reference,
    violations=_violations,
    counts=_counts,
    regions=_regions,
    row_label="request",
    suites=_suites,
    bench_case=_bench_case,
    gathered=_gathered,
    generators=_generators,
    rows_seen=_rows_seen,
    rank=1,
    implementations=(
        Implementation("decode:guarded", "diffcheck.kernels.decode:decode_guarded", True,
                       "bounds every load and store; walks qo_indptr's rows, clamped to R"),
        Implementation("decode:pid", "diffcheck.kernels.decode:decode_pid", True,
                       "row from the program id; never reads qo_indptr"),
        Implementation("decode:unguarded", "diffcheck.kernels.decode:decode_unguarded", False,
                       "a fixture for the checker: the kernel that faulted under graph replay"),
        Implementation("decode:reference", "diffcheck.refimpl.decode:decode_reference_impl", True,
                       "the pure-torch reference run as an implementation"),
    ),
    doc=__doc__,
)
