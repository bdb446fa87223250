"""Every deliberately broken kernel is caught, with the right status and location."""

import inspect

import broken_kernels
import pytest
import torch
from conftest import make_impl, run_cases, suite_cases

from diffcheck.status import Status

#: broken kernel -> (status it must get, text its first finding must contain)
EXPECTED = {
    "decode_len_plus_one": (Status.STRAY_WRITE, "outside every region"),
    "decode_wrong_fill": (Status.MISMATCH, "expected 0, got -1"),
    "decode_skips_last_tile": (Status.MISMATCH, "column 128"),
    # out[-1] of the staged workspace, or out_ptr[-1] of its own allocation without out=
    "decode_writes_before_out": (Status.OOB_WRITE, "[-1] (4 bytes before its start)"),
    "decode_raises": (Status.ERROR, "ValueError: unsupported NUM_TOPK_TOKENS=256"),
    "decode_ignores_out": (Status.ERROR, "other than the out= workspace"),
    "mtp_token_as_request": (Status.MISMATCH, "Mismatched elements"),
    "decode_reads_next_row": (Status.OOB_READ, "token_indices[+1] (element 1 past its end)"),
    "decode_wild_index": (Status.OOB_READ, "a wild address; nearest tensor named"),
    "mtp_unbounded_request": (Status.OOB_READ, "kv_indptr[+1] (element 1 past its end)"),
    "decode_faults_on_k512": (Status.OOB_READ, "a wild address; nearest tensor named"),
    "decode_runaway": (Status.TIMEOUT, "ran past the 1 s time limit"),
    "mtp_counts_tokens_from_indptr": (Status.OOB_READ, "token_to_seq_idxs[+1] (element 1 past "
                                      "its end)"),
}
#: run options of kernels that need other than the defaults (every case would time out; the
#: bug shows only on malformed metadata)
RUN_WITH = {"decode_runaway": {"timeout": 1.0, "cases": 1},
            "mtp_counts_tokens_from_indptr": {"suites": ("stale",),
                                              "case": "stale/mtp-stale-seq-short"}}


def worst_row(rows):
    return max(rows, key=lambda r: Status(r.status).severity)


@pytest.mark.parametrize("name, expected", EXPECTED.items())
def test_broken_kernel_gets_its_status(name, expected):
    status, text = expected
    path = name.split("_")[0]
    impl = make_impl(f"{path}:{name}", f"broken_kernels:{name}")
    options = dict(RUN_WITH.get(name, {}))
    # with out= given, elements a kernel leaves unwritten hold diffcheck's poison (below for
    # an output the kernel allocates itself)
    suites = options.pop("suites", ("smoke", "edge"))
    only = options.pop("case", None)
    cases = [c for c in suite_cases(path, *suites) if not c.without_out
             and only in (None, c.case_id)]
    rows = run_cases(impl, cases[: options.pop("cases", None)], **options)
    row = worst_row(rows)
    assert row.status == status.value, (row.case_id, row.error, row.detail)
    assert text in row.detail, row.detail


@pytest.mark.parametrize("name", ["decode_skips_last_tile", "mtp_token_as_request"])
def test_unwritten_elements_of_a_returned_output_are_no_read(name):
    """A kernel called without out= returns its own allocation: elements it never writes hold
    whatever the allocator handed back, often an earlier red zone full of tags. That is an
    output wrong (or varying) where it was never written, never an out-of-bounds read."""
    path = name.split("_")[0]
    impl = make_impl(f"{path}:{name}", f"broken_kernels:{name}")
    cases = [c for c in suite_cases(path, "smoke") if c.without_out]
    assert cases
    for _ in range(3):  # the allocator's leftovers differ from run to run
        for row in run_cases(impl, cases):
            assert row.status in ("mismatch", "nondeterministic"), row.detail
            assert "redzone-tag" not in row.detail, row.detail


def test_every_broken_kernel_is_asserted_on():
    public = {n for n, f in vars(broken_kernels).items()
              if inspect.isfunction(f) and f.__module__ == broken_kernels.__name__
              and not n.startswith("_")}
    assert public == set(EXPECTED)


def test_wrong_fill_passes_when_the_contract_fill_is_its_own():
    impl = make_impl("decode:wrong-fill", "broken_kernels:decode_wrong_fill")
    rows = run_cases(impl, suite_cases("decode", "edge", fill=-1))
    assert {r.status for r in rows} == {"pass"}


def test_outside_implementation_is_judged_against_the_run_fill():
    # A callable that cannot take fill= writes the ATOM fill (0); a vLLM-contract run wants -1.
    impl = make_impl("decode:no-fill-kw", "diffcheck.refimpl.decode:decode_reference_impl",
                     accepts_fill=False)
    cases = [c for c in suite_cases("decode", "edge", fill=-1)
             if "odd" in c.name and "duplicates" not in c.name]
    assert {r.status for r in run_cases(impl, cases)} == {"mismatch"}


def test_a_call_without_out_gets_poisoned_int32_allocations():
    """Whatever the allocator held before (here a freed block of tag-like values), an int32
    tensor the kernel allocates during a call without out= starts as POISON; other dtypes and
    allocations outside the call are left alone."""
    from diffcheck.buffers import POISON
    from diffcheck.calls import PoisonedAllocations

    for _ in range(20):
        del_me = torch.full((1317,), 1 << 30, dtype=torch.int32)
        del del_me
        with PoisonedAllocations():
            ints = torch.empty(1317, dtype=torch.int32)
            like = torch.empty_like(ints)
            new = ints.new_empty((3, 7))
            floats = torch.zeros(4, dtype=torch.float32)
        assert bool((ints == POISON).all()) and bool((like == POISON).all())
        assert bool((new == POISON).all()) and bool((floats == 0).all())
