"""Fast checks of what a green run promises, in this process: every call judged (inputs,
process state, late writes, every run and program order), reports that never lose rows or
read back differently, and one-line errors for bad input.

test_no_false_passes.py runs every misbehaving kernel through the real commands; these pin
the mechanisms one at a time.
"""

import os
import xml.etree.ElementTree as ET

import misbehaving_kernels as mk
import pandas as pd
import pytest
import torch
from conftest import CPU, make_impl, suite_cases
from test_cli import error_line, invoke

from diffcheck.buffers import Buffer
from diffcheck.errors import ExitCode, UsageError
from diffcheck.executors import run_all
from diffcheck.job import Job
from diffcheck.modes import select
from diffcheck.oob import tag_label
from diffcheck.report import COLUMNS, ReportWriter, read_report
from diffcheck.settings import RunSettings


def impl(name: str):
    return make_impl(f"decode:{name}", f"misbehaving_kernels:{name}")


def rows_of(name: str, targets, mode: str = "all", **settings):
    jobs = [Job(t, impl(name), m) for t in targets for m in select(mode) if m.rows(t)]
    return run_all(jobs, RunSettings(CPU, "test", 0, **settings))


def case(name: str, suite: str = "smoke"):
    return next(c for c in suite_cases("decode", suite) if c.name == name)


def scenario(name: str):
    return next(s for s in suite_cases("decode", "replay") if s.name == name)


@pytest.mark.parametrize("kernel, buffer", [
    ("decode_zeroes_kv_indices", "kv_indices"),
    ("decode_scribbles_on_qo_indptr", "qo_indptr"),
    ("decode_clears_token_indices", "token_indices"),
    ("decode_triton_writes_kv_indices", "kv_indices"),
])
def test_input_writes_are_found_in_every_mode_with_buffer_offset_and_values(kernel, buffer):
    rows = rows_of(kernel, [case("decode-shuffled"), scenario("decode-grow-shrink")])
    assert {r.mode for r in rows} == {"eager", "capture", "replay"}
    for row in rows:
        assert row.status == "input_write", (row.case_id, row.mode, row.detail)
        assert row.input_writes > 0 and row.first_input_write.startswith(f"{buffer}[")
        assert "Input written:" in row.detail and "was " in row.detail
    # inputs are put back after each call: the replay steps after the first are judged alone
    replays = [r for r in rows if r.mode == "replay"]
    assert all("(the eager call" not in r.first_input_write for r in replays)


def test_stores_into_an_input_that_are_undone_before_returning_are_input_writes():
    """The table is as staged after the call, so only the sandbox can see the stores; the
    arena comparison must not count them twice when they do stay."""
    rows = rows_of("decode_borrows_kv_indices",
                   [case("decode-shuffled"), scenario("decode-grow-shrink")])
    assert {r.mode for r in rows} == {"eager", "capture", "replay"}
    for row in rows:
        assert row.status == "input_write", (row.case_id, row.mode, row.detail)
        assert row.first_input_write.startswith("a Triton store into kv_indices[")
        assert "found by interpreter" in row.detail and row.mismatches == 0
    (kept,) = rows_of("decode_triton_writes_kv_indices", [case("decode-shuffled")], "eager")
    assert kept.detail.count("Input written:") == 1, kept.detail


def test_the_static_buffers_after_replay_must_equal_the_steps_inputs():
    rows = rows_of("decode_zeroes_kv_indices", [scenario("decode-dummy-capture")], "replay")
    assert rows and all(r.status == "input_write" for r in rows)


@pytest.mark.parametrize("kernel", ["decode_racy", "decode_wrong_after_first_call"])
def test_outputs_that_change_between_identical_calls_are_nondeterministic(kernel):
    (row,) = rows_of(kernel, [case("decode-mixed")], "eager")
    assert row.status == "nondeterministic" and row.nondeterministic > 0, row.detail
    assert row.oob_reads == 0  # never taken for a read through the red zones
    assert "differ between runs on identical inputs" in row.detail


def test_a_racy_kernel_passes_when_its_programs_always_run_in_one_order():
    # What the interpreter saw before it reversed program order: the race was invisible.
    (row,) = rows_of("decode_racy", [case("decode-mixed")], "eager", fillings=1)
    assert row.status == "mismatch"  # the one order it ran in lets the wrong program win


@pytest.mark.parametrize("kernel, change", [
    ("decode_reseeds_the_rng", "torch CPU RNG state"),
    ("decode_sets_default_dtype", "default dtype to float64"),
    ("decode_sets_an_environment_variable", "MISBEHAVING_KERNEL_WAS_HERE"),
    ("decode_changes_directory", "changed the working directory"),
])
def test_side_effects_are_found_and_put_back(kernel, change):
    seed_state, cwd = torch.get_rng_state(), os.getcwd()
    rows = rows_of(kernel, [case("decode-mixed")], "all")
    assert {r.status for r in rows} == {"side_effect"}
    assert all(change in r.side_effects for r in rows)
    assert torch.equal(torch.get_rng_state(), seed_state) and os.getcwd() == cwd
    assert torch.get_default_dtype() == torch.float32
    assert "MISBEHAVING_KERNEL_WAS_HERE" not in os.environ


@pytest.mark.parametrize("name", ["decode-shuffled", "decode-mixed"])
def test_a_writer_still_running_after_the_call_returned_is_seen(name):
    """Into the out= workspace, and into an output the kernel returned (decode-mixed calls
    it without out=): there the late write lands in the kernel's own tensor."""
    target = case(name)
    assert target.without_out == (name == "decode-mixed")
    (row,) = rows_of("decode_writes_out_late", [target], "eager")
    assert "left 1 thread running (late-writer)" in row.side_effects
    assert row.nondeterministic == 8 and "Output changed after the call returned" in row.detail


def test_sys_exit_in_this_process_is_a_fault_row_and_the_run_goes_on():
    cases = [case("decode-long"), case("decode-mixed")]
    assert cases[0].k == 512
    rows = rows_of("decode_calls_sys_exit", cases, "eager", isolation="none")
    assert [r.status for r in rows] == ["fault", "pass"]
    assert "called sys.exit(0)" in rows[0].error


def test_a_leftover_thread_is_a_side_effect():
    mk.LEFTOVERS_MAY_END.clear()  # its thread waits for this: alive until the test ends
    try:
        (row,) = rows_of("decode_leaves_a_thread", [case("decode-mixed")], "eager")
        assert row.status == "side_effect" and "kernel-leftover" in row.side_effects
    finally:
        mk.LEFTOVERS_MAY_END.set()


def test_correct_kernels_of_other_shapes_pass_every_mode():
    targets = [case("decode-large"), case("decode-strided"), scenario("decode-dummy-capture")]
    for name in ("decode_persistent", "decode_tiles_2d", "decode_torch_prologue"):
        rows = rows_of(name, targets)
        assert {r.status for r in rows} == {"pass"}, [(r.case_id, r.detail) for r in rows
                                                      if r.status != "pass"]


def test_a_tag_in_a_margin_between_two_buffers_names_both_candidates():
    def buffer(name, span):
        return Buffer(name, torch.zeros(1), 1024, span, torch.zeros(1))

    buffers = [buffer("page_kv_indptr", 9), buffer("kv_indices", 5000), buffer("out", 100)]
    assert tag_label(buffers, 1, -1).startswith("kv_indices[-1] (4 bytes before its start), "
                                                "or page_kv_indptr[+2048]")
    assert "or out[-1025] (4100 bytes before its start)" in tag_label(buffers, 1, 5000 + 1023)
    assert tag_label(buffers, 0, -3) == "page_kv_indptr[-3] (12 bytes before its start)"
    assert tag_label(buffers, 2, 100) == "out[+1] (element 1 past its end)"


# -- reports ------------------------------------------------------------------------------------
def test_a_report_another_run_is_writing_is_refused(tmp_path):
    first = ReportWriter(tmp_path / "r.csv")
    with pytest.raises(UsageError, match="being written by another diffcheck run"):
        ReportWriter(tmp_path / "r.csv")
    first.finish(None)
    ReportWriter(tmp_path / "r.csv").finish(None)  # free again once the first run ended


def test_the_cli_refuses_a_report_a_live_run_holds(tmp_path):
    holder = ReportWriter(tmp_path / "r.csv")
    try:
        result = invoke("compare", "--report", tmp_path / "r.csv", "--case", "decode-mixed")
        assert result.exit_code == ExitCode.USAGE
        assert "is being written by another diffcheck run" in error_line(result)
    finally:
        holder.finish(None)


def test_reports_read_back_with_the_dtypes_they_were_written_with(tmp_path):
    report = tmp_path / "r.csv"
    result = invoke("compare", "--report", report, "--suite", "smoke", "--path", "decode",
                    "--impl", "decode:unguarded", "--mode", "eager", "--isolation", "none")
    assert result.exit_code == ExitCode.FAILURES
    df = read_report(report)
    assert list(df.columns) == COLUMNS and len(df) > 2
    assert df["first_expected"].dtype == "Int64" and df["elements_checked"].dtype == "int64"
    assert df["impl_safe"].dtype == bool and (df["first_stray"] == "").any()
    plain = pd.read_csv(report)  # a run id never reads as a number
    assert plain["run_id"].map(type).eq(str).all()


def test_an_interrupted_run_says_so_in_junit_and_the_summary(tmp_path, monkeypatch):
    import diffcheck.executors as executors

    real, calls = executors.run_job, []

    def interrupted_on_third(job, settings):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job, settings)

    monkeypatch.setattr(executors, "run_job", interrupted_on_third)
    junit, summary = tmp_path / "j.xml", tmp_path / "s.md"
    result = invoke("compare", "--report", tmp_path / "r.csv", "--isolation", "none",
                    "--junit", junit, "--summary-md", summary, "--mode", "eager")
    assert result.exit_code == ExitCode.INTERRUPTED
    text = summary.read_text()
    assert "INCOMPLETE: interrupted after 2 of" in text and "passed" not in text
    root = ET.parse(junit).getroot()
    assert root.find("./testsuite/testcase[@name='run complete']/error") is not None
    assert int(root.get("errors")) == 1


# -- bad input ----------------------------------------------------------------------------------
def test_several_case_files_after_one_option_and_a_folder_of_them(tmp_path):
    folder = tmp_path / "cases"
    assert invoke("export", folder, "--suite", "edge", "--path", "decode").exit_code == 0
    files = sorted(folder.glob("*.npz"))
    report = tmp_path / "r.csv"
    result = invoke("compare", "--cases", files[0], files[1], "--impl", "decode:pid",
                    "--mode", "eager", "--report", report, "--isolation", "none")
    assert result.exit_code == 0, result.output
    assert len(read_report(report)) == 2
    result = invoke("compare", "--cases", folder, "--impl", "decode:pid", "--mode", "eager",
                    "--report", report, "--isolation", "none")
    assert result.exit_code == 0 and len(read_report(report)) == len(files)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("compare", "--cases", empty, "--report", report)
    assert result.exit_code == ExitCode.USAGE and "no .npz case files" in error_line(result)


@pytest.mark.parametrize("args, text", [
    (["compare", "--graph-size", "100000000", "--suite", "replay"], "--graph-size 100000000 needs"),
    (["bench", "--device", "cpu", "--k", "1000000000"], "past the case size limit"),
])
def test_sizes_beyond_memory_are_refused_before_any_work(args, text, tmp_path):
    result = invoke(*args, *(["--report", tmp_path / "r.csv"] if args[0] == "compare" else []))
    assert result.exit_code == ExitCode.USAGE
    assert text in error_line(result)


SLOW_KERNEL = '''
import time

from diffcheck.kernels.decode import decode_pid


def slow(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices, BLOCK_SIZE=1,
         NUM_TOPK_TOKENS=2048, BLOCK_N=1024, out=None, fill=0):
    time.sleep(0.3)
    return decode_pid(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                      BLOCK_SIZE, NUM_TOPK_TOKENS, BLOCK_N, out=out, fill=fill)
'''


def _stopped_run(tmp_path, how: int):
    """A compare over a slow kernel, stopped by signal ``how`` once a row is written."""
    import signal
    import subprocess
    import sys
    import time

    kernel = tmp_path / "slow.py"
    kernel.write_text(SLOW_KERNEL)
    report, junit, summary = tmp_path / "r.csv", tmp_path / "j.xml", tmp_path / "s.md"
    run = subprocess.Popen(
        [sys.executable, "-m", "diffcheck", "compare", "--impl", f"{kernel}:slow", "--path",
         "decode", "--suite", "smoke", "--suite", "edge", "--device", "cpu", "--mode", "eager",
         "--report", report, "--junit", junit, "--summary-md", summary],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
            not report.exists() or len(report.read_text().splitlines()) < 2):
        time.sleep(0.2)
    run.send_signal(how)
    if how == signal.SIGKILL:
        run.wait(60)
    else:
        run.communicate(timeout=60)
    return run, report, junit, summary


def test_sigterm_stops_a_run_as_ctrl_c_does_and_every_report_says_incomplete(tmp_path):
    """A cancelled CI job: exit 2, the rows kept, JUnit and the summary INCOMPLETE (never an
    earlier run's passing files), the report's marker read by `report summarize`, `regress`
    and `merge`."""
    import signal

    junit = tmp_path / "j.xml"
    junit.write_text("<testsuites tests='1' failures='0' errors='0'/>")  # an earlier pass
    run, report, junit, summary = _stopped_run(tmp_path, signal.SIGTERM)
    assert run.returncode == ExitCode.INTERRUPTED, run.stderr
    rows = pd.read_csv(report)
    assert 1 <= len(rows) < 40
    root = ET.parse(junit).getroot()
    assert root.find("./testsuite/testcase[@name='run complete']/error") is not None
    assert "INCOMPLETE: interrupted after" in summary.read_text()
    said = invoke("report", "summarize", report)
    assert "INCOMPLETE: interrupted after" in said.output and "passed" not in said.output
    gate = invoke("report", "regress", report, report)
    assert gate.exit_code == ExitCode.FAILURES and "incomplete run" in gate.output
    merged = invoke("report", "merge", report, "-o", tmp_path / "m.csv")
    assert merged.exit_code == ExitCode.USAGE and not (tmp_path / "m.csv").exists()


def test_a_run_killed_outright_leaves_reports_that_say_it_never_finished(tmp_path):
    import signal

    _, report, junit, summary = _stopped_run(tmp_path, signal.SIGKILL)
    said = invoke("report", "summarize", report)
    assert "INCOMPLETE: the run that wrote it never finished" in said.output
    root = ET.parse(junit).getroot()
    assert "running: the run has not finished" in root.find(".//error").get("message")
    assert summary.read_text().splitlines()[-2:] != [] and "passed" not in summary.read_text()


def test_a_complete_run_reads_as_complete(tmp_path):
    report = tmp_path / "r.csv"
    assert invoke("compare", "--report", report, "--suite", "smoke", "--path", "decode",
                  "--impl", "decode:pid", "--mode", "eager").exit_code == 0
    said = invoke("report", "summarize", report)
    assert "## diffcheck: passed" in said.output
    assert invoke("report", "regress", report, report).exit_code == 0
