"""The shipped kernels against the reference, through the eager runner."""

import pytest
from conftest import run_cases, suite_cases

from diffcheck.impls import BUILTIN

SAFE = [impl for impl in BUILTIN.values() if impl.safe]
#: edge cases whose regions hold -1 or out-of-range positions
INVALID_POSITIONS = ("minus-one", "at-ctx", "negative", "beyond", "mixed-strided")


@pytest.mark.parametrize("fill", [0, -1])
@pytest.mark.parametrize("impl", SAFE, ids=lambda i: i.name)
def test_safe_kernels_pass_smoke_and_edge(impl, fill):
    rows = run_cases(impl, suite_cases(impl.path, "smoke", "edge", fill=fill))
    assert rows
    failures = [(r.case_id, r.status, r.detail) for r in rows if r.status != "pass"]
    assert not failures
    assert all(r.elements_checked > 0 for r in rows if "ctx-0" not in r.case_id)


@pytest.mark.parametrize("path", ["decode", "mtp"])
def test_unguarded_mismatches_exactly_on_invalid_positions(path):
    rows = run_cases(BUILTIN[f"{path}:unguarded"], suite_cases(path, "smoke", "edge"))
    for row in rows:
        invalid = any(f"odd-{kind}" in row.case_id for kind in INVALID_POSITIONS)
        assert row.status == ("mismatch" if invalid else "pass"), (row.case_id, row.detail)
    assert sum(r.status == "mismatch" for r in rows) >= 4


def test_unguarded_reads_before_kv_indices_for_request_zero():
    case = next(c for c in suite_cases("decode", "edge") if c.name == "decode-odd-minus-one")
    (row,) = run_cases(BUILTIN["decode:unguarded"], [case])
    # p = -1 at request 0, column 0 with kv_start == 0: the value came from kv_indices[-1],
    # which lies in the margin diffcheck stages around every buffer.
    assert row.first_mismatch == "request 0, column 0"
    assert row.first_actual == 0x5EADBEEF


def test_decode_kernels_need_block_size_one():
    from kernels.decode import decode_guarded

    case = suite_cases("decode", "smoke")[0]
    with pytest.raises(ValueError, match="BLOCK_SIZE=1"):
        decode_guarded(*case.kernel_inputs().values(), BLOCK_SIZE=16, NUM_TOPK_TOKENS=case.k)
