"""mtp: the MTP gather (several query tokens per request; engines use it when
max_seqlen_q > 1).

Call: ``(sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices, kv_indptr,
NUM_TOPK_TOKENS=2048, BLOCK_N=1024, out=None) -> out``

- T query tokens; token t belongs to request r = token_to_seq_idxs[t].
- ``sparse_kv_indptr`` [T+1]: token t's region, of length L_t. With q tokens per request,
  token j of request r sees L_t = clamp(ctx_r - q + j + 1, 0, K) (causal within the draft).
- ``topk_indices`` [T, K]: request-local positions or -1 (possibly a strided view).
- ``kv_indices`` [N] and ``kv_indptr`` [R+1] as in decode.

Result, for j < L_t and p = topk_indices[t, j]:
``out[sparse_kv_indptr[t] + j] = kv_indices[kv_indptr[r] + p]`` if 0 <= p < ctx_r, else FILL
(0 by default). The decode kernel is not valid for this layout: with q > 1 a token row is not
the request row.

Allowed reads: the first T+1 entries of sparse_kv_indptr, T entries of token_to_seq_idxs,
rows 0..T-1 of topk_indices, R+1 entries of kv_indptr and request r's slice of kv_indices.
"""

from __future__ import annotations

from diffcheck.impls import Implementation
from diffcheck.paths import PathSpec, Tensor


def _reference(t, k, fill, scalars, out_size):
    from diffcheck.refimpl.mtp import mtp_reference

    expected, mask = mtp_reference(
        t["sparse_kv_indptr"], t["token_to_seq_idxs"], t["topk_indices"], t["kv_indices"],
        t["kv_indptr"], k, fill=fill, num_out=out_size)
    return {"out": (expected, mask)}


def _violations(t, k, scalars):
    from diffcheck.refimpl.mtp import mtp_violations

    return mtp_violations(t, k)


def _counts(t):
    return t["kv_indptr"].numel() - 1, t["sparse_kv_indptr"].numel() - 1


def _regions(t, k):
    sparse = t["sparse_kv_indptr"].cpu().long()
    return sparse[:-1], sparse[1:]


def _suites():
    from diffcheck.fixtures.derived import derived_suites
    from diffcheck.fixtures.mtp import SUITES

    return {**SUITES, **derived_suites("mtp")}


def _bench_case(high, rows, k, q, shuffled):
    from diffcheck.fixtures.layouts import Layout, spread_contexts
    from diffcheck.fixtures.mtp import mtp_batch

    build = mtp_batch(spread_contexts(high, max(1, rows // q)), q, shuffled=shuffled)
    return Layout(f"bench-mtp-{high}", f"bench up to {high}", k, build).case(
        "mtp", "bench", 0, 0)


def _gathered(case):
    from diffcheck.fixtures.layouts import gathered_from_slices

    t = case.kernel_inputs()
    rows = t["sparse_kv_indptr"].numel() - 1
    requests = t["token_to_seq_idxs"][:rows].tolist()
    return "kv_indices", gathered_from_slices(t["kv_indptr"], requests, t["topk_indices"],
                                              t["sparse_kv_indptr"], case.k)


def _rows_seen(t, k, scalars):
    from diffcheck.domain import rows_from_slices

    return rows_from_slices(t["kv_indptr"], t["sparse_kv_indptr"], t["topk_indices"],
                            t["token_to_seq_idxs"], k)


def _generators():
    from diffcheck.fixtures.generated import Generators
    from diffcheck.fixtures.mtp import (
        SPOILERS,
        STALE_STEPS,
        capacity,
        generated_layout,
        generated_scenario,
    )

    return Generators(generated_layout, spoilers=tuple(SPOILERS), drafts=4,
                      scenario=generated_scenario, capacity=capacity, smallest_graph=6,
                      stale_steps=STALE_STEPS, captures=("padded", "dummy", "zeros"),
                      pooled=True, spare_rows=True)


PATH = PathSpec(
    name="mtp",
    summary="MTP gather: several draft tokens per request, one top-k row per token",
    tensors=(
        Tensor("sparse_kv_indptr", role="indptr", fresh=True,
               doc="int32 [T+1]: token t's output region"),
        Tensor("token_to_seq_idxs", role="ids", doc="int32 [T]: request of token t"),
        Tensor("topk_indices", ndim=2, role="positions",
               doc="int32 [T, K] (strided): request-local positions, -1 unused"),
        Tensor("kv_indices", role="slots", doc="int32 [N]: physical KV slots"),
        Tensor("kv_indptr", role="indptr", offsets=True,
               doc="int32 [R+1]: request r's slice of kv_indices"),
    ),
    reference=_reference,
    violations=_violations,
    counts=_counts,
    regions=_regions,
    row_label="token",
    suites=_suites,
    bench_case=_bench_case,
    gathered=_gathered,
    generators=_generators,
    rows_seen=_rows_seen,
    rank=2,
    implementations=(
        Implementation("mtp:guarded", "diffcheck.kernels.mtp:mtp_guarded", True,
                       "bounds the request id, every position, gather and store"),
        Implementation("mtp:unguarded", "diffcheck.kernels.mtp:mtp_unguarded", False,
                       "a fixture for the checker: trusts token_to_seq_idxs and positions"),
        Implementation("mtp:reference", "diffcheck.refimpl.mtp:mtp_reference_impl", True,
                       "the pure-torch reference run as an implementation"),
    ),
    doc=__doc__,
)
