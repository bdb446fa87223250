"""Plausible red-zone fillings: reads a GPU sees only through the output, even when the
kernel's own checks reject the constant and tagged margins.

Without the interpreter sandbox (--no-interpreter-check) the CPU sees reads exactly as a GPU
does, through the output only: these tests run that way.
"""

import broken_kernels
import pytest
import torch
from conftest import make_impl, run_cases, suite_cases

from diffcheck.buffers import MARGIN_VALUE, PLAUSIBLE_A, PLAUSIBLE_B, Filling, stage
from diffcheck.executors import settings_for
from diffcheck.impls import find
from diffcheck.paths import get_path

GPU_LIKE = {"interpreter_check": False}


def test_a_checked_kernel_hides_an_over_read_from_constant_and_tags_but_not_from_plausible():
    impl = make_impl("mtp:counts", "broken_kernels:mtp_counts_tokens_from_indptr")
    cases = [c for c in suite_cases("mtp", "stale") if c.case_id == "stale/mtp-stale-seq-short"]
    (two,) = run_cases(impl, cases, fillings=2, **GPU_LIKE)
    assert two.status == "stale_sensitive", two.detail  # what a GPU saw before
    (four,) = run_cases(impl, cases, fillings=4, **GPU_LIKE)
    assert four.status == "oob_read", four.detail
    assert four.oob_read_found_by == "redzone-plausible"
    # the read is named by the margin that changes the output: one of the two short buffers
    assert four.first_oob_read.startswith("token_to_seq_idxs: a read past its end"), four.detail


def test_a_row_read_past_the_end_is_named_with_its_side():
    impl = make_impl("decode:next-row", "broken_kernels:decode_reads_next_row")
    cases = [c for c in suite_cases("decode", "smoke") if not c.without_out]
    rows = run_cases(impl, cases, fillings=4, **GPU_LIKE)
    reads = [r for r in rows if r.status == "oob_read"]
    assert reads, [r.status for r in rows]
    for row in reads:
        assert row.first_oob_read.startswith("token_indices: a read past its end"), row.detail


@pytest.mark.parametrize("path", ["decode", "mtp", "prefill", "blocktable"])
def test_safe_kernels_pass_every_suite_under_plausible_fillings(path):
    """No false reads: plausible values are never read by a kernel that stays in bounds."""
    cases = suite_cases(path, "smoke", "edge", "stale")
    for impl in (find(f"{path}:guarded"),):
        rows = run_cases(impl, cases, fillings=4, **GPU_LIKE)
        bad = [(r.case_id, r.detail) for r in rows if r.status not in ("pass", "stale_sensitive")]
        assert not bad, bad


def test_plausible_values_pass_a_kernels_checks_and_differ_between_a_and_b():
    case = next(c for c in suite_cases("mtp", "smoke") if not c.without_out)
    spec = get_path("mtp")
    inputs = case.kernel_inputs()
    roles = tuple(t.role for t in spec.tensors)
    a, b = (stage(inputs, case.columns, 64, torch.device("cpu"), f, spec.names, roles)
            for f in (PLAUSIBLE_A, PLAUSIBLE_B))
    requests = inputs["kv_indptr"].numel() - 1
    for name in spec.names:
        after_a, after_b = a.buffers[name].after(), b.buffers[name].after()
        assert not torch.equal(after_a, after_b), name
        assert (after_a != MARGIN_VALUE).all()
    assert int(a.buffers["token_to_seq_idxs"].after()[0]) in range(requests)
    last = int(inputs["kv_indptr"][-1])
    assert a.buffers["kv_indptr"].after()[0] == last  # rows past the end are empty under A
    assert b.buffers["kv_indptr"].after()[0] == last + 1  # and one entry long under B
    mixed = stage(inputs, case.columns, 64, torch.device("cpu"),
                  PLAUSIBLE_A.with_b("kv_indptr.after"), spec.names, roles)
    assert torch.equal(mixed.buffers["kv_indptr"].after(), b.buffers["kv_indptr"].after())
    assert torch.equal(mixed.buffers["kv_indptr"].before(), a.buffers["kv_indptr"].before())
    assert str(PLAUSIBLE_A.with_b("kv_indptr.after").with_b("out")) == (
        "plausible-a:kv_indptr.after,out")  # as labels and details name it
    with pytest.raises(ValueError, match="unknown filling"):
        PLAUSIBLE_B.with_b("kv_indptr")
    with pytest.raises(ValueError, match="unknown filling"):
        Filling("plausible-c")


def _faults_on_a_red_zone(sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices,
                          kv_indptr, NUM_TOPK_TOKENS=2048, BLOCK_N=1024, out=None, fill=0):
    """The checked kernel, except that a request id past R faults the device, as a GPU kernel
    that used it as an index would (the element past token_to_seq_idxs is read from the
    allocation it lives in)."""
    requests, tokens = kv_indptr.numel() - 1, sparse_kv_indptr.numel() - 1
    if tokens > token_to_seq_idxs.numel():
        past = torch.as_strided(token_to_seq_idxs, (1,), (1,),
                                token_to_seq_idxs.storage_offset() + token_to_seq_idxs.numel())
        if not 0 <= int(past) < requests:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
    return broken_kernels.mtp_counts_tokens_from_indptr(
        sparse_kv_indptr, token_to_seq_idxs, topk_indices, kv_indices, kv_indptr,
        NUM_TOPK_TOKENS, BLOCK_N, out, fill)


def test_a_read_the_plausible_fillings_found_survives_a_fault_of_the_constant_run():
    impl = make_impl("mtp:faults", "test_plausible:_faults_on_a_red_zone")
    cases = [c for c in suite_cases("mtp", "stale") if c.case_id == "stale/mtp-stale-seq-short"]
    (row,) = run_cases(impl, cases, fillings=4, **GPU_LIKE)
    assert row.status == "oob_read", row.detail
    assert "faulted the device" in row.detail and "illegal memory access" in row.detail
    (without,) = run_cases(impl, cases, fillings=2, **GPU_LIKE)
    assert without.status == "fault", without.detail


def test_the_default_fillings_follow_what_sees_the_reads():
    impl = [find("decode:guarded")]
    cpu = torch.device("cpu")
    assert settings_for(impl, cpu, 0, isolation="none").fillings == 2
    assert settings_for(impl, cpu, 0, interpreter_check=False, isolation="none").fillings == 4
    with pytest.raises(Exception, match="--fillings must be"):
        settings_for(impl, cpu, 0, fillings=3, isolation="none")


def test_the_cpu_reads_the_gpu_parity_test_compares_with_are_current():
    """tests/cpu_reads.csv is what the CPU sandbox reports today (regenerate it with
    ``python tests/parity.py``); the GPU test asserts the same statuses there."""
    from parity import cpu_reads, recorded

    assert cpu_reads() == recorded()


CALLS = []


def _always_faults(*args, **kwargs):
    CALLS.append(1)
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_a_fault_in_the_first_plausible_run_ends_the_job_there():
    """After a device fault nothing may touch the device (staging the next filling would
    raise the fault again, outside any guard): the row is a fault after one call."""
    impl = make_impl("mtp:always-faults", "test_plausible:_always_faults")
    case = next(c for c in suite_cases("mtp", "smoke") if not c.without_out)
    CALLS.clear()
    (row,) = run_cases(impl, [case], fillings=4, **GPU_LIKE)
    assert row.status == "fault", row.detail
    assert len(CALLS) == 1


FIRST = []


def _wrong_on_its_first_call(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Correct, except on its first call (a cold cache): the plausible run makes that call."""
    from diffcheck.kernels.decode import decode_guarded

    result = decode_guarded(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                            BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out=out, fill=fill)
    if not FIRST:
        FIRST.append(1)
        result.view(-1)[0] += 1
    return result


def _starts_a_thread_once(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                          BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Leaves a thread running, on its first call only."""
    import threading

    from diffcheck.kernels.decode import decode_guarded

    if not FIRST:
        FIRST.append(1)
        threading.Thread(target=threading.Event().wait, args=(2,), daemon=True).start()
    return decode_guarded(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                          BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out=out, fill=fill)


@pytest.mark.parametrize("name, status", [
    ("_wrong_on_its_first_call", {"mismatch", "stray_write"}),  # element 0 may lie outside
    ("_starts_a_thread_once", {"side_effect"})])
def test_what_only_the_first_call_does_is_seen_when_the_plausible_runs_make_it(name, status):
    impl = make_impl(f"decode:{name}", f"test_plausible:{name}")
    case = next(c for c in suite_cases("decode", "edge") if not c.without_out)
    FIRST.clear()
    (row,) = run_cases(impl, [case], fillings=4, **GPU_LIKE)
    assert row.status in status, row.detail
    assert "plausible" in row.detail, row.detail


def _counts_read_past_req_id(req_id, block_table, token_indices, BLOCK_SIZE=64,
                             BLOCK_STRIDE_ROWS=None, NUM_TOPK_TOKENS=2048, BLOCK_N=512, out=None,
                             fill=-1, return_valid_counts=False, seq_lens=None, layer_id=0):
    """Correct output, but its valid counts depend on the element past req_id's end (read
    from the allocation, as a kernel would), and only when that element is a valid id."""
    from diffcheck.kernels.blocktable import blocktable_guarded

    result = blocktable_guarded(req_id, block_table, token_indices, BLOCK_SIZE,
                                BLOCK_STRIDE_ROWS, NUM_TOPK_TOKENS, BLOCK_N, out, fill,
                                return_valid_counts, seq_lens, layer_id)
    if not return_valid_counts:
        return result
    out, counts = result
    past = int(torch.as_strided(req_id, (1,), (1,), req_id.storage_offset() + req_id.numel()))
    if past == 0:
        counts = counts.clone()
        counts[-1] += 1
    return out, counts


def test_a_read_that_changes_only_an_extra_output_is_named():
    impl = make_impl("blocktable:counts-read", "test_plausible:_counts_read_past_req_id")
    cases = [c for c in suite_cases("blocktable", "smoke", "edge")
             if c.scalars.get("valid_counts") and not c.without_out][:2]
    assert cases
    for row in run_cases(impl, cases, fillings=4, **GPU_LIKE):
        assert row.status == "oob_read", row.detail
        assert row.first_oob_read.startswith("req_id: a read past its end"), row.detail


RACES = []


def _racy_but_in_bounds(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                        BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    """Reads only inside its buffers; some calls (a race) add 7 to its first element."""
    from diffcheck.kernels.decode import decode_guarded

    result = decode_guarded(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                            BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out=out, fill=fill)
    if RACES.pop(0) if RACES else False:
        result.view(-1)[0] += 7
    return result


@pytest.mark.parametrize("seed", range(12))
def test_a_race_never_names_a_margin(seed):
    """Whichever calls the race hits, the row may be nondeterministic or wrong, never a read."""
    import random

    rng = random.Random(seed)
    impl = make_impl("decode:racy", "test_plausible:_racy_but_in_bounds")
    case = next(c for c in suite_cases("decode", "smoke") if not c.without_out)
    RACES[:] = [rng.random() < 0.3 for _ in range(200)]
    (row,) = run_cases(impl, [case], fillings=4, **GPU_LIKE)
    assert row.status != "oob_read", (seed, row.detail)


def _raises_on_its_first_call(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                              BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None, fill=0):
    from diffcheck.kernels.decode import decode_guarded

    if not FIRST:
        FIRST.append(1)
        raise RuntimeError("lazy initialisation failed on the first call")
    return decode_guarded(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                          BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out=out, fill=fill)


def test_an_error_of_a_plausible_run_is_the_rows_error():
    impl = make_impl("decode:first-raises", "test_plausible:_raises_on_its_first_call")
    case = next(c for c in suite_cases("decode", "edge") if not c.without_out)
    FIRST.clear()
    (row,) = run_cases(impl, [case], fillings=4, **GPU_LIKE)
    assert row.status == "error", row.detail
    assert "lazy initialisation failed" in row.error and "plausible" in row.error, row.error


def test_the_default_selection_catches_the_hidden_over_read(tmp_path):
    """No --suite, no --fillings: on the GPU's view (no sandbox) the default suites and the
    default fillings find the checked kernel's over-read; the API's defaults on CPU too."""
    import os
    import subprocess
    import sys

    import pandas as pd

    from diffcheck import api

    report = tmp_path / "r.csv"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "diffcheck", "compare", "--path", "mtp", "--impl",
         "broken_kernels:mtp_counts_tokens_from_indptr", "--mode", "eager",
         "--no-interpreter-check", "--report", str(report), "--quiet"],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    df = pd.read_csv(report)
    assert set(df["fillings"]) == {4}
    reads = df[df["status"] == "oob_read"]
    assert (reads["oob_read_found_by"] == "redzone-plausible").any(), df["status"].tolist()
    rows = api.check("broken_kernels:mtp_counts_tokens_from_indptr", "mtp", modes="eager")
    assert (rows["status"] == "oob_read").any()
