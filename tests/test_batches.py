"""Launchers wrong only for some batches (tests/batch_kernels.py): each is caught by the
domain suite of the default selection, and by the default command."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_impl, suite_cases

from diffcheck.executors import run_all
from diffcheck.job import Job
from diffcheck.modes import select
from diffcheck.settings import RunSettings
from diffcheck.status import Status

#: kernel -> (path, the status its worst well-formed row gets)
EXPECTED = {
    "decode_one_request_fast_path": ("decode", Status.STRAY_WRITE),
    "decode_medium_batch_path": ("decode", Status.MISMATCH),
    "mtp_grid_from_topk_rows": ("mtp", Status.OOB_WRITE),
    "blocktable_skips_padding_tokens": ("blocktable", Status.MISMATCH),
}
ORDER = {s.value: s.severity for s in Status}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_domain_suite_catches_each_batch_kernel(name):
    import torch

    path, status = EXPECTED[name]
    impl = make_impl(f"{path}:{name}", f"batch_kernels:{name}")
    cases = [c for c in suite_cases(path, "domain") if c.well_formed]
    rows = run_all([Job(c, impl, m) for c in cases for m in select("eager")],
                   RunSettings(torch.device("cpu"), "test", 0))
    worst = max((r.status for r in rows), key=ORDER.__getitem__)
    assert worst == status.value, [(r.case_id, r.status) for r in rows if r.status != "pass"]
    # and only on the batches of their partition: every other row passes
    assert sum(r.status != "pass" for r in rows) < len(rows) / 2


@pytest.mark.slow
@pytest.mark.parametrize("path", ["decode", "mtp", "blocktable"])
def test_the_default_command_catches_the_batch_kernels(path, tmp_path):
    tests = Path(__file__).parent
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(tests), env.get("PYTHONPATH", "")])
    names = [n for n, (p, _) in EXPECTED.items() if p == path]
    report = tmp_path / "r.csv"
    args = [a for n in names for a in ("--impl", f"batch_kernels:{n}")]
    done = subprocess.run([sys.executable, "-m", "diffcheck", "compare", "--path", path, *args,
                           "--report", str(report), "--quiet"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=3000)
    assert done.returncode == 1, done.stderr[-3000:]
    df = pd.read_csv(report, keep_default_na=False)
    for name in names:
        rows = df[df["implementation"].str.endswith(f":{name}") & df["well_formed"]]
        worst = max(rows["status"], key=ORDER.__getitem__)
        assert worst == EXPECTED[name][1].value, (name, rows["status"].value_counts())


#: this session's other classes, each with the status its worst row gets under the default
OTHERS = {
    ("blocktable", "racing_kernels:blocktable_counts_lost_update"): Status.NONDETERMINISTIC,
    ("decode", "graph_wrappers:decode_keeps_metadata_by_version"): Status.DIVERGENCE,
}


@pytest.mark.slow
@pytest.mark.parametrize("path, impl, status", [
    *((p, f"batch_kernels:{n}", s) for n, (p, s) in EXPECTED.items()),
    *((p, i, s) for (p, i), s in OTHERS.items())])
def test_the_python_api_with_no_suites_catches_each_class(path, impl, status):
    """diffcheck.api.check with no suites runs the CLI's default selection: the batch-size,
    padding, spare-row, race and version-counter classes are caught there too."""
    from diffcheck.api import check

    df = check(impl, path=path)
    worst = max(df[df["well_formed"]]["status"], key=ORDER.__getitem__)
    assert worst == status.value, df["status"].value_counts()
