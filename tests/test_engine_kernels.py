"""Engines' kernels as they are: kernels with the engines' own call signatures and
conventions (tests/engine_kernels.py) are checked without edits, pass every well-formed suite
in every mode, and their broken variants are caught by the default command."""

from pathlib import Path

import engine_kernels
import pandas as pd
import pytest
from conftest import slow_when
from test_cli import invoke

from diffcheck.errors import ExitCode
from diffcheck.status import DEFAULT_FAIL_ON, Status

FILE = Path(engine_kernels.__file__)
#: engine-style kernel -> the path whose contract it follows
ENGINES = {
    "vllm_convert": "blocktable",
    "trtllm_convert": "blocktable",
    "lmdeploy_convert": "blocktable",
    "atom_prefill": "prefill",
    "atom_mtp": "mtp",
}
#: broken variant -> (path, the status its bug gets on a well-formed case)
BROKEN = {
    "prefill_no_request_bound": ("prefill", Status.MISMATCH),
    "prefill_drops_page_offset": ("prefill", Status.MISMATCH),
    "prefill_token_as_request": ("prefill", Status.OOB_READ),
    "prefill_trusts_request_ids": ("prefill", None),  # malformed request ids only
    "blocktable_stride_is_page": ("blocktable", Status.MISMATCH),
    "blocktable_counts_every_entry": ("blocktable", Status.MISMATCH),
    "blocktable_ignores_seq_lens": ("blocktable", Status.MISMATCH),
    "blocktable_returns_its_first_output": ("blocktable", Status.MISMATCH),
}


@pytest.mark.parametrize("name, path", [
    pytest.param(n, p, marks=[pytest.mark.slow] if n in ("atom_prefill", "trtllm_convert",
                                                           "lmdeploy_convert") else [])
    for n, p in ENGINES.items()])
def test_engine_style_kernels_pass_every_well_formed_suite_as_they_are(name, path, tmp_path):
    report = tmp_path / "r.csv"
    result = invoke("compare", "--impl", f"{FILE}:{name}", "--path", path, "--suite", "smoke",
                    "--suite", "smoke-2048", "--suite", "edge", "--suite", "replay",
                    "--report", report, "--isolation", "none")
    assert result.exit_code == ExitCode.OK, result.output
    df = pd.read_csv(report)
    assert set(df["status"]) == {"pass"} and set(df["mode"]) == {"eager", "capture", "replay"}


def test_an_engine_kernel_that_asserts_block_n_divides_k_gets_one_that_does(tmp_path):
    # ATOM's MTP gather asserts NUM_TOPK_TOKENS % BLOCK_N == 0 with BLOCK_N=1024; K is 256.
    report = tmp_path / "r.csv"
    result = invoke("compare", "--impl", f"{FILE}:atom_mtp", "--path", "mtp", "--suite",
                    "edge", "--mode", "eager", "--report", report, "--isolation", "none")
    assert result.exit_code == ExitCode.OK, result.output
    assert set(pd.read_csv(report)["k"]) == {256}


@pytest.mark.parametrize("path", slow_when(sorted({p for p, _ in BROKEN.values()}),
                                           {"prefill", "blocktable"}))
def test_the_default_command_catches_the_new_contracts_bug_classes(path, tmp_path):
    names = [n for n, (p, _) in BROKEN.items() if p == path]
    args = ["compare", "--path", path, "--report", tmp_path / "r.csv", "--quiet"]
    for name in names:
        args += ["--impl", f"{FILE}:{name}"]
    assert invoke(*args).exit_code == ExitCode.FAILURES
    df = pd.read_csv(tmp_path / "r.csv")
    df["kernel"] = df["implementation"].str.rsplit(":", n=1).str[-1]
    for name in names:
        rows = df[df["kernel"] == name]
        assert rows["status"].map(lambda s: Status(s) in DEFAULT_FAIL_ON).any(), name
        status = BROKEN[name][1]
        if status is not None:
            assert status.value in set(rows[rows["well_formed"]]["status"]), name
