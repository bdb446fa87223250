"""The pre-merge gate: outside implementations, the Python API, CI reports, regressions,
shards, recorded cases and `show`."""

import pickle
import re
import shlex
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import suite_cases
from test_cli import error_line, invoke

from diffcheck.api import assert_passes, check
from diffcheck.casefile import load_case
from diffcheck.ci_formats import MARKDOWN_LIMIT, markdown_summary, write_junit
from diffcheck.errors import CaseFileError, DiffcheckError, ExitCode
from diffcheck.impls import find
from diffcheck.record import CaseRecorder
from diffcheck.regress import KEY

OUTSIDE_KERNEL = textwrap.dedent('''
    """An engine's decode convert, written outside diffcheck (pid rows, guarded)."""
    import torch
    import triton
    import triton.language as tl


    @triton.jit
    def _convert(kv_indptr, page_kv_indptr, kv_indices, token_indices, out, num_kv, stride0,
                 K: tl.constexpr, BLOCK: tl.constexpr):
        r = tl.program_id(0)
        kv_start = tl.load(kv_indptr + r)
        ctx = tl.load(kv_indptr + r + 1) - kv_start
        start = tl.load(page_kv_indptr + r)
        length = tl.load(page_kv_indptr + r + 1) - start
        for c0 in range(0, K, BLOCK):
            cols = c0 + tl.arange(0, BLOCK)
            inside = cols < length
            p = tl.load(token_indices + r * stride0 + cols, mask=inside, other=-1)
            ok = inside & (p >= 0) & (p < ctx) & (kv_start + p < num_kv)
            slot = tl.load(kv_indices + kv_start + tl.where(ok, p, 0), mask=ok, other=0)
            tl.store(out + start + cols, tl.where(ok, slot, 0), mask=inside)


    def triton_convert_req_index_to_global_index(qo_indptr, kv_indptr, page_kv_indptr,
                                                 kv_indices, token_indices, BLOCK_SIZE=1,
                                                 NUM_TOPK_TOKENS=2048, BLOCK_N=128, out=None):
        rows = kv_indptr.shape[0] - 1
        if out is None:
            out = torch.empty(rows * NUM_TOPK_TOKENS, dtype=torch.int32,
                              device=kv_indptr.device)
        _convert[(rows,)](kv_indptr, page_kv_indptr, kv_indices, token_indices, out,
                          kv_indices.numel(), token_indices.stride(0),
                          K=NUM_TOPK_TOKENS, BLOCK=BLOCK_N)
        return out


    def wrong_signature(kv_indptr, kv_indices):
        return kv_indices
''')


@pytest.fixture
def kernel_file(tmp_path):
    path = tmp_path / "engine_kernels.py"
    path.write_text(OUTSIDE_KERNEL)
    return path


def test_a_kernel_file_outside_the_package_is_checked_in_every_mode(kernel_file, tmp_path):
    report = tmp_path / "r.csv"
    result = invoke("compare", "--impl", f"{kernel_file}:triton_convert_req_index_to_global_index",
                    "--path", "decode", "--mode", "all", "--case", "decode-mixed",
                    "--case", "decode-grow-shrink", "--report", report)
    assert result.exit_code == ExitCode.OK, result.output
    df = pd.read_csv(report)
    assert set(df["mode"]) == {"eager", "capture", "replay"}
    assert set(df["status"]) == {"pass"} and not df["impl_safe"].any()
    assert df["reproduce"].str.contains("engine_kernels.py:triton_convert").all()
    again = shlex.split(df["reproduce"].iloc[-1])[1:] + ["--report", tmp_path / "again.csv"]
    assert invoke(*again).exit_code == ExitCode.OK
    rerun = pd.read_csv(tmp_path / "again.csv")  # a replay row reruns its whole scenario
    assert df["case_id"].iloc[-1] in set(rerun["case_id"]) and set(rerun["status"]) == {"pass"}


@pytest.mark.parametrize("target, text", [
    ("{file}:wrong_signature", "does not fit the decode call"),
    ("{file}:no_such_function", "has no callable 'no_such_function'"),
    ("{dir}/missing.py:fn", "does not exist"),
    ("{dir}/broken.py:fn", "does not import (ZeroDivisionError"),
    ("no_such_module_xyz:fn", "no_such_module_xyz does not import (ModuleNotFoundError"),
])
def test_outside_implementations_that_cannot_be_used_exit_4(kernel_file, tmp_path, target,
                                                            text):
    (tmp_path / "broken.py").write_text("x = 1 / 0\n")
    impl = target.format(file=kernel_file, dir=tmp_path)
    result = invoke("compare", "--impl", impl, "--path", "decode", "--report",
                    tmp_path / "r.csv")
    assert result.exit_code == ExitCode.USAGE
    assert text in error_line(result)


def test_an_outside_implementation_needs_its_path(kernel_file, tmp_path):
    result = invoke("compare", "--impl", f"{kernel_file}:triton_convert_req_index_to_global_index",
                    "--report", tmp_path / "r.csv")
    assert result.exit_code == ExitCode.USAGE
    assert "add --path decode or --path mtp" in error_line(result)


def test_python_api_returns_a_frame_and_the_assertion_lists_the_worst_rows():
    good = check("decode:pid", path="decode", suites=["smoke"], modes="eager")
    assert len(good) == len(suite_cases("decode", "smoke")) and set(good["status"]) == {"pass"}
    assert_passes(good)
    bad = check("broken_kernels:decode_wrong_fill", path="decode", suites=["edge"])
    with pytest.raises(AssertionError) as failure:
        assert_passes(bad, worst=2)
    message = str(failure.value)
    assert "rows failed" in message and "- mismatch: edge/decode-odd" in message
    assert "reproduce: diffcheck compare" in message and "... and" in message


@pytest.mark.parametrize("arguments, message", [
    ({"timeout": -1}, "--timeout must be 0 (no limit) or a positive number"),
    ({"timeout": float("nan")}, "--timeout must be 0"),
    ({"invalid_fill": 7}, "--invalid-fill must be 0 or -1, got 7"),
    ({"modes": "sideways"}, "unknown mode 'sideways'"),
    ({"modes": ["eager", "bogus"]}, "unknown mode 'bogus'"),
    ({"suites": [3]}, "suite and case names are strings, got 3"),
    ({"suites": "nosuch"}, "unknown suite 'nosuch'"),
])
def test_the_api_refuses_what_the_cli_refuses_with_the_same_message(arguments, message):
    with pytest.raises(DiffcheckError, match=re.escape(message)):
        check("decode:pid", path="decode", **{"suites": ["smoke"], **arguments})


def test_the_api_takes_one_suite_name_and_a_list_of_modes():
    report = check("decode:pid", path="decode", suites="smoke", modes=["eager", "capture"],
                   cases=())
    assert set(report["suite"]) == {"smoke"} and set(report["mode"]) == {"eager", "capture"}
    assert len(report) == 2 * len(suite_cases("decode", "smoke"))


EXITING_IMPORTS = {
    "exits.py": ("import sys\nsys.exit(0)\n", "it called sys.exit(0) while importing"),
    "interrupts.py": ("raise KeyboardInterrupt\n", "does not import (KeyboardInterrupt"),
    "ends.py": ("import os\nos._exit(0)\n", "it ended its process with exit status 0"),
    "ends_badly.py": ("import os\nos._exit(5)\n", "exit status 5 while importing"),
}


@pytest.mark.parametrize("command", ["compare", "fuzz", "call", "api"])
@pytest.mark.parametrize("file", EXITING_IMPORTS)
def test_a_module_that_exits_while_importing_does_not_import(tmp_path, command, file):
    """sys.exit, os._exit or KeyboardInterrupt at import is "does not import" (exit 4), in
    every command and the API, never an exit 0 with no rows or an 'interrupted' run."""
    source, text = EXITING_IMPORTS[file]
    (tmp_path / file).write_text(source)
    impl = f"{tmp_path / file}:fn"
    if command == "api":
        with pytest.raises(DiffcheckError, match=re.escape(text)):
            check(impl, path="decode", suites=["smoke"])
        return
    extra = {"compare": ["--report", tmp_path / "r.csv"],
             "fuzz": ["--budget", "5s", "--save-to", tmp_path / "found"],
             "call": ["--suite", "smoke"]}[command]
    done = subprocess.run([sys.executable, "-m", "diffcheck", command, "--impl", impl,
                           "--path", "decode", "--device", "cpu", *map(str, extra)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr
    assert text in done.stderr, done.stderr


@pytest.fixture(scope="module")
def mixed_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("mixed") / "r.csv"
    invoke("compare", "--path", "decode", "--suite", "edge", "--impl", "decode:pid",
           "--impl", "decode:unguarded", "--report", path)
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def test_junit_xml_parses_back_with_one_case_per_row(mixed_report, tmp_path):
    xml = write_junit(mixed_report, tmp_path / "j.xml")
    root = ET.parse(xml).getroot()
    cases = root.findall("./testsuite/testcase")
    assert root.tag == "testsuites" and len(cases) == len(mixed_report)
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == (mixed_report["status"] == "oob_read").sum() == int(
        root.get("failures"))
    assert "kv_indices" in failed[0].find("failure").get("message")
    assert "reproduce: diffcheck compare" in failed[0].find("failure").text


def test_junit_holds_control_characters_of_a_kernel_message_as_valid_xml(mixed_report,
                                                                         tmp_path):
    """A kernel's error message with an ANSI colour (ESC) or a NUL still gives a file every
    XML parser reads; the characters are written as \\xNN."""
    hostile = mixed_report.copy()
    hostile["detail"] = "\x1b[31mRuntimeError: boom\x1b[0m\x00 \udcff"
    hostile["case_id"] = hostile["case_id"] + "\x07"
    xml = write_junit(hostile, tmp_path / "j.xml")
    root = ET.parse(xml).getroot()
    failed = [c for c in root.iter("failure")]
    assert failed and "\\x1b[31mRuntimeError: boom" in failed[0].text
    assert all(c.get("name").endswith("\\x07") for c in root.iter("testcase"))


def test_markdown_summary_stays_small_for_10000_rows(mixed_report):
    big = pd.concat([mixed_report] * (10_000 // len(mixed_report) + 1), ignore_index=True)
    big = big.head(10_000).assign(case_id=[f"edge/case-{i}" for i in range(10_000)])
    text = markdown_summary(big)
    assert len(text.encode()) < MARKDOWN_LIMIT
    assert text.startswith("## diffcheck: FAILED") and "| decode | `decode:unguarded` |" in text
    assert "### Worst rows" in text and "`diffcheck compare" in text


def test_regress_exits_1_on_a_planted_regression_and_0_on_identical_reports(mixed_report,
                                                                           tmp_path):
    base, head = tmp_path / "base.csv", tmp_path / "head.csv"
    mixed_report.to_csv(base, index=False)
    mixed_report.to_csv(head, index=False)
    assert invoke("report", "regress", base, head).exit_code == ExitCode.OK
    planted = mixed_report.copy()
    at = planted.index[planted["status"] == "pass"][0]
    planted.loc[at, "status"] = "mismatch"
    planted.to_csv(head, index=False)
    result = invoke("report", "regress", base, head)
    assert result.exit_code == ExitCode.FAILURES
    assert f"worse: {planted.loc[at, 'case_id']}" in result.output and "pass -> mismatch" in \
        result.output
    assert invoke("report", "regress", head, base).exit_code == ExitCode.OK  # only better


@pytest.mark.slow  # every shard of the default selection: once, in the pinned environment
def test_shards_partition_the_rows_exactly(tmp_path):
    parts = []
    selection = ("--suite", "edge", "--suite", "replay", "--mode", "all", "--path", "mtp")
    for i in (1, 2, 3):
        report = tmp_path / f"s{i}.csv"
        result = invoke("compare", *selection, "--shard", f"{i}/3", "--report", report)
        assert result.exit_code == ExitCode.OK, result.output
        parts.append(report)
    whole = tmp_path / "whole.csv"
    invoke("compare", *selection, "--report", whole)
    merged = tmp_path / "merged.csv"
    assert invoke("report", "merge", *parts, "-o", merged).exit_code == ExitCode.OK
    keys = [set(map(tuple, pd.read_csv(p)[KEY].values.tolist())) for p in parts]
    assert all(keys) and not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    expected = set(map(tuple, pd.read_csv(whole)[KEY].values.tolist()))
    assert set(map(tuple, pd.read_csv(merged)[KEY].values.tolist())) == expected
    assert invoke("report", "merge", parts[0], parts[0], "-o", merged).exit_code == \
        ExitCode.USAGE


def test_a_recorded_call_replays_bit_identically(tmp_path):
    case = next(c for c in suite_cases("decode", "smoke") if c.name == "decode-strided")
    kernel = find("decode:guarded").load()
    recorder = CaseRecorder("decode", tmp_path, every=2, limit=1)
    convert = recorder.wrap(kernel)
    args = list(case.kernel_inputs().values())
    size = (case.inputs["kv_indptr"].numel() - 1) * case.k
    outs = [convert(*args, NUM_TOPK_TOKENS=case.k, out=torch.zeros(size, dtype=torch.int32))
            for _ in range(4)]
    assert recorder.calls == 4 and len(recorder.saved) == 1  # every 2nd call, limit 1
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    loaded = load_case(recorder.saved[0])
    for name, tensor in case.inputs.items():
        assert torch.equal(loaded.inputs[name], tensor), name
    assert loaded.columns == case.columns and loaded.k == case.k
    replayed = kernel(*loaded.kernel_inputs().values(), NUM_TOPK_TOKENS=loaded.k,
                      out=torch.zeros(size, dtype=torch.int32))
    assert torch.equal(replayed, outs[0])
    result = invoke("compare", "--cases", recorder.saved[0], "--impl", "decode:guarded",
                    "--path", "decode", "--mode", "all", "--report", tmp_path / "r.csv")
    assert result.exit_code == ExitCode.OK, result.output


class _Payload:
    def __reduce__(self):
        return (open, (str(_Payload.marker), "w"))


def test_a_hostile_case_file_is_never_unpickled(tmp_path):
    _Payload.marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload()
    with hostile.open("wb") as f:
        np.savez(f, meta=np.array('{"path": "decode", "k": 256, "fill": 0}'),
                 **{"inputs/kv_indices": payload})
    assert not _Payload.marker.exists()
    with pytest.raises(CaseFileError, match="not a readable .npz|holds object data"):
        load_case(hostile)
    assert not _Payload.marker.exists()
    result = invoke("show", hostile)
    assert result.exit_code == ExitCode.USAGE and not _Payload.marker.exists()
    pickle.dumps(1)  # (pickle itself is fine; only the case loader must never use it)


def test_show_prints_sizes_and_contract_findings(tmp_path):
    invoke("export", tmp_path, "--suite", "stale", "--path", "decode")
    result = invoke("show", tmp_path / "stale-decode-stale-qo-prefill.npz")
    assert result.exit_code == ExitCode.OK, result.output
    assert "requests 8" in result.output and "token_indices      int32 [12, 256]" in \
        result.output
    assert "qo_indptr is not [0, 1, ..., R]" in result.output


def test_compare_writes_junit_and_appends_the_markdown_summary(tmp_path):
    junit, summary, report = tmp_path / "j.xml", tmp_path / "s.md", tmp_path / "r.csv"
    summary.write_text("earlier step\n")
    result = invoke("compare", "--suite", "edge", "--path", "decode", "--impl",
                    "decode:unguarded", "--case", "*odd-minus-one", "--report", report,
                    "--junit", junit, "--summary-md", summary, "--mode", "eager")
    assert result.exit_code == ExitCode.FAILURES
    assert len(ET.parse(junit).getroot().findall("./testsuite/testcase")) == 1
    text = summary.read_text()
    assert text.startswith("earlier step\n## diffcheck: FAILED (1 rows, 1 failing)")
    printed = invoke("report", "summarize", report)
    # the run's summary is the saved report's, then what the run covered of the domain
    summary_of_run, _, covered = text[len("earlier step\n"):].partition("\n### Domain coverage")
    assert printed.exit_code == ExitCode.OK and printed.output == summary_of_run
    assert covered.startswith("\n\n| path | reached | never reached |\n")
    assert "| decode | " in covered


@pytest.mark.parametrize("content, text", [
    ("a,b\n1,2\n", "not a diffcheck report (no path"),
    ("path,implementation,mode,case_id,fill,status\ndecode,x,eager,c,0,exploded\n",
     "unknown status 'exploded'"),
])
def test_report_commands_refuse_what_is_not_a_report(tmp_path, content, text):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    result = invoke("report", "summarize", bad)
    assert result.exit_code == ExitCode.USAGE and text in error_line(result)
