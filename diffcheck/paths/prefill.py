"""prefill: ATOM's DSA prefill convert
(``triton_convert_req_index_to_global_index_dsa_prefill``).

Call: ``(dsa_qo_indptr, dsa_kv_indptr, token_to_seq_idxs, topk_indices, block_table,
cu_seqlens_q, PAGE_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=1024, out=None) -> out``

- T query tokens; token t belongs to request r = token_to_seq_idxs[t]. ``cu_seqlens_q`` [R+1]:
  request r's tokens (in prefill its queries are its keys) are the batch-flat range
  ``[cu_seqlens_q[r], cu_seqlens_q[r+1])``, of length len_r.
- ``topk_indices`` [T, K]: batch-flat key indices, or -1 (possibly a strided view).
- ``block_table`` [R, B] (possibly a strided view): physical page of request r's page b.
  P = PAGE_SIZE (1, 16, 64 in engines).
- ``dsa_kv_indptr`` [T+1]: token t's region in ``out``; token t at position q of its request
  sees keys 0..q, so L_t = min(q + 1, K).
- ``dsa_qo_indptr`` [T+1] is part of the call; the result does not depend on it.

Result, for j < L_t, with i = topk_indices[t, j] and s = i - cu_seqlens_q[r]:
``out[dsa_kv_indptr[t] + j] = block_table[r, s // P] * P + s % P`` if i >= 0,
0 <= s < len_r, s // P < B and that block id >= 0; else FILL (0 by default, ATOM's newer
kernels; older ones wrote -1: pass --invalid-fill -1).

Tokens past cu_seqlens_q's last entry are a graph's padding: they own no region. A token
whose request id is negative or past the batch owns nothing: its region is all FILL.

Allowed reads: T+1 entries of the indptrs, T of token_to_seq_idxs, rows 0..T-1 of
topk_indices, R+1 entries of cu_seqlens_q and request r's own row of block_table.
"""

from __future__ import annotations

from diffcheck.domain import page_classifier, page_partitions
from diffcheck.impls import Implementation
from diffcheck.paths import PathSpec, Scalar, Tensor


def _reference(t, k, fill, scalars, out_size):
    from diffcheck.refimpl.prefill import prefill_reference

    expected, mask = prefill_reference(
        t["dsa_qo_indptr"], t["dsa_kv_indptr"], t["token_to_seq_idxs"], t["topk_indices"],
        t["block_table"], t["cu_seqlens_q"], scalars["page_size"], k, fill=fill,
        num_out=out_size)
    return {"out": (expected, mask)}


def _violations(t, k, scalars):
    from diffcheck.refimpl.prefill import prefill_violations

    return prefill_violations(t, k, scalars["page_size"])


def _counts(t):
    return t["cu_seqlens_q"].numel() - 1, t["dsa_kv_indptr"].numel() - 1


def _regions(t, k):
    kv = t["dsa_kv_indptr"].cpu().long()
    return kv[:-1], kv[1:]


def _suites():
    from diffcheck.fixtures.derived import derived_suites
    from diffcheck.fixtures.prefill import SUITES

    return {**SUITES, **derived_suites("prefill")}


def _bench_case(high, rows, k, q, shuffled):
    from diffcheck.fixtures.layouts import Layout
    from diffcheck.fixtures.prefill import prefill_batch

    per_request = max(1, min(high, rows) // 8)
    lengths = [per_request] * max(1, rows // per_request)
    return Layout(f"bench-prefill-{high}", f"bench, requests of {per_request}", k,
                  prefill_batch(lengths, 64, shuffled=shuffled),
                  scalars={"page_size": 64}).case("prefill", "bench", 0, 0)


def _rows_seen(t, k, scalars):
    import numpy as np

    from diffcheck.domain import RowsSeen, pages_used

    cu = t["cu_seqlens_q"].astype(np.int64)
    table = t["block_table"]
    tokens = min(t["dsa_kv_indptr"].size - 1, t["topk_indices"].shape[0],
                 t["token_to_seq_idxs"].size)
    requests = min(cu.size - 1, table.shape[0])
    req = t["token_to_seq_idxs"][:tokens].astype(np.int64)
    known = (req >= 0) & (req < requests)
    r = np.clip(req, 0, max(requests - 1, 0))
    start = np.where(known, cu[r], 0) if cu.size > 1 else np.zeros(tokens, dtype=np.int64)
    ctx = np.where(known, cu[r + 1] - start, -1) if cu.size > 1 else np.full(tokens, -1)
    raw = t["topk_indices"][:tokens, :k].astype(np.int64)
    local = np.where(raw >= 0, raw - start[:, None], raw)
    bounds = t["dsa_kv_indptr"].astype(np.int64)
    lengths = np.clip(bounds[1 : tokens + 1] - bounds[:tokens], 0, k)
    return RowsSeen(local, lengths, ctx, foreign=(raw >= 0) & (local < 0),
                    used=pages_used(cu[1:] - cu[:-1], scalars["page_size"], table.shape),
                    # a token q of a request sees q + 1 keys: its boundaries are K's too
                    requests=np.concatenate([(cu[1:] - cu[:-1])[:requests],
                                             np.where(known, np.arange(tokens) - start + 1,
                                                      -1)]),
                    owner=np.where(known, r, -1))


def _generators():
    from diffcheck.domain import TABLE_ODDITIES
    from diffcheck.fixtures.generated import Generators
    from diffcheck.fixtures.layouts import WIDE_ODDITIES
    from diffcheck.fixtures.prefill import ODD, SPOILERS, generated_layout

    return Generators(generated_layout, oddities=(*ODD, *WIDE_ODDITIES), table=TABLE_ODDITIES,
                      spoilers=tuple(SPOILERS),
                      scalars={"page_size": (16, 1, 64)}, longest=300, requests=4)


PATH = PathSpec(
    name="prefill",
    summary="ATOM DSA prefill convert: batch-flat top-k keys to KV slots through a block table",
    tensors=(
        Tensor("dsa_qo_indptr", role="indptr", doc="int32 [T+1]: one query row per token "
               "(not read for the result)"),
        Tensor("dsa_kv_indptr", role="indptr", fresh=True,
               doc="int32 [T+1]: token t's output region"),
        Tensor("token_to_seq_idxs", role="ids", doc="int32 [T]: request of token t"),
        Tensor("topk_indices", ndim=2, role="positions",
               doc="int32 [T, K] (strided): batch-flat key indices, -1 unused"),
        Tensor("block_table", ndim=2, role="table",
               doc="int32 [R, B] (strided): physical block of request r's page b"),
        Tensor("cu_seqlens_q", role="indptr", doc="int32 [R+1]: request r's batch-flat range"),
    ),
    scalars=(Scalar("page_size", ("PAGE_SIZE", "page_size"), 1, minimum=1,
                    doc="tokens per KV page (1, 16, 64, 128; hybrid models' 528, 672)",
                    partitions=page_partitions(), classify=page_classifier("page_size")),),
    reference=_reference,
    violations=_violations,
    counts=_counts,
    regions=_regions,
    row_label="token",
    suites=_suites,
    bench_case=_bench_case,
    generators=_generators,
    rows_seen=_rows_seen,
    rank=3,
    implementations=(
        Implementation("prefill:guarded",
                       "diffcheck.kernels.prefill:prefill_guarded", True,
                       "bounds every request id, key, page, block id, row and store"),
        Implementation("prefill:unguarded",
                       "diffcheck.kernels.prefill:prefill_unguarded", False,
                       "a fixture for the checker: trusts request ids and keys"),
        Implementation("prefill:reference",
                       "diffcheck.refimpl.prefill:prefill_reference_impl", True,
                       "the pure-torch reference run as an implementation"),
    ),
    doc=__doc__,
)
