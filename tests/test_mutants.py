"""Device-made mutants (diffcheck.mutants) and the captured check that runs them
(`fuzz --fast --mutants N`): well-formed for every path, rebuilt on the host exactly as the
graph made them, and a kernel wrong only on odd values of a clean case is found among them.
Run on the graph emulator with the sandbox off (a GPU's view); test_gpu.py runs them for real."""

import pytest
import torch
from conftest import CPU, make_impl, suite_cases
from misbehaving_kernels import MUTANTS_FAR_FROM, MUTANTS_FAR_TO

from diffcheck.casefile import case_problems
from diffcheck.fastcheck import CapturedCheck, Screened
from diffcheck.impls import builtin
from diffcheck.job import Job
from diffcheck.mutants import mutant
from diffcheck.runner import run_job
from diffcheck.settings import RunSettings


def settings(fillings: int = 2, timeout: float = 60.0, isolation: str = "none") -> RunSettings:
    return RunSettings(CPU, "test", 0, None, False, fillings, timeout, isolation)


def clean_decode(name: str = "clean"):
    from diffcheck.fixtures.decode import decode_batch
    from diffcheck.fixtures.layouts import Layout

    return Layout(name, "", 256, decode_batch([300, 90, 300, 17])).case("decode", "t", 5, 0)


@pytest.mark.parametrize("path", ["decode", "mtp", "prefill", "blocktable"])
def test_mutants_keep_every_path_well_formed_and_change_what_they_may(path):
    for case in suite_cases(path, "smoke"):
        if not case.well_formed:
            continue
        assert mutant(case, 0).inputs.keys() == case.inputs.keys()
        assert all(torch.equal(mutant(case, 0).inputs[n], case.inputs[n]) for n in case.inputs)
        changed = 0
        for index in range(1, 9):
            made, again = mutant(case, index), mutant(case, index)
            assert made.name.endswith(f"-m{index}") and made.mutant == index
            assert not case_problems(made), (case.name, index, case_problems(made))
            for name, tensor in case.inputs.items():
                assert made.inputs[name].shape == tensor.shape
                assert torch.equal(made.inputs[name], again.inputs[name])  # deterministic
                changed += int((made.inputs[name] != tensor).sum())
        assert changed > 0, case.name


def test_the_share_of_changed_values_cycles_from_one_odd_entry_to_half():
    case = clean_decode()
    positions = case.inputs["token_indices"].numel()
    shares = [int((mutant(case, i).inputs["token_indices"] != case.inputs["token_indices"])
                  .sum()) / positions for i in range(1, 5)]
    assert shares[0] < 0.01 and 0.25 < shares[3] < 0.6 and shares == sorted(shares)


def test_the_graph_makes_the_mutants_the_host_rebuilds():
    case = clean_decode()
    check = CapturedCheck(case, builtin()["decode:guarded"].described(), settings(), True)
    assert check.first_failing_mutant(case, 6) is None  # a correct kernel: none counted
    last = mutant(case, 6)  # the sources hold the last mutant the graph made
    for name, source in check.sources.items():
        assert torch.equal(source.cpu(), last.inputs[name]), name
    assert not any(check.run(case).values())  # and the case itself again afterwards


def test_a_kernel_wrong_only_on_odd_positions_is_found_among_the_mutants():
    """No context mask: a clean case passes, a mutant with a position past its context does
    not; the mutant named is one the full check fails."""
    impl = make_impl("decode:decode_no_ctx_mask", "misbehaving_kernels:decode_no_ctx_mask")
    case = clean_decode()
    check = CapturedCheck(case, impl, settings(), True)
    assert not any(check.run(case).values())
    index = check.first_failing_mutant(case, 64)
    assert index is not None and index > 0
    from diffcheck.modes import Eager

    rows = run_job(Job(mutant(case, index), impl, Eager()), settings())
    assert rows[0].row.status == "mismatch"


def test_screening_with_mutants_hands_the_failing_mutant_to_the_full_check():
    impl = make_impl("decode:decode_no_ctx_mask_screened", "misbehaving_kernels:decode_no_ctx_mask")
    mode = Screened(mutants=64)
    first = run_job(Job(clean_decode("a"), impl, mode), settings())  # the first: full check
    assert first[0].row.status == "pass" and first[0].mutants == 0
    found = run_job(Job(clean_decode("b"), impl, mode), settings())
    row = found[0].row
    assert row.status == "mismatch" and row.mutant is not None, row.case_id
    assert row.case_id.endswith(f"-m{row.mutant}")
    guarded = builtin()["decode:guarded"].described()
    for name in ("c", "d"):
        rows = run_job(Job(clean_decode(name), guarded, Screened(mutants=16)), settings())
    assert rows[0].row.status == "pass" and rows[0].mutants == 16


class _FaultsOnFarPositions:
    """A graph that behaves as a GPU would for a kernel that reads wild at a position in the
    mutants' far band: the replay of such a mutant 'faults' (the error a CUDA fault raises)."""

    def __init__(self, real):
        self.real, self.owner = real, None

    def capture(self, call):
        self.owner = call.__self__  # the CapturedCheck whose body this is
        return self.real.capture(call)

    def replay(self, sync: bool = True) -> None:
        self.real.replay(sync)
        if _has_far_position(self.owner.sources):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")


def _has_far_position(tensors, k: int | None = None) -> bool:
    """A position among the first ``k`` of a request's row (the ones a kernel reads) in the
    band fuzz_kernels' far kernels misbehave on (only mutants make it)."""
    contexts = tensors["kv_indptr"][1:] - tensors["kv_indptr"][:-1]
    rows = tensors["token_indices"][: contexts.numel(), :k].to(torch.int64)
    return bool(((rows >= contexts[:, None] + MUTANTS_FAR_FROM) & (rows < MUTANTS_FAR_TO)).any())


@pytest.mark.parametrize("limits", ["CPU_LIMITS", "GPU_LIMITS"])
def test_only_mutants_reach_the_far_band_of_the_far_kernels(limits):
    """fuzz_kernels' far kernels test how a misbehaving *mutant* is named (test_gpu.py runs
    `fuzz --fast` on them): a well-formed generated decode case in their band would fault or
    hang as itself instead, the far-beyond and int32-max positions of the domain included.
    (A stale case can: its positions are its intended batch's, past the spoiled contexts; it
    is never screened nor mutated, so the GPU test fixes --seed.)"""
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings

    from diffcheck.domain import domain_of
    from diffcheck.fixtures import generated
    from diffcheck.paths import get_path

    spec = get_path("decode")
    gen, domain = spec.generators(), domain_of(spec)
    odd = set()

    @hsettings(max_examples=40 if limits == "CPU_LIMITS" else 8, deadline=None,
               database=None, suppress_health_check=list(HealthCheck))
    @given(generated.batches(gen, getattr(generated, limits), domain))
    def check(batch):
        if batch.spoiler:
            return
        case = gen.layout(batch).case("decode", "", batch.seed, spec.fill)
        odd.update(batch.oddities)
        assert not _has_far_position(case.inputs, case.k), batch

    check()
    assert odd & {"far", "max"}  # the domain's own far positions were drawn
    reached = [i for i in range(1, 65) if _has_far_position(mutant(clean_decode(), i).inputs)]
    assert reached  # and mutants do reach the band


def test_a_mutant_that_faults_is_named_by_running_the_mutants_one_by_one(monkeypatch):
    """Queued back to back, a fault names no mutant: the case's row is a fault that says so;
    run again one by one (fuzz does, in a fresh worker) the fault row is the mutant's."""
    import diffcheck.fastcheck as fastcheck
    from diffcheck import fuzz
    from diffcheck.status import Status

    real = fastcheck.new_graph
    monkeypatch.setattr(fastcheck, "new_graph", lambda device: _FaultsOnFarPositions(real(device)))
    impl = make_impl("decode:guarded_faulting", "diffcheck.kernels.decode:decode_guarded")
    case = clean_decode("far")
    assert not _has_far_position(case.inputs)
    check = CapturedCheck(case, impl, settings(), True)
    with pytest.raises(fastcheck.MutantFault) as queued:
        check.first_failing_mutant(case, 64)
    assert queued.value.index is None
    with pytest.raises(fastcheck.MutantFault) as waited:
        check.first_failing_mutant(case, 64, one_by_one=True)
    assert _has_far_position(mutant(case, waited.value.index).inputs)
    assert not any(_has_far_position(mutant(case, i).inputs)
                   for i in range(1, waited.value.index))

    checker = fuzz.Checker(impl, [Screened(64)], settings())
    first = checker.rows(case)  # the first screened case gets the full check: no mutants
    assert [r.status for r in first] == ["pass"]
    row = checker.rows(case)[0]
    assert row.status == Status.FAULT.value and fastcheck.MUTANT_FAULT in row.error
    assert row.mutant is None
    located = fuzz.locate_mutant(checker, case, 64)
    assert located is not None and located.mutant == waited.value.index


@pytest.mark.parametrize("isolation", ["none", "process"])
def test_a_mutant_that_runs_away_is_named_by_the_index_it_was_running(isolation):
    """A time-out stops the check of every queued mutant: run one by one, each mutant is
    announced to the parent before it runs (diffcheck.heartbeat), so the time-out row names
    the one running, and that mutant's full check runs past the limit again."""
    from diffcheck import fuzz
    from diffcheck.status import Status

    impl = make_impl("decode:decode_hangs_on_far_positions",
                     "fuzz_kernels:decode_hangs_on_far_positions")
    case = clean_decode("hang")
    # 8 s: the full check of the first case and each mutant finish well inside it on a
    # loaded 2-core machine (4 s failed once with both xdist workers busy)
    checker = fuzz.Checker(impl, [Screened(16)], settings(timeout=8.0, isolation=isolation))
    assert [r.status for r in checker.rows(case)] == ["pass"]  # the first: full check
    row = checker.rows(case)[0]
    assert row.status == Status.TIMEOUT.value and row.mutant is None
    located = fuzz.locate_mutant(checker, case, 16)
    assert located is not None and located.status == Status.TIMEOUT.value
    assert _has_far_position(mutant(case, located.mutant).inputs)
