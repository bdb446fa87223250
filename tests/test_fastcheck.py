"""The captured check (diffcheck.fastcheck): its counters are zero exactly when a case passes
what one call per filling shows. Run here on the graph emulator with the sandbox off (the GPU's
view), on kernels whose bugs stay inside the staged allocation; test_gpu.py times it."""

import pytest
from conftest import CPU, make_impl, suite_cases

from diffcheck.fastcheck import COUNTERS, CapturedCheck, CapturedChecks, shape_key
from diffcheck.impls import builtin
from diffcheck.settings import RunSettings


def settings(fillings: int = 2) -> RunSettings:
    return RunSettings(CPU, "test", 0, None, False, fillings, 60.0, "none")


def decode_cases(*names):
    return [c for c in suite_cases("decode", "smoke", "edge") if c.name in names]


def test_a_correct_kernel_counts_nothing_and_a_shape_is_captured_once():
    impl = builtin()["decode:guarded"].described()
    cases = decode_cases("decode-odd-minus-one", "decode-odd-beyond", "decode-odd-at-ctx")
    assert len({shape_key(c) for c in cases}) == 1  # same shapes, other data
    checks = CapturedChecks(impl, settings())
    for case in cases:
        assert checks.run(case) == dict.fromkeys(COUNTERS, 0)
    assert len(checks.checks) == 1 and not checks.refused


@pytest.mark.parametrize("path,impl", [("blocktable", "blocktable:guarded"),
                                       ("mtp", "mtp:guarded"), ("prefill", "prefill:guarded")])
def test_correct_kernels_of_every_path_count_nothing(path, impl):
    """Second outputs (valid counts), calls without out= and strided views included."""
    chosen = builtin()[impl].described()
    for case in suite_cases(path, "smoke"):
        if case.well_formed and not case.fill_swapped:
            assert not any(CapturedCheck(case, chosen, settings()).run(case).values()), \
                case.name


@pytest.mark.parametrize("kernel,counter", [
    ("broken_kernels:decode_wrong_fill", "mismatches"),
    ("broken_kernels:decode_writes_before_out", "margin_writes"),
    ("broken_kernels:decode_skips_last_tile", "mismatches"),
    ("misbehaving_kernels:decode_zeroes_kv_indices", "input_writes"),
    ("misbehaving_kernels:decode_no_ctx_mask", "mismatches"),
    ("broken_kernels:decode_reads_next_row", "mismatches"),
])
def test_each_class_the_full_check_sees_in_one_call_raises_its_counter(kernel, counter):
    impl = make_impl(f"decode:{kernel.split(':')[1]}", kernel)
    case = next(c for c in suite_cases("decode", "smoke") if c.name == "decode-shuffled")
    counts = CapturedCheck(case, impl, settings()).run(case)
    assert counts[counter] > 0, counts


def test_a_read_past_the_end_differs_between_plausible_fillings():
    """The last request reads a top-k row past the tensor: constant and tag margins are both
    invalid positions (fill either way); the plausible ones are not."""
    impl = make_impl("decode:decode_reads_next_row", "broken_kernels:decode_reads_next_row")
    case = next(c for c in suite_cases("decode", "smoke") if c.name == "decode-shuffled")
    assert CapturedCheck(case, impl, settings(4)).run(case)["differ_between_fillings"] > 0


def test_new_data_replays_through_the_captured_graph():
    """The second case of a shape is judged on its own data, not the first case's: a kernel
    without the context mask passes positions inside every context and fails beyond them."""
    from diffcheck.fixtures.decode import decode_batch
    from diffcheck.fixtures.layouts import Layout

    impl = make_impl("decode:decode_no_ctx_mask", "misbehaving_kernels:decode_no_ctx_mask")
    clean, odd = (Layout(name, "", 256, decode_batch([300, 90, 300], oddities=how))
                  .case("decode", "t", 0, 0) for name, how in (("a", ()), ("b", ("beyond",))))
    assert shape_key(clean) == shape_key(odd)
    check = CapturedCheck(clean, impl, settings())
    assert check.run(clean)["mismatches"] == 0
    assert check.run(odd)["mismatches"] > 0
    assert check.run(clean)["mismatches"] == 0


def test_a_wrapper_that_reads_data_on_the_host_at_capture_is_refused():
    impl = make_impl("decode:decode_grid_from_tolist", "graph_wrappers:decode_grid_from_tolist")
    checks = CapturedChecks(impl, settings())
    case = decode_cases("decode-odd-minus-one")[0]
    assert checks.run(case) is None
    assert "HostReadDuringCapture" in next(iter(checks.refused.values()))
    assert checks.run(case) is None and not checks.checks  # not tried again
