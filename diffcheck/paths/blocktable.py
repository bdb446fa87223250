"""blocktable: the vLLM family (vLLM's ``triton_convert_req_index_to_global_index``,
TensorRT-LLM's variant, ATOM's vLLM/SGLang plugins, LMDeploy-style kernels).

Call: ``(req_id, block_table, token_indices, BLOCK_SIZE=64, BLOCK_STRIDE_ROWS=None,
NUM_TOPK_TOKENS=2048, BLOCK_N=128, ..., return_valid_counts=False) -> out [T, K]``
(vLLM returns a new tensor; kernels that take ``out=`` write it; TensorRT-LLM names the stride
``stride_factor`` and adds ``layer_id``; the bounded variant takes ``seq_lens=``).

- ``req_id`` [T]: request of token t, or -1 for a padding token (an engine's padding id).
  ``block_table`` [R, B] (possibly strided): physical
  block ids of request r's pages. ``token_indices`` [T, K] (possibly strided):
  request-local positions, or -1. P = BLOCK_SIZE (page size); S = BLOCK_STRIDE_ROWS
  (physical rows per block when layers interleave; default P); L = layer_id (default 0).
- ``seq_lens`` [R]: request r's length, read by the bounded variant only.

Result, every element of the [T, K] output (no regions: column j in, column j out), with
p = token_indices[t, j]: ``block_table[req_id[t], p // P] * S + L * P + p % P`` if p >= 0 and
p // P < B (the bounded variant: and p < seq_lens[r]), else FILL (-1 by default). A token
whose request id is negative or past the table's rows is all FILL. The optional second
output (``return_valid_counts``) counts each row's valid entries and is compared exactly.

Allowed reads: T entries of req_id, rows 0..T-1 of token_indices, request r's row of the
block table, R entries of seq_lens. A returned output cannot be checked for writes past its
end on a GPU (it is the kernel's own allocation); its reads, shape, dtype and values are.
"""

from __future__ import annotations

from diffcheck.domain import Partition, page_classifier, page_partitions
from diffcheck.impls import Implementation
from diffcheck.paths import Extra, PathSpec, Scalar, Tensor


def _reference(t, k, fill, scalars, out_size):
    from diffcheck.refimpl.blocktable import blocktable_reference

    values, counts = blocktable_reference(
        t["req_id"], t["block_table"], t["token_indices"], scalars["page_size"],
        scalars["stride_rows"] or None, k,
        seq_lens=t["seq_lens"] if scalars["bounded"] else None, layer_id=scalars["layer_id"],
        fill=fill)
    flat = values.reshape(-1)
    mask = flat.new_ones(flat.shape, dtype=bool)
    expected = {"out": (flat, mask)}
    if scalars["valid_counts"]:
        expected["valid_counts"] = (counts, counts.new_ones(counts.shape, dtype=bool))
    return expected


def _violations(t, k, scalars):
    from diffcheck.refimpl.blocktable import blocktable_violations

    return blocktable_violations(t, k, scalars["page_size"])


def _counts(t):
    table, rows = t["block_table"], t["token_indices"]
    return (table.shape[0] if table.dim() == 2 else 0), (rows.shape[0] if rows.dim() == 2
                                                           else 0)


def _suites():
    from diffcheck.fixtures.blocktable import SUITES
    from diffcheck.fixtures.derived import derived_suites

    return {**SUITES, **derived_suites("blocktable")}


def _bench_case(high, rows, k, q, shuffled):
    from diffcheck.fixtures.blocktable import blocktable_batch
    from diffcheck.fixtures.layouts import Layout, spread_contexts

    build = blocktable_batch(spread_contexts(high, max(1, rows // q)), q, 64,
                             shuffled=shuffled)
    return Layout(f"bench-blocktable-{high}", f"bench up to {high}", k, build,
                  scalars={"page_size": 64}).case("blocktable", "bench", 0, -1)


def _gathered(case):
    from diffcheck.fixtures.layouts import gathered_pages

    return "block_table", gathered_pages(case)


def _rows_seen(t, k, scalars):
    import numpy as np

    from diffcheck.domain import RowsSeen, pages_used

    table, lengths = t["block_table"], t["seq_lens"].astype(np.int64)
    tokens = min(t["token_indices"].shape[0], t["req_id"].size)
    requests = min(table.shape[0], lengths.size) if table.ndim == 2 else 0
    req = t["req_id"][:tokens].astype(np.int64)
    known = (req >= 0) & (req < requests)
    r = np.clip(req, 0, max(requests - 1, 0))
    ctx = np.where(known, lengths[r], -1) if requests else np.full(tokens, -1)
    page = scalars["page_size"]
    width = table.shape[1] if table.ndim == 2 else 0
    return RowsSeen(t["token_indices"][:tokens, :k].astype(np.int64),
                    np.where(known, k, 0), ctx, span=np.full(tokens, width * page),
                    used=pages_used(lengths, page, table.shape), requests=lengths[:requests],
                    owner=np.where(known, r, -1))


def _generators():
    from diffcheck.fixtures.blocktable import (
        GENERATED_SCALARS,
        ODD,
        SPOILERS,
        STALE_STEPS,
        generated_layout,
        generated_scenario,
        scenario_capacity,
    )
    from diffcheck.fixtures.generated import Generators
    from diffcheck.fixtures.layouts import WIDE_ODDITIES

    # the family's contract says nothing of a negative block id: -1 only as stale metadata
    return Generators(generated_layout, oddities=(*ODD, *WIDE_ODDITIES),
                      table=("null", "pad-zero"),
                      spoilers=tuple(SPOILERS),
                      scalars=GENERATED_SCALARS, drafts=4, scenario=generated_scenario,
                      capacity=scenario_capacity, stale_steps=STALE_STEPS)


PATH = PathSpec(
    name="blocktable",
    summary="the vLLM family: request-local top-k positions to KV rows through a block table",
    tensors=(
        Tensor("req_id", role="ids", doc="int32 [T]: request of token t", padding=True),
        Tensor("block_table", ndim=2, role="table",
               doc="int32 [R, B] (strided): physical block of request r's page b"),
        Tensor("token_indices", ndim=2, role="positions",
               doc="int32 [T, K] (strided): request-local positions, -1 unused"),
        Tensor("seq_lens", role="lengths", keyword=True, when="bounded",
               doc="int32 [R]: request r's length (seq_lens=, the bounded variant only)"),
    ),
    scalars=(
        Scalar("page_size", ("BLOCK_SIZE", "block_size", "page_size"), 64, minimum=1,
               doc="tokens per KV page (BLOCK_SIZE)", partitions=page_partitions(),
               classify=page_classifier("page_size")),
        Scalar("stride_rows", ("BLOCK_STRIDE_ROWS", "stride_factor"), 0, minimum=0,
               omit_default=True, doc="physical rows per block (0: the page size)",
               partitions=(Partition("page", "0 or the page size: one page of rows per block",
                                     {"stride_rows": 0}),
                           Partition("interleaved", "more rows per block than the page (layers "
                                     "interleave)", {"stride_rows": 2048})),
               # a stride below the page (blocks overlapping) is in neither partition
               classify=lambda probe: {"page"} if probe.scalars["stride_rows"] in
               (0, probe.scalars["page_size"]) else {"interleaved"}
               if probe.scalars["stride_rows"] > probe.scalars["page_size"] else set()),
        Scalar("layer_id", ("layer_id",), 0, minimum=0,
               doc="TensorRT-LLM's layer interleaving: adds layer_id * page size",
               partitions=(Partition("0", "the first layer", {"layer_id": 0}),
                           Partition("positive", "a later layer", {"layer_id": 2})),
               classify=lambda probe: {"0" if probe.scalars["layer_id"] == 0 else "positive"}),
        Scalar("bounded", (), 0, choices=(0, 1), requires="seq_lens",
               doc="1: positions at or past seq_lens[r] are invalid too (seq_lens=)"),
        Scalar("valid_counts", ("return_valid_counts",), 0, choices=(0, 1),
               doc="1: the kernel also returns the valid entries per row"),
    ),
    fill=-1,
    out_layout="rows",
    reference=_reference,
    violations=_violations,
    counts=_counts,
    row_label="token",
    extras=(Extra("valid_counts", "valid_counts", lambda t: t["token_indices"].shape[0]),),
    suites=_suites,
    bench_case=_bench_case,
    gathered=_gathered,
    generators=_generators,
    rows_seen=_rows_seen,
    rank=4,
    implementations=(
        Implementation("blocktable:guarded",
                       "diffcheck.kernels.blocktable:blocktable_guarded", True,
                       "bounds request ids, pages, rows and stores; out=, counts, bounded"),
        Implementation("blocktable:unguarded", "diffcheck.kernels.blocktable:blocktable_unguarded",
                       False, "a fixture for the checker: vLLM's converter before its fixes"),
        Implementation("blocktable:reference",
                       "diffcheck.refimpl.blocktable:blocktable_reference_impl", True,
                       "the pure-torch reference run as an implementation"),
    ),
    doc=__doc__,
)
