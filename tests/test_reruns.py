"""Red-zone reruns: an output that changes between runs is nondeterministic, not a read, and a
device fault during a rerun ends the row as `fault` instead of stopping diffcheck."""

import flaky_wrappers
from conftest import make_impl, run_cases, suite_cases


def minus_one_case():
    return next(c for c in suite_cases("decode", "edge") if c.name == "decode-odd-minus-one")


def test_an_output_that_changes_between_runs_is_not_called_a_read():
    flaky_wrappers.reset()
    impl = make_impl("decode:cycles", "flaky_wrappers:decode_fill_cycles_by_three")
    # Without the interpreter's checks only the fillings can tell a read: they disagree, no
    # tag explains it, and the reruns show the output is not deterministic.
    (row,) = run_cases(impl, [minus_one_case()], interpreter_check=False)
    assert row.status == "nondeterministic" and row.oob_reads == 0
    assert row.nondeterministic > 0 and row.mismatches > 0
    assert "differ between runs on identical inputs" in row.detail


def test_a_fault_during_a_rerun_is_a_fault_row():
    flaky_wrappers.reset()
    impl = make_impl("decode:faults-late", "flaky_wrappers:decode_faults_on_the_third_call")
    (row,) = run_cases(impl, [minus_one_case()], interpreter_check=False)
    assert row.status == "fault"
    assert "rerun of a filling" in row.error and "illegal memory access" in row.error

