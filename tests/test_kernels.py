"""The shipped kernels against the reference, through the eager runner."""

import pytest
from conftest import make_impl, run_cases, slow_when, suite_cases

from diffcheck.impls import builtin

BUILTIN = {name: impl.described() for name, impl in builtin().items()}

SAFE = [impl for impl in BUILTIN.values() if impl.safe]


@pytest.mark.parametrize("fill", [0, -1])
@pytest.mark.parametrize("impl", SAFE, ids=lambda i: i.name)
def test_safe_kernels_pass_smoke_and_edge(impl, fill):
    rows = run_cases(impl, suite_cases(impl.path, "smoke", "edge", fill=fill))
    assert rows
    failures = [(r.case_id, r.status, r.detail) for r in rows if r.status != "pass"]
    assert not failures
    assert all(r.elements_checked > 0 for r in rows if "ctx-0" not in r.case_id)


def has_invalid_positions(case) -> bool:
    """Whether a region of the case holds a position the contract fills."""
    from diffcheck.paths import get_path

    spec = get_path(case.path)
    marker = -12345
    tensors = case.kernel_inputs()
    expected, mask = spec.expected(tensors, case.k, marker, case.scalars,
                                   spec.workspace_size(tensors, case.k))["out"]
    return bool(((expected == marker) & mask).any())


@pytest.mark.parametrize("path", ["decode", "mtp"])
def test_unguarded_fails_exactly_on_invalid_positions(path):
    cases = suite_cases(path, "smoke", "edge")
    rows = run_cases(BUILTIN[f"{path}:unguarded"], cases)
    for case, row in zip(cases, rows, strict=True):
        invalid = has_invalid_positions(case)
        # Every case with invalid positions puts one in request 0, column 0 (kv_start == 0),
        # so the gather leaves kv_indices: an out-of-bounds read, besides the wrong values.
        assert row.status == ("oob_read" if invalid else "pass"), (row.case_id, row.detail)
        assert (row.mismatches > 0) == invalid
    assert sum(r.status == "oob_read" for r in rows) >= 8


@pytest.mark.parametrize("check, found_by", [(True, "interpreter"), (False, "redzone-tag")])
def test_unguarded_reads_kv_indices_minus_one(check, found_by):
    case = next(c for c in suite_cases("decode", "edge") if c.name == "decode-odd-minus-one")
    (row,) = run_cases(BUILTIN["decode:unguarded"], [case], interpreter_check=check)
    # p = -1 at request 0, column 0 with kv_start == 0: the load of kv_indices[-1].
    assert row.status == "oob_read" and row.oob_read_found_by == found_by
    assert row.first_oob_read.startswith("kv_indices[-1] (4 bytes before its start)")
    assert row.first_mismatch == "request 0, column 0"
    if not check:  # the tag run's value reached the output at the same element
        assert "reached out at request 0, column 0" in row.first_oob_read


def test_one_filling_without_interpreter_check_misses_the_read():
    # The read's value is wrong but only a second filling shows it came from outside.
    case = next(c for c in suite_cases("decode", "edge") if c.name == "decode-odd-minus-one")
    (row,) = run_cases(BUILTIN["decode:unguarded"], [case], interpreter_check=False, fillings=1)
    assert row.status == "mismatch" and row.oob_reads == 0 and row.fillings == 1


def test_decode_kernels_need_block_size_one():
    from diffcheck.kernels.decode import decode_guarded

    case = suite_cases("decode", "smoke")[0]
    with pytest.raises(ValueError, match="BLOCK_SIZE=1"):
        decode_guarded(*case.kernel_inputs().values(), BLOCK_SIZE=16, NUM_TOPK_TOKENS=case.k)


@pytest.mark.parametrize("name", slow_when(
    [i.name for i in BUILTIN.values() if i.keywords and "column_programs" in i.keywords],
    {"prefill:guarded", "prefill:unguarded", "decode:pid", "decode:unguarded",
     "mtp:unguarded"}))
def test_split_launches_give_the_same_statuses(name):
    # Several column programs per row must change nothing: correct kernels still pass
    # everything, and the unguarded ones fail on exactly the same cases with the same status.
    path, _, variant = name.partition(":")
    split = make_impl(f"{path}:{variant}-split", f"split_launches:{path}_{variant}_split",
                      safe=BUILTIN[name].safe)
    cases = suite_cases(path, "smoke", "edge", "stale")
    plain = {r.case_id: r.status for r in run_cases(BUILTIN[name], cases)}
    rows = run_cases(split, cases)
    assert {r.case_id: r.status for r in rows} == plain
    if BUILTIN[name].safe:
        assert {r.status for r in rows} <= {"pass", "stale_sensitive"}
