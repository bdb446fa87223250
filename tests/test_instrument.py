"""Bounds-checked compilation (diffcheck.instrument), run here through the interpreter: each
kind of access is checked, what is out of bounds is named like the sandbox names it and
neutralised, what cannot be instrumented says so and runs as written, and whole runs with
instrumented kernels agree with the sandbox."""

import instrumented_kernels as ik
import pytest
import torch
from conftest import CPU, make_impl, suite_cases

from diffcheck.errors import UsageError
from diffcheck.executors import run_all
from diffcheck.instrument import Instrumented
from diffcheck.job import Job
from diffcheck.modes import Eager
from diffcheck.sandbox import Extent
from diffcheck.settings import RunSettings

MARGIN = 64


def _triton_at_least(major: int, minor: int) -> bool:
    from diffcheck.backend import version

    return version(__import__("triton").__version__) >= (major, minor)


def buffers(n: int = 8):
    """src (an input, 0..n-1) and dst (the output, zeros), each inside margins of 7s, and
    their extents as the runner gives them."""
    src_alloc = torch.full((n + 2 * MARGIN,), 7, dtype=torch.int32)
    dst_alloc = torch.full((n + 2 * MARGIN,), 7, dtype=torch.int32)
    src, dst = src_alloc[MARGIN:MARGIN + n], dst_alloc[MARGIN:MARGIN + n]
    src.copy_(torch.arange(n, dtype=torch.int32))
    dst.zero_()
    found = [Extent("src", src.data_ptr(), 4 * n, 4, read_only=True),
             Extent("dst", dst.data_ptr(), 4 * n, 4)]
    return src_alloc, dst_alloc, src, dst, found


def launched(kernel, grid, *args, extents, **kwargs):
    with Instrumented(list(extents), device=CPU) as checker:
        kernel[grid](*args, **kwargs)
        accesses = checker.collect()
    return accesses, checker


def test_reversed_copies_run_the_programs_in_the_other_order():
    """On a GPU diffcheck cannot order the programs as the interpreter does; instrumented
    copies that take their ids in reverse (called functions included) make a race between
    programs resolve the other way, as the interpreter's reversed order does on the CPU."""
    _, _, _, dst, found = buffers()
    for reverse, last in ((False, 6), (True, 0)):
        dst.zero_()
        with Instrumented(list(found), device=CPU, reverse=reverse) as checker:
            ik.last_writer[(7,)](dst, 7)
            assert checker.collect() == []
        assert checker.launches == 1
        # the interpreter runs ids 0..6 in turn: with reversed ids the last to run is 0
        assert dst.tolist() == [last, 0, 1, 2, 3, 4, 5, 6], reverse
        # a write past the end by the kernel's program 7 is named as program 7 either way
        with Instrumented(list(found), device=CPU, reverse=reverse) as checker:
            ik.last_writer[(8,)](dst, 8)
            [wrote] = checker.collect()
        assert (wrote.kind, wrote.buffer, wrote.offset, wrote.program) == (
            "write", "dst", 8, (7, 0, 0)), reverse


def test_the_programs_are_reversed_only_where_the_interpreter_cannot_order_them():
    from diffcheck.paths import get_path
    from diffcheck.runner import _bounds_checker
    from diffcheck.settings import RUNS

    spec = get_path("decode")
    settings = RunSettings(CPU, "test", 0, None, False, 2, 60.0, "none", instrument=True)
    assert [_bounds_checker(spec, settings, plan).reverse for plan in RUNS[:2]] == [False,
                                                                                    False]
    assert RUNS[1].order == "reversed"  # the interpreter reverses that run itself
    gpu = RunSettings(torch.device("cuda"), "test", 0, isolation="none")
    assert gpu.instrument  # the default where kernels are compiled
    assert [_bounds_checker(spec, gpu, plan).reverse for plan in RUNS[:2]] == [False, True]
    assert RUNS[1].label(settings).endswith("programs reversed")
    assert RUNS[1].label(gpu).endswith("programs reversed")
    plain = RunSettings(torch.device("cuda"), "test", 0, isolation="none", instrument=False)
    assert RUNS[1].label(plain) == f"{RUNS[1].filling} filling"


def test_a_read_past_the_end_in_a_called_jit_function_is_named_and_yields_other():
    _, _, src, dst, found = buffers()
    accesses, checker = launched(ik.copy_through_callee, (1,), src, dst, 8, extents=found,
                                 SHIFT=2, BLOCK=8)
    assert checker.launches == 1
    [read] = accesses
    assert (read.kind, read.buffer, read.offset, read.lanes) == ("read", "src", 8, 2)
    assert read.found_by == "instrumented" and read.where.startswith("_load_at line ")
    # the two lanes out of bounds read `other` (0), not the margin's 7s
    assert dst.tolist() == [2, 3, 4, 5, 6, 7, 0, 0]


def test_an_in_bounds_kernel_records_nothing_and_computes_the_same():
    _, _, src, dst, found = buffers()
    accesses, _ = launched(ik.copy_through_callee, (1,), src, dst, 8, extents=found,
                           SHIFT=0, BLOCK=8)
    assert accesses == [] and dst.tolist() == list(range(8))


def test_a_store_before_the_start_is_a_write_and_never_lands():
    _, dst_alloc, _, dst, found = buffers()
    accesses, _ = launched(ik.store_shifted, (1,), dst, 8, extents=found, SHIFT=-3, BLOCK=8)
    [write] = accesses
    assert (write.kind, write.buffer, write.offset, write.lanes) == ("write", "dst", -3, 3)
    assert dst_alloc[:MARGIN].eq(7).all()  # the margin is untouched: the lanes were dropped
    assert dst.tolist() == [3, 4, 5, 6, 7, 0, 0, 0]


def test_a_scalar_load_without_a_mask_is_checked():
    _, _, src, dst, found = buffers()
    accesses, _ = launched(ik.scalar_peek, (1,), src, dst, extents=found, AT=-1)
    [read] = accesses
    assert (read.kind, read.buffer, read.offset, read.lanes) == ("read", "src", -1, 1)


@pytest.mark.parametrize("kernel, args", [(ik.add_atomically, {"n": 8, "SHIFT": 5, "BLOCK": 8}),
                                          (ik.swap_atomically, {"AT": 9})])
def test_atomics_out_of_bounds_are_writes(kernel, args):
    _, _, _, dst, found = buffers()
    accesses, _ = launched(kernel, (1,), dst, extents=found, **args)
    assert {(a.kind, a.buffer) for a in accesses} == {("write", "dst")}
    assert min(a.offset for a in accesses) >= 8


def test_an_out_of_bounds_compare_and_swap_lands_in_diffcheck_s_scratch_not_the_margin():
    _, dst_alloc, _, dst, found = buffers()
    accesses, _ = launched(ik.swap_atomically, (1,), dst, extents=found, AT=9)
    assert [(a.kind, a.buffer, a.offset) for a in accesses] == [("write", "dst", 9)]
    assert dst_alloc.eq(7).sum() == 2 * MARGIN  # the margin never got the 7 it swapped in


def test_a_mask_passed_as_none_is_no_mask():
    """A helper whose mask= defaults to None: the copy computes what the kernel does."""
    _, _, src, dst, found = buffers()
    accesses, checker = launched(ik.copy_through_default_mask, (1,), src, dst, 8,
                                 extents=found, BLOCK=8)
    assert accesses == [] and checker.launches == 1 and dst.tolist() == list(range(8))


def test_a_pointer_computed_by_an_atomic_runs_as_written_and_says_why():
    """Checking the pointer evaluates it again: an atomic in it would run twice."""
    _, _, src, dst, found = buffers(4)
    counter = torch.zeros(1, dtype=torch.int32)
    found.append(Extent("counter", counter.data_ptr(), 4, 4))
    accesses, checker = launched(ik.compact_by_counter, (4,), src, dst, counter, 4,
                                 extents=found)
    assert counter.item() == 4 and sorted(dst.tolist()) == [0, 1, 2, 3]
    assert checker.launches == 0 and "a pointer is computed by an atomic" in checker.notes[0]


def test_a_jit_function_passed_as_an_argument_is_named_as_unchecked():
    _, _, src, dst, found = buffers()
    accesses, checker = launched(ik.copy_through_function_argument, (1,), src, dst, 8,
                                 extents=found, FN=ik._peek, BLOCK=8)
    assert dst.tolist() == list(range(8))
    assert checker.notes == ["copy_through_function_argument: the jit function passed as FN "
                             "is not instrumented (its reads are found by red zones only)"]
    # its program ids would disagree with the kernel's: such a launch is never reversed
    dst.zero_()
    with Instrumented(list(found), device=CPU, reverse=True) as checker:
        ik.copy_through_function_argument[(1,)](src, dst, 8, FN=ik._peek, BLOCK=8)
    assert dst.tolist() == list(range(8)) and checker.launches == 1
    assert "copy_through_function_argument: its programs were not reversed" in \
        " ".join(checker.notes)


def test_a_reinterpreted_tensor_is_its_base_s_extent():
    import triton

    _, _, src, dst, found = buffers()
    accesses, _ = launched(ik.copy_plain, (1,), triton.reinterpret(src, torch.float32),
                           triton.reinterpret(dst, torch.float32), 8, extents=found, BLOCK=8)
    assert accesses == [] and dst.tolist() == list(range(8))


def test_a_store_into_an_input_is_an_input_write_even_when_put_back():
    _, _, src, dst, found = buffers()
    before = src.clone()
    accesses, _ = launched(ik.write_input, (1,), src, dst, 8, extents=found, BLOCK=8)
    [written] = accesses
    assert (written.kind, written.buffer, written.offset) == ("input-write", "src", 0)
    assert torch.equal(src, before) and dst.tolist() == list(range(8))


@pytest.mark.skipif(not hasattr(__import__("triton").language, "make_block_ptr")
                    or _triton_at_least(3, 9), reason="this triton has no block pointers")
def test_a_kernel_with_block_pointers_runs_as_written_and_says_why():
    _, _, src, dst, found = buffers()
    accesses, checker = launched(ik.copy_by_block_pointer, (1,), src, dst, 8, extents=found,
                                 BLOCK=8)
    assert accesses == [] and checker.launches == 0
    assert dst.tolist() == list(range(8))
    assert checker.notes == ["copy_by_block_pointer is not instrumented: it uses block "
                             "pointers (tl.make_block_ptr)"]


def test_a_kernel_with_tensor_descriptors_is_not_rewritten_and_says_why():
    from diffcheck.instrument import copy_of

    why = copy_of(ik.copy_by_descriptor, ("src", "dst"))
    assert why == ("copy_by_descriptor is not instrumented: it uses tensor descriptors "
                   "(tl.make_tensor_descriptor)")


def test_the_launch_patch_is_removed_afterwards_even_when_the_call_raises():
    from triton.runtime.interpreter import InterpretedFunction

    before = InterpretedFunction.__dict__["run"]
    with pytest.raises(RuntimeError), Instrumented([], device=CPU):
        assert InterpretedFunction.__dict__["run"] is not before
        raise RuntimeError("kernel failed")
    assert InterpretedFunction.__dict__["run"] is before


def test_instrumenting_on_the_cpu_needs_the_sandbox_off():
    with pytest.raises(UsageError, match="needs --no-interpreter-check"):
        RunSettings(CPU, "t", 0, None, True, 2, 60.0, "none", instrument=True)
    assert RunSettings(CPU, "t", 0).instrument is False


def instrumented(fillings: int = 1) -> RunSettings:
    return RunSettings(CPU, "t", 0, None, False, fillings, 60.0, "none", instrument=True)


def test_a_row_whose_call_launches_no_triton_kernel_says_reads_are_left_to_red_zones():
    from diffcheck.impls import builtin

    reference = builtin()["decode:reference"]
    case = suite_cases("decode", "smoke")[0]
    [row] = run_all([Job(case, reference, Eager())], instrumented())
    assert row.status == "pass"
    assert "made no Triton launch diffcheck could instrument" in row.detail
    assert "--instrument" in row.reproduce and "--no-interpreter-check" in row.reproduce


@pytest.mark.parametrize("name, path, suites", [
    ("decode_peeks_past_kv_indptr", "decode", ("smoke",)),
    ("mtp_reads_before_kv_indptr", "mtp", ("domain",)),
])
def test_instrumented_kernels_name_the_reads_the_sandbox_names(name, path, suites):
    """Parity on the CPU: the rows and buffers the sandbox calls oob_read are those the
    instrumented kernels call oob_read (the GPU test asserts the same there)."""
    from parity import read_buffers

    impl = make_impl(f"{path}:{name}", f"bounded_reads:{name}")
    cases = suite_cases(path, *suites)
    jobs = [Job(c, impl, Eager()) for c in cases]
    read_by: dict[str, list[str]] = {"sandbox": [], "instrumented": []}
    sandboxed = run_all(jobs, RunSettings(CPU, "t", 0, None, True, 2, 60.0, "none"),
                        lambda o: read_by["sandbox"].append(read_buffers(o.findings)))
    checked = run_all(jobs, instrumented(2),
                      lambda o: read_by["instrumented"].append(read_buffers(o.findings)))
    assert [r.status for r in checked] == [r.status for r in sandboxed]
    assert any(r.status == "oob_read" for r in checked)
    assert read_by["instrumented"] == read_by["sandbox"]  # the same buffers, row for row
    for mine in checked:
        if mine.status == "oob_read":
            assert mine.oob_read_found_by == "instrumented"
            assert " line " in mine.first_oob_read


@pytest.mark.slow
def test_every_parity_row_gets_the_sandbox_status_with_instrumented_kernels():
    """All parity jobs (tests/parity.py): the statuses agree row for row, and the buffers
    each read finding names overlap the sandbox's."""
    from parity import parity_jobs, read_buffers, same_buffer

    found = {}

    def keep(outcome):
        found[(outcome.row.implementation, outcome.row.case_id)] = read_buffers(
            outcome.findings)

    sandbox = {}

    def keep_sandbox(outcome):
        sandbox[(outcome.row.implementation, outcome.row.case_id)] = (
            outcome.row.status, read_buffers(outcome.findings))

    jobs = [Job(c, impl, Eager()) for impl, cases in parity_jobs() for c in cases
            if c.path == impl.path]
    run_all(jobs, RunSettings(CPU, "t", 0, None, True, 1, 60.0, "none"), keep_sandbox)
    rows = run_all(jobs, instrumented(), keep)
    for row in rows:
        status, buffers = sandbox[(row.implementation, row.case_id)]
        assert row.status == status, (row.implementation, row.case_id, row.detail)
        if status == "oob_read":
            assert same_buffer(row.path, buffers, found[(row.implementation, row.case_id)]), (
                row.implementation, row.case_id, buffers, row.detail)


def test_a_copy_that_does_not_compile_runs_the_kernel_as_written_and_says_so():
    """A front-end error in diffcheck's copy (not in the kernel) must not turn a correct
    kernel's row into an error: the kernel runs uninstrumented, the row says why."""
    from triton.compiler.errors import CompilationError

    class Refused(CompilationError):
        def __init__(self):
            Exception.__init__(self, "unsupported in this triton")

        def __str__(self):
            return "unsupported in this triton"

    _, _, src, dst, found = buffers()
    with Instrumented(list(found), device=CPU) as checker:
        original = checker._saved

        def picky(kernel, *args, **kwargs):
            if any(name.startswith("_dc_") for name in kwargs):
                raise Refused()
            return original(kernel, *args, **kwargs)

        checker._saved = picky
        ik.copy_plain[(1,)](src, dst, 8, BLOCK=8)
        ik.copy_plain[(1,)](src, dst, 8, BLOCK=8)  # the second launch goes straight through
    assert checker.launches == 0 and dst.tolist() == list(range(8))
    assert checker.notes == ["copy_plain is not instrumented: its copy does not compile "
                             "(unsupported in this triton)"]


@pytest.mark.parametrize("name, path", [("decode_peeks_past_kv_indptr", "decode"),
                                        ("mtp_reads_before_kv_indptr", "mtp")])
def test_the_default_selection_catches_the_bounded_reads_in_every_mode(name, path):
    """What a user runs without options (the API with no suites, as the CLI without
    --suite): the read the kernel bounds afterwards is oob_read in eager, capture and replay,
    naming kv_indptr (on this CPU through the sandbox; on a GPU the instrumented kernels,
    tests/test_gpu.py)."""
    from pathlib import Path

    from diffcheck.api import check

    kernel = Path(__file__).with_name("bounded_reads.py")
    report = check(f"{kernel}:{name}", path=path)
    read = report[report["status"] == "oob_read"]
    named = read[read["first_oob_read"].str.startswith("kv_indptr[")]
    assert set(named["mode"]) == {"eager", "capture", "replay"}, report.groupby(
        ["mode", "status"]).size()
