"""The stale suite: malformed metadata from serving. Safe kernels stay inside their buffers."""

import pytest
from conftest import run_cases, suite_cases

from diffcheck.impls import find
from diffcheck.status import Status

#: statuses a safe kernel may get on a malformed case: tolerant, or wrong but in bounds
SAFE_ON_STALE = {Status.PASS.value, Status.STALE_SENSITIVE.value}


def rows_by_name(impl_name, path):
    rows = run_cases(find(impl_name), suite_cases(path, "stale"))
    return {r.case_id.split("/")[1]: r for r in rows}


def test_every_stale_case_is_malformed_with_a_well_formed_intended_batch():
    for path in ("decode", "mtp"):
        cases = suite_cases(path, "stale")
        assert len(cases) >= 6
        for case in cases:
            assert not case.well_formed
            assert any(case.inputs[n].shape != case.intended[n].shape
                       or not case.inputs[n].equal(case.intended[n]) for n in case.inputs)


@pytest.mark.parametrize("impl_name, path", [
    ("decode:guarded", "decode"), ("decode:pid", "decode"), ("decode:reference", "decode"),
    ("mtp:guarded", "mtp"), ("mtp:reference", "mtp"),
])
def test_safe_kernels_never_leave_their_buffers_on_stale_metadata(impl_name, path):
    rows = rows_by_name(impl_name, path)
    bad = {name: (r.status, r.detail) for name, r in rows.items() if r.status not in SAFE_ON_STALE}
    assert not bad
    assert sum(r.status == "stale_sensitive" for r in rows.values()) >= 4


def test_stale_prefill_qo_indptr_is_harmless_to_the_pid_kernel_only():
    assert rows_by_name("decode:pid", "decode")["decode-stale-qo-prefill"].status == "pass"
    guarded = rows_by_name("decode:guarded", "decode")["decode-stale-qo-prefill"]
    assert guarded.status == "stale_sensitive"
    assert "request 0" in guarded.first_mismatch


def test_unguarded_decode_reads_before_kv_indices_on_unwritten_rows():
    rows = rows_by_name("decode:unguarded", "decode")
    unwritten = rows["decode-stale-rows-unwritten"]
    assert unwritten.status == "oob_read"
    assert unwritten.first_oob_read.startswith("kv_indices[-1] (4 bytes before its start)")
    for name in ("decode-stale-qo-prefill", "decode-stale-row-skew"):
        assert rows[name].first_oob_read.startswith("token_indices[+1]"), rows[name].detail


def test_unguarded_mtp_reads_past_kv_indptr_with_request_ids_past_r():
    rows = rows_by_name("mtp:unguarded", "mtp")
    assert {r.status for r in rows.values()} == {"oob_read"}
    assert rows["mtp-stale-seq-short"].first_oob_read.startswith("token_to_seq_idxs[+1]")


BIG, SMALL = 2**31 - 1, -(2**31)


def hostile_case(path):
    """Metadata no engine writes but a corrupted buffer can hold: negative and extreme
    indptr entries, unknown request ids. Judged against the reference on the same inputs,
    whose bounds are the contract's ("inside kv_indices, inside out")."""
    import torch

    from diffcheck.case import Case

    k = 64
    g = torch.Generator().manual_seed(5)
    kv_indices = torch.arange(1, 31, dtype=torch.int32)
    # slices: starting before kv_indices, running past it, inverted, wrapping int32, ending
    # before kv_indices starts
    kv_indptr = torch.tensor([-5, 10, BIG, SMALL, 20, -3, -8], dtype=torch.int32)
    # regions: wholly before out (its end below its clipped start), starting before out, past
    # the workspace, wrapping int32
    regions = torch.tensor([-6, -2, 40, 80, BIG - 10, 200, 260], dtype=torch.int32)
    positions = torch.randint(-2, 40, (6, k), generator=g, dtype=torch.int32)
    positions[1, 0] = positions[3, 0] = BIG  # the slice that wraps: kv_start + p lands at -1
    if path == "decode":
        inputs = {"qo_indptr": torch.arange(7, dtype=torch.int32), "kv_indptr": kv_indptr,
                  "page_kv_indptr": regions, "kv_indices": kv_indices,
                  "token_indices": positions}
    else:
        inputs = {"sparse_kv_indptr": regions,
                  "token_to_seq_idxs": torch.tensor([0, 3, -1, 7, 5, 4], dtype=torch.int32),
                  "topk_indices": positions, "kv_indices": kv_indices, "kv_indptr": kv_indptr}
    return Case(path, f"{path}-hostile", k, -1, 0, "hostile metadata", inputs)


@pytest.mark.parametrize("impl_name", ["decode:guarded", "decode:pid", "mtp:guarded"])
def test_safe_kernels_bound_hostile_metadata_exactly_like_the_contract(impl_name):
    # Negative slice starts must not read before kv_indices, negative region starts must not
    # write before out, and int32 extremes must not wrap into range.
    path = impl_name.partition(":")[0]
    (row,) = run_cases(find(impl_name), [hostile_case(path)])
    assert row.status == Status.PASS.value, row.detail
    assert row.elements_checked > 0
