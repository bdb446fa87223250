"""Real-device runs: skipped without CUDA/ROCm. Each runs the CLI in a fresh process, since
the rest of the suite imports the kernels through the Triton interpreter."""

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA or ROCm device"),
]


def run_cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "diffcheck", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


def test_safe_kernels_pass_smoke_and_edge_on_the_gpu(tmp_path):
    report = tmp_path / "r.csv"
    done = run_cli("compare", "--device", "cuda", "--suite", "smoke", "--suite", "edge",
                   "--invalid-fill", "-1", "--report", report)
    assert done.returncode == 0, done.stderr + done.stdout
    df = pd.read_csv(report)
    assert set(df["status"]) == {"pass"} and df["device"].str.startswith("cuda").all()
    assert set(df["implementation"]) == {"decode:guarded", "decode:pid", "decode:reference",
                                         "mtp:guarded", "mtp:reference"}
    assert df["elements_checked"].sum() > 0


def test_unguarded_kernels_get_the_cpu_statuses_on_the_gpu(tmp_path):
    report = tmp_path / "r.csv"
    done = run_cli("compare", "--device", "cuda", "--suite", "smoke", "--suite", "edge",
                   "--impl", "decode:unguarded", "--impl", "mtp:unguarded", "--report", report)
    assert done.returncode == 1, done.stderr + done.stdout
    df = pd.read_csv(report)
    invalid = df["case_id"].str.contains("odd-(?:minus-one|at-ctx|negative|beyond|mixed)")
    assert (df.loc[invalid, "status"] == "oob_read").all()
    assert df.loc[invalid, "oob_read_found_by"].isin(["redzone-tag", "redzone-diff"]).all()
    assert (df.loc[~invalid, "status"] == "pass").all()
