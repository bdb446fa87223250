"""The command line: exit codes, one-line errors, the CSV report and reproduce commands."""

import shlex
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from diffcheck.cli import app
from diffcheck.errors import ExitCode
from diffcheck.impls import builtin
from diffcheck.paths import known_paths
from diffcheck.report import COLUMNS
from diffcheck.selection import DEFAULT_SUITES


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.slow  # the whole default command: once, in the pinned environment
def test_compare_with_defaults_passes_and_writes_the_report(tmp_path):
    report = tmp_path / "r.csv"
    result = invoke("compare", "--device", "cpu", "--report", report)
    assert result.exit_code == ExitCode.OK, result.output
    df = pd.read_csv(report)
    assert list(df.columns) == COLUMNS
    assert set(df["status"]) == {"pass", "stale_sensitive"}
    assert not df[df["status"] == "stale_sensitive"]["well_formed"].any()
    assert set(df["implementation"]) == {i.name for i in builtin().values() if i.safe}
    assert set(df["path"]) == set(known_paths())
    assert set(df["mode"]) == {"eager", "capture", "replay"}
    assert set(df["suite"]) == set(DEFAULT_SUITES)
    assert "rows: " in result.output and "passed" in result.output


def test_failure_exits_1_and_the_reproduce_command_reproduces_the_row(tmp_path):
    report = tmp_path / "r.csv"
    result = invoke("compare", "--path", "decode", "--suite", "edge", "--impl",
                    "decode:unguarded", "--case", "*odd-minus-one", "--mode", "eager",
                    "--report", report)
    assert result.exit_code == ExitCode.FAILURES, result.output
    (row,) = pd.read_csv(report).to_dict("records")
    assert row["status"] == "oob_read" and row["first_mismatch"] == "request 0, column 0"
    assert row["first_oob_read"].startswith("kv_indices[-1] (4 bytes before its start)")
    again = tmp_path / "again.csv"
    words = shlex.split(row["reproduce"])[1:] + ["--report", str(again)]
    assert invoke(*words).exit_code == ExitCode.FAILURES
    (same,) = pd.read_csv(again).to_dict("records")
    for column in ("case_id", "status", "mismatches", "first_mismatch", "first_actual",
                   "first_oob_read", "oob_read_found_by"):
        assert same[column] == row[column]


def test_fail_on_decides_what_fails(tmp_path):
    args = ["compare", "--path", "decode", "--suite", "edge", "--impl", "decode:unguarded",
            "--case", "*odd-minus-one", "--report", tmp_path / "r.csv"]
    assert invoke(*args, "--fail-on", "stray_write,error").exit_code == ExitCode.OK
    assert invoke(*args, "--fail-on", "oob_read").exit_code == ExitCode.FAILURES
    assert "unknown status 'bogus'" in error_line(invoke(*args, "--fail-on", "bogus"))


@pytest.mark.parametrize("args, text", [
    (["--impl", "decode:pdi"], "unknown implementation 'decode:pdi'; known: decode:guarded"),
    (["--suite", "nightly"], "unknown suite 'nightly'; known: smoke, smoke-2048, edge"),
    (["--path", "pefill"], "unknown path 'pefill'; known: decode, mtp, prefill, blocktable"),
    (["--mode", "warp"], "unknown mode 'warp'; known: eager, capture, replay, graph, all"),
    (["--invalid-fill", "7"], "--invalid-fill must be 0 or -1, got 7"),
    (["--path", "mtp", "--impl", "decode:pid"], "--impl decode:pid does not follow --path mtp"),
    (["--max-cases", "0"], "--max-cases must be at least 1"),
    (["--fillings", "3"], "or one of 1, 2, 4, got 3"),
])
def test_usage_errors_exit_4_with_one_line(args, text, tmp_path):
    result = invoke("compare", "--report", tmp_path / "r.csv", *args)
    assert result.exit_code == ExitCode.USAGE
    assert text in error_line(result)


def test_corrupt_case_file_exits_4(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 64)
    result = invoke("compare", "--cases", bad, "--report", tmp_path / "r.csv")
    assert result.exit_code == ExitCode.USAGE
    assert f"case file {bad}: not a readable .npz archive" in error_line(result)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_exits_4(tmp_path):
    result = invoke("compare", "--device", "cuda", "--report", tmp_path / "r.csv")
    assert result.exit_code == ExitCode.USAGE
    assert "torch sees no CUDA/ROCm device" in error_line(result)


def test_nothing_selected_exits_5(tmp_path):
    result = invoke("compare", "--case", "no-such-case", "--report", tmp_path / "r.csv")
    assert result.exit_code == ExitCode.NO_ROWS
    assert "nothing to run" in error_line(result)


def test_exported_cases_replay_with_their_stored_fill(tmp_path):
    out = tmp_path / "cases"
    result = invoke("export", out, "--suite", "edge", "--path", "mtp", "--invalid-fill", "-1")
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.npz"))
    assert len(files) == 8
    report = tmp_path / "r.csv"
    args = ["compare", "--report", report, "--impl", "mtp:guarded", "--mode", "eager"]
    for f in files[:3]:
        args += ["--cases", f]
    assert invoke(*args).exit_code == ExitCode.OK
    df = pd.read_csv(report)
    assert len(df) == 3 and set(df["fill"]) == {-1} and set(df["suite"]) == {"edge"}
    assert all("--cases" in cmd for cmd in df["reproduce"])


def test_list_shows_suites_and_implementations():
    result = invoke("list")
    assert result.exit_code == 0
    assert "suite smoke" in result.output and "suite edge" in result.output
    assert "decode:unguarded     UNSAFE" in result.output
    assert "call: (qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices, " \
           "BLOCK_SIZE=1, NUM_TOPK_TOKENS=K, out=None) -> out" in result.output
    cases = invoke("list", "cases")
    assert "edge/decode-ctx-k-plus-1" in cases.output


def test_interrupt_keeps_finished_rows_and_exits_2(tmp_path, monkeypatch):
    import diffcheck.executors as executors

    real, calls = executors.run_job, []

    def interrupted_on_third(job, settings):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job, settings)

    monkeypatch.setattr(executors, "run_job", interrupted_on_third)
    report = tmp_path / "r.csv"
    result = invoke("compare", "--report", report, "--isolation", "none")
    assert result.exit_code == ExitCode.INTERRUPTED
    assert "interrupted after 2 of" in error_line(result)
    assert len(pd.read_csv(report)) == 2


def test_internal_error_exits_3_and_keeps_rows(tmp_path, monkeypatch):
    import diffcheck.runner as runner

    real, calls = runner.compare_output, []

    def broken_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the second row's first run (each row compares both runs)
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "compare_output", broken_on_second)
    report = tmp_path / "r.csv"
    result = invoke("compare", "--report", report, "--isolation", "none")
    assert result.exit_code == ExitCode.INTERNAL
    assert "internal error: RuntimeError: boom" in error_line(result)
    assert len(pd.read_csv(report)) == 1


def test_help_documents_exit_codes():
    result = invoke("compare", "--help")
    assert result.exit_code == 0
    assert "4 usage or input error" in result.output


def test_stale_sensitive_is_reported_but_fails_only_when_asked(tmp_path):
    report = tmp_path / "r.csv"
    result = invoke("compare", "--suite", "stale", "--path", "decode", "--impl", "decode:pid",
                    "--report", report)
    assert result.exit_code == 0, result.output
    df = pd.read_csv(report)
    assert "stale_sensitive" in set(df["status"])
    # the last line counts every row once: passed, stale_sensitive, failed add up
    stale, passed = (df["status"] == "stale_sensitive").sum(), (df["status"] == "pass").sum()
    assert (f"\n{len(df)} rows: {passed} passed, {stale} stale_sensitive (not failing), "
            "0 failed\n") in result.output
    strict = invoke("compare", "--suite", "stale", "--path", "decode", "--impl", "decode:pid",
                    "--report", report, "--fail-on", "stale_sensitive,mismatch")
    assert strict.exit_code == ExitCode.FAILURES


def test_details_lists_each_finding_capped_per_row(tmp_path):
    report, details = tmp_path / "r.csv", tmp_path / "d.csv"
    result = invoke("compare", "--suite", "stale", "--case", "decode-stale-rows-unwritten",
                    "--impl", "decode:unguarded", "--path", "decode", "--report", report,
                    "--details", details, "--details-max", "5", "--no-interpreter-check",
                    "--isolation", "none", "--mode", "eager")
    assert result.exit_code == ExitCode.FAILURES
    rows = pd.read_csv(details)
    assert len(rows) == 5
    assert list(rows["kind"]) == ["oob_read"] * 5
    assert set(rows["buffer"]) == {"kv_indices"} and set(rows["offset"]) == {-1}
    assert rows["location"].str.contains("reached out at request 0, column").all()


@pytest.mark.parametrize("option, value, text", [
    ("--isolation", "thread", "unknown isolation 'thread'"),
    ("--timeout", "-1", "--timeout must be 0 (no limit) or a positive number"),
    ("--timeout", "nan", "--timeout must be 0 (no limit) or a positive number"),
    ("--timeout", "inf", "--timeout must be 0 (no limit) or a positive number"),
    ("--details-max", "0", "--details-max must be at least 1"),
    ("--fail-on", ",", "names no status"),
    ("--max-cases", "many", "Invalid value for '--max-cases'"),
    ("--bogus", "1", "No such option: --bogus"),
])
def test_bad_run_options_exit_4(option, value, text, tmp_path):
    result = invoke("compare", option, value, "--report", tmp_path / "r.csv")
    assert result.exit_code == ExitCode.USAGE
    assert text in error_line(result)
    assert not (tmp_path / "r.csv").exists()  # refused before any work


@pytest.mark.parametrize("args, text", [
    (["bench", "--k", "1e9"], "Invalid value for '--k'"),
    (["compare", "--report", "{tmp}/r.csv", "--details", "{tmp}/r.csv"],
     "--details and --report are the same file"),
    (["compare", "--report", "{tmp}"], "is a directory"),
    (["compare", "--cases", "{case}", "--report", "{case}"], "is an input case file"),
    (["report", "merge"], "Missing argument"),
    (["show"], "Missing argument"),
])
def test_usage_errors_of_every_kind_exit_4_in_one_line(args, text, tmp_path):
    case = tmp_path / "c.npz"
    invoke("export", tmp_path / "cases", "--suite", "smoke", "--path", "decode")
    case.write_bytes(next((tmp_path / "cases").glob("*.npz")).read_bytes())
    result = invoke(*[a.format(tmp=tmp_path, case=case) for a in args])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert text in error_line(result)
    assert case.read_bytes()[:2] == b"PK"  # an input is never overwritten


def digest(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("args, text", [
    (["compare", "--report", "{prev}", "--details", "{file}/d.csv"], "is a file, not a folder"),
    (["compare", "--report", "{prev}", "--junit", "{link}"], "is a symbolic link"),
    (["compare", "--report", "{link}"], "is a symbolic link"),
    (["compare", "--report", "{prev}", "--junit", "/dev/null"], "is not a regular file"),
    (["compare", "--report", "{prev}", "--summary-md", "{fifo}"], "is not a regular file"),
    (["report", "merge", "{prev}", "-o", "{file}/m.csv"], "is a file, not a folder"),
    (["fuzz", "--impl", "decode:pid", "--save-to", "{file}", "--budget", "60s"],
     "--save-to {file} is a file; give a folder"),
    (["export", "{file}", "--suite", "edge", "--path", "decode"], "is a file; give a folder"),
])
def test_outputs_are_checked_before_any_work_and_no_earlier_file_is_touched(args, text,
                                                                           tmp_path):
    """Every output is validated at start: exit 4 in one line, fast, and the earlier report,
    the link's target and the files around keep every byte."""
    import os
    import time

    prev, file, target = tmp_path / "prev.csv", tmp_path / "plain", tmp_path / "target.csv"
    prev.write_text("an earlier report\n")
    file.write_text("a regular file\n")
    target.write_text("the link's target\n")
    (tmp_path / "link.xml").symlink_to(target)
    os.mkfifo(tmp_path / "fifo")
    before = {p: digest(p) for p in (prev, file, target)}
    started = time.monotonic()
    result = invoke(*[a.format(prev=prev, file=file, link=tmp_path / "link.xml",
                               fifo=tmp_path / "fifo") if isinstance(a, str) else a
                      for a in args])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert text.format(file=file) in error_line(result)
    assert time.monotonic() - started < 10
    assert {p: digest(p) for p in before} == before


def test_a_full_device_is_exit_4_naming_the_file(tmp_path, monkeypatch):
    import errno

    from diffcheck.report import LockedCsv

    def full(self, values):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(LockedCsv, "append_values", full)
    result = invoke("compare", "--report", tmp_path / "r.csv", "--suite", "smoke", "--path",
                    "decode", "--impl", "decode:pid", "--mode", "eager", "--isolation", "none")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"cannot write {tmp_path / 'r.csv'}: No space left on device" in error_line(result)


def test_merge_refuses_a_csv_that_is_not_a_whole_report(tmp_path):
    whole = tmp_path / "whole.csv"
    assert invoke("compare", "--report", whole, "--suite", "smoke", "--path", "decode",
                  "--impl", "decode:pid", "--mode", "eager").exit_code == 0
    part = tmp_path / "part.csv"
    pd.read_csv(whole)[["path", "implementation", "mode", "case_id", "fill", "status"]].assign(
        case_id=lambda d: d.case_id + "-x").to_csv(part, index=False)
    merged = invoke("report", "merge", whole, part, "-o", tmp_path / "m.csv")
    assert merged.exit_code == ExitCode.USAGE and "lacks the report columns" in \
        error_line(merged)
    assert not (tmp_path / "m.csv").exists()


def test_export_keeps_an_edited_case_file_unless_forced(tmp_path):
    folder = tmp_path / "cases"
    assert invoke("export", folder, "--suite", "edge", "--path", "decode").exit_code == 0
    again = invoke("export", folder, "--suite", "edge", "--path", "decode")
    assert again.exit_code == 0, again.output  # the same cases: nothing to keep
    edited = sorted(folder.glob("*.npz"))[0]
    other = sorted(folder.glob("*.npz"))[1]
    edited.write_bytes(other.read_bytes())
    kept = digest(edited)
    refused = invoke("export", folder, "--suite", "edge", "--path", "decode")
    assert refused.exit_code == ExitCode.USAGE
    assert f"{edited} holds another case" in error_line(refused)
    assert digest(edited) == kept and not list(folder.glob(".*"))
    forced = invoke("export", folder, "--suite", "edge", "--path", "decode", "--force")
    assert forced.exit_code == 0 and digest(edited) != kept


def test_a_case_file_named_twice_runs_once(tmp_path):
    """`--cases C C`, a folder and a file in it, or a copy of a file: one row per case, so
    the report stays one `report regress` and `merge` accept."""
    folder = tmp_path / "cases"
    invoke("export", folder, "--suite", "edge", "--path", "decode")
    case = sorted(folder.glob("*.npz"))[0]
    for other in sorted(folder.glob("*.npz"))[1:]:
        other.unlink()
    copy = tmp_path / "copy.npz"
    copy.write_bytes(case.read_bytes())
    report = tmp_path / "r.csv"
    done = invoke("compare", "--cases", case, "--cases", case, "--cases", folder,
                  "--cases", copy, "--impl", "decode:pid", "--mode", "eager",
                  "--report", report)
    assert done.exit_code == 0, done.output
    rows = pd.read_csv(report)
    assert len(rows) == 1 and not rows.duplicated(["case_id", "implementation", "mode"]).any()


def test_call_runs_a_case_plainly_for_an_external_checker():
    ok = invoke("call", "--path", "decode", "--suite", "edge", "--case", "*odd-beyond",
                "--impl", "decode:guarded", "--device", "cpu")
    assert ok.exit_code == 0, ok.output
    assert "edge/decode-odd-beyond decode:guarded: 559 elements checked, 0 mismatched, 0 " \
           "written outside the regions" in ok.output
    # every buffer its own allocation, no sandbox: the unguarded kernel reads whatever lies
    # before kv_indices, and its output is wrong
    bad = invoke("call", "--path", "decode", "--suite", "edge", "--case", "*odd-minus-one",
                 "--impl", "decode:unguarded", "--device", "cpu", "--mode", "replay")
    assert bad.exit_code == ExitCode.FAILURES and "mismatched" in bad.output


def test_reproduce_commands_become_plain_calls_and_memcheck_commands():
    from diffcheck.report import ReportRow, confirm_command, plain_call

    command = ("diffcheck compare --path decode --suite edge --case edge/decode-ctx-k --seed 0 "
               "--impl decode:unguarded --mode capture --invalid-fill 0 --device cuda "
               "--fillings 1 --no-interpreter-check")
    assert plain_call(command) == ("diffcheck call --path decode --suite edge --case "
                                   "edge/decode-ctx-k --seed 0 --impl decode:unguarded "
                                   "--invalid-fill 0 --device cuda")
    base = {f: "" for f in ReportRow.__dataclass_fields__}
    row = ReportRow(**{**base, "status": "oob_read", "device": "cuda:NVIDIA H200",
                       "reproduce": command})
    assert confirm_command(row).startswith(
        "PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck diffcheck call ")
    assert confirm_command(ReportRow(**{**base, "status": "mismatch",
                                        "device": "cuda:H200", "reproduce": command})) == ""
    assert confirm_command(ReportRow(**{**base, "status": "oob_read",
                                        "device": "cpu:triton-interpreter",
                                        "reproduce": command})) == ""


def _run_script(tmp_path, source: str) -> subprocess.CompletedProcess:
    """Run ``source`` (dedented) as a Python program of its own, its output captured."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_stop_raised_inside_a_gc_callback_is_not_lost(tmp_path, signum):
    """Python ignores an exception raised in a garbage-collector callback: a SIGTERM or
    Ctrl-C landing there (hypothesis's gc callback, while fuzz shrinks) was printed and
    forgotten, and fuzz went on to exit 1. The stop is delivered again and ends the program."""
    done = _run_script(tmp_path, f"""
        import gc, os, signal, time
        from diffcheck.stops import install_stop_handlers
        install_stop_handlers()
        def busy(phase, info):
            if phase == "start" and not busy.done:
                busy.done = True
                os.kill(os.getpid(), signal.{signum})
                end = time.time() + 0.3
                while time.time() < end:  # the handler runs here, inside the callback
                    pass
        busy.done = False
        gc.callbacks.append(busy)
        try:
            gc.collect()
            for _ in range(100):
                time.sleep(0.02)
            print("the stop was lost")
        except KeyboardInterrupt as e:
            print("stopped:", repr(e))
    """)
    assert "stopped: KeyboardInterrupt" in done.stdout, done.stdout + done.stderr
    if signum == "SIGTERM":
        assert "terminated (SIGTERM)" in done.stdout


def test_debug_prints_the_whole_traceback_of_a_raising_call_and_the_row_keeps_one_line(
        tmp_path):
    """DIFFCHECK_DEBUG=1: where a call raised is on stderr (from the worker too), for errors
    whose one line says too little (an empty AssertionError); the CSV keeps one line."""
    import os
    from pathlib import Path

    kernel = Path(__file__).parent / "broken_kernels.py"
    report = tmp_path / "r.csv"
    done = subprocess.run(
        [sys.executable, "-m", "diffcheck", "compare", "--impl", f"{kernel}:decode_raises",
         "--path", "decode", "--suite", "smoke", "--mode", "eager", "--case", "*mixed",
         "--report", str(report), "--quiet"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "DIFFCHECK_DEBUG": "1"})
    assert done.returncode == ExitCode.FAILURES, done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert "broken_kernels.py" in done.stderr and "in decode_raises" in done.stderr
    row = pd.read_csv(report, keep_default_na=False).iloc[0]
    assert row["status"] == "error" and "\n" not in row["error"]
    assert row["error"].startswith("ValueError: unsupported NUM_TOPK_TOKENS")


def test_a_kernels_own_keyboard_interrupt_in_a_del_is_not_made_a_stop(tmp_path):
    """Only the stop diffcheck's handlers raised is sent again: a KeyboardInterrupt an
    object raises in its own ``__del__`` stays the ignored exception it always was."""
    done = _run_script(tmp_path, """
        import time
        from diffcheck.stops import install_stop_handlers
        install_stop_handlers()
        class Noisy:
            def __del__(self):
                raise KeyboardInterrupt("from __del__")
        try:
            Noisy()
            time.sleep(0.5)
            print("went on")
        except KeyboardInterrupt as e:
            print("stopped:", repr(e))
    """)
    assert "went on" in done.stdout, done.stdout + done.stderr
    assert "from __del__" in done.stderr  # printed as ignored, as Python always did



#: options whose meaning differs between the commands that take them
DIFFERENT = {("fuzz", "impl"), ("fuzz", "path"), ("fuzz", "seed"), ("fuzz", "mode"),
             ("call", "mode"), ("call", "impl"), ("call", "suite"), ("fuzz", "devices")}


def test_an_option_that_commands_share_has_one_help_and_one_default():
    """compare, fuzz and call declared their shared options separately and their help drifted
    (issue 24): each is now declared once in diffcheck/options.py."""
    import typer.main

    group = typer.main.get_command(app)
    seen: dict[str, tuple[str, object, str]] = {}
    shared = 0
    for command in ("compare", "fuzz", "call"):
        for param in group.commands[command].params:
            if (command, param.name) in DIFFERENT:
                continue
            mine = (getattr(param, "help", None), param.default, command)
            if param.name in seen:
                shared += 1
                assert seen[param.name][:2] == mine[:2], (param.name, seen[param.name], mine)
            else:
                seen[param.name] = mine
    assert shared >= 15  # the check reaches the shared options
    # the default --fail-on said "mismatch and everything more severe"; it is divergence
    from diffcheck.status import DEFAULT_FAIL_ON, Status
    assert min(DEFAULT_FAIL_ON, key=lambda s: s.severity) == Status.DIVERGENCE
    fail_on = next(p for p in group.commands["compare"].params if p.name == "fail_on")
    assert fail_on.show_default.startswith("divergence")


def _readme_options_tables() -> list[dict[str, tuple[str, str]]]:
    """The README's option tables (compare's, then fuzz's): {--option: (meaning, default)};
    a row naming several options ("as for compare") gives each of them."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    tables = []
    for table in text.split("| option | meaning | default |\n")[1:]:
        rows = {}
        for line in table.splitlines()[1:]:
            if not line.startswith("|"):
                break
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))]
            for name in re.findall(r"`(--[a-z-]+)", cells[0]):
                rows[name] = (cells[1], cells[-1])
        tables.append(rows)
    return tables


def _agrees(param, shown: str) -> bool | None:
    """Whether a README default cell says the option's default; None when it says it in
    words (each path's own, on a GPU, as for compare, ...)."""
    literal = shown.strip("`")
    if shown == "required":
        return param.required
    if shown in ("none", "on", "off"):
        expected = {"none": None, "on": True, "off": False}[shown]
        return param.default in ((expected, []) if expected is None else (expected,))
    if shown.startswith("`") and shown.endswith("`") and "`" not in literal:
        return str(param.default) == literal
    if shown.replace(".", "", 1).isdigit():
        if param.default is None:  # a default that depends on another option
            return str(shown) in str(param.show_default)
        return float(param.default) == float(shown)
    return None


@pytest.mark.parametrize("command, table, at_least", [("compare", 0, 15), ("fuzz", 1, 8)])
def test_the_readme_lists_every_option_with_its_real_default(command, table, at_least):
    """Issue 24: the README's option tables and the defaults the code uses cannot drift."""
    import typer.main

    params = typer.main.get_command(app).commands[command].params
    rows = _readme_options_tables()[table]
    options = {p.opts[0]: p for p in params if p.opts[0].startswith("--")
               and p.opts[0] != "--help"}
    assert set(options) == set(rows), set(options) ^ set(rows)
    said = {name: _agrees(param, rows[name][1]) for name, param in options.items()}
    wrong = [(n, options[n].default, rows[n][1]) for n, ok in said.items() if ok is False]
    assert not wrong, wrong
    assert sum(ok is True for ok in said.values()) >= at_least, said
