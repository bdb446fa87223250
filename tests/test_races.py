"""Racing programs on the CPU: the interpreter runs a launch's programs one after another,
so a lost update (two programs' read-modify-write of one element) gives the right answer in
every program order; the sandbox sees the two programs touch the element instead."""

import weakref

import pytest
import torch
import triton
import triton.language as tl
from conftest import make_impl, suite_cases

from diffcheck.executors import run_all
from diffcheck.job import Job
from diffcheck.modes import select
from diffcheck.sandbox import Extent, Sandbox
from diffcheck.settings import RunSettings
from diffcheck.status import Status


@triton.jit
def _pairs(x_ptr, out_ptr, HOW: tl.constexpr):
    p = tl.program_id(0)
    if HOW == 0:  # each program its own element
        tl.store(out_ptr + p, tl.load(x_ptr + p))
    if HOW == 1:  # both programs write element 0, different values
        tl.store(out_ptr, p + 1)
    if HOW == 2:  # both write element 0, the same value
        tl.store(out_ptr, 7)
    if HOW == 3:  # read-modify-write of element 0
        tl.store(out_ptr, tl.load(out_ptr) + p + 1)
    if HOW == 4:  # the same with an atomic
        tl.atomic_add(out_ptr, p + 1)
    if HOW == 5:  # program 1 reads what program 0 wrote
        if p == 0:
            tl.store(out_ptr, 5)
        else:
            tl.store(out_ptr + 1, tl.load(out_ptr))


def _races(how: int, launches: int = 1) -> list:
    x = torch.arange(4, dtype=torch.int32)
    out = torch.zeros(4, dtype=torch.int32)
    extents = [Extent("x", x.data_ptr(), 16, 4, read_only=True, owner=weakref.ref(x)),
               Extent("out", out.data_ptr(), 16, 4)]
    with Sandbox(extents) as sandbox:
        for _ in range(launches):
            _pairs[(2,)](x, out, HOW=how)
    return [a for a in sandbox.accesses if a.kind == "race"]


@pytest.mark.parametrize("how,racing", [(0, False), (1, True), (2, False), (3, True),
                                        (4, False), (5, True)],
                         ids=["own-elements", "two-values", "same-value", "read-modify-write",
                              "atomic", "read-after-write"])
def test_the_sandbox_records_elements_two_programs_of_a_launch_race_on(how, racing):
    races = _races(how)
    assert bool(races) == racing, races
    if racing:
        (race,) = races
        assert (race.buffer, race.offset, race.lanes) == ("out", 0, 1)
        assert race.where == "programs (0, 0) and (1, 0)"


def test_programs_of_two_launches_do_not_race():
    assert not _races(0, launches=2)
    # one program per launch, each reading what the launch before wrote: ordered by the
    # launches, not a race
    x = torch.zeros(1, dtype=torch.int32)
    out = torch.zeros(4, dtype=torch.int32)
    with Sandbox([Extent("x", x.data_ptr(), 4, 4, read_only=True, owner=weakref.ref(x)),
                  Extent("out", out.data_ptr(), 16, 4)]) as sandbox:
        for _ in range(3):
            _pairs[(1,)](x, out, HOW=3)
    assert not sandbox.accesses and int(out[0]) == 3


def _rows(name: str):
    impl = make_impl(f"blocktable:{name}", f"racing_kernels:{name}")
    cases = suite_cases("blocktable", "smoke")
    jobs = [Job(c, impl, m) for c in cases for m in select("all") if m.rows(c)]
    return run_all(jobs, RunSettings(torch.device("cpu"), "test", 0))


def test_a_lost_update_of_the_valid_counts_is_a_race_in_every_row():
    rows = _rows("blocktable_counts_lost_update")
    assert rows and {r.status for r in rows} == {Status.NONDETERMINISTIC.value}
    assert all(r.detail.startswith("Racing programs: counts_ptr[") for r in rows), rows[0].detail


def test_the_same_counts_added_atomically_pass():
    rows = _rows("blocktable_counts_atomic")
    assert rows and {r.status for r in rows} == {Status.PASS.value}, \
        [(r.case_id, r.status, r.detail[:120]) for r in rows if r.status != "pass"]


@pytest.mark.slow
def test_the_default_command_names_the_lost_update_and_passes_its_atomic_twin(tmp_path):
    """`diffcheck compare` with no options but the kernels: every row of the lost update is
    a race, and the atomic twin's rows all pass (stale_sensitive on stale metadata)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    tests = Path(__file__).parent
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(tests), env.get("PYTHONPATH", "")])
    report = tmp_path / "r.csv"
    done = subprocess.run(
        [sys.executable, "-m", "diffcheck", "compare", "--path", "blocktable", "--impl",
         "racing_kernels:blocktable_counts_lost_update", "--impl",
         "racing_kernels:blocktable_counts_atomic", "--report", str(report), "--quiet"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=3000)
    assert done.returncode == 1, done.stderr[-3000:]
    df = pd.read_csv(report, keep_default_na=False)
    lost = df[df["implementation"].str.endswith("lost_update")]
    atomic = df[df["implementation"].str.endswith("atomic")]
    racing = lost[lost["detail"].str.contains("Racing programs: counts_ptr")]
    assert set(racing["status"]) == {"nondeterministic"} and set(racing["mode"]) == {
        "eager", "capture", "replay"}
    assert set(atomic["status"]) <= {"pass", "stale_sensitive"}, \
        atomic[~atomic["status"].isin(["pass", "stale_sensitive"])][["case_id", "detail"]]
