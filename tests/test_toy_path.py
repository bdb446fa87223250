"""A fourth path, registered at run time from one module (tests/toy_path.py), works through
every command: nothing outside that module names it."""

import pandas as pd
import pytest
import torch
from test_cli import invoke

from diffcheck.errors import ExitCode
from diffcheck.paths import known_paths
from diffcheck.record import CaseRecorder


@pytest.fixture
def toy():
    import toy_path

    toy_path.install()
    yield toy_path
    toy_path.remove()


def test_a_path_registered_at_run_time_runs_in_every_mode_in_worker_processes(toy, tmp_path):
    assert "toy" in known_paths()
    report = tmp_path / "r.csv"
    result = invoke("compare", "--path", "toy", "--report", report)
    assert result.exit_code == ExitCode.OK, result.output
    df = pd.read_csv(report)
    assert set(df["mode"]) == {"eager", "capture", "replay"}
    # the toy declares no generators: no suite derived from its domain
    assert set(df["suite"]) == {"smoke", "stale", "replay"}
    assert set(df["implementation"]) == {"toy:torch"} and set(df["status"]) <= {
        "pass", "stale_sensitive"}
    assert "scale=3" in set(df["scalars"])  # a path's scalar, stored and reported


def test_its_broken_kernel_is_caught(toy, tmp_path):
    report = tmp_path / "r.csv"
    result = invoke("compare", "--path", "toy", "--impl", "toy:no-bound", "--suite", "smoke",
                    "--mode", "eager", "--report", report)
    assert result.exit_code == ExitCode.FAILURES, result.output
    assert set(pd.read_csv(report)["status"]) == {"oob_read"}


def test_list_export_show_and_the_recorder_know_it(toy, tmp_path):
    listed = invoke("list", "paths", "--path", "toy")
    assert "call: (slot_of, positions, TABLE_SCALE=1, NUM_TOPK_TOKENS=K, out=None)" in \
        listed.output
    assert invoke("export", tmp_path / "cases", "--suite", "smoke", "--path", "toy",
                  ).exit_code == 0
    shown = invoke("show", tmp_path / "cases" / "smoke-toy-small.npz")
    assert shown.exit_code == 0 and "scale 3" in shown.output
    recorder = CaseRecorder("toy", tmp_path / "rec")
    convert = recorder.wrap(toy.toy_kernel)
    table, rows = torch.arange(1, 9, dtype=torch.int32), torch.tensor([[0, 7, 9, -1]],
                                                                      dtype=torch.int32)
    out = convert(table, rows, TABLE_SCALE=5, NUM_TOPK_TOKENS=4)
    assert out.tolist() == [[5, 40, 0, 0]]
    (saved,) = recorder.saved
    result = invoke("compare", "--cases", saved, "--impl", "toy:torch", "--mode", "eager",
                    "--report", tmp_path / "r.csv")
    assert result.exit_code == ExitCode.OK, result.output
    assert pd.read_csv(tmp_path / "r.csv")["scalars"].tolist() == ["scale=5"]
