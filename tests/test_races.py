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
def _pairs(x_ptr, out_ptr, scratch_ptr, HOW: tl.constexpr):
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
    if HOW == 5:  # program 1 reads what program 0 wrote (order-dependent: the reversed run)
        if p == 0:
            tl.store(out_ptr, 5)
        else:
            tl.store(out_ptr + 1, tl.load(out_ptr))
    if HOW == 6:  # every program's leftover lanes sent to a scratch word no one reads
        tl.store(scratch_ptr, p + 1)
        tl.store(out_ptr + p, p)
    if HOW == 7:  # a whole tile loaded, other programs' lanes thrown away, own lane stored
        cols = tl.arange(0, 4)
        old = tl.load(out_ptr + cols)
        tl.store(out_ptr + cols, tl.where(cols == p, p + 5, old), mask=cols == p)
    if HOW == 8:  # both write the same value to a scratch word, then read it back
        tl.store(scratch_ptr, 9)
        tl.store(out_ptr + p, tl.load(scratch_ptr))
    if HOW == 9:  # two programs write different values to a scratch word, then read it
        tl.store(scratch_ptr, p + 1)
        tl.store(out_ptr + p, tl.load(scratch_ptr))


def _races(how: int, launches: int = 1) -> list:
    x = torch.arange(4, dtype=torch.int32)
    out = torch.zeros(4, dtype=torch.int32)
    scratch = torch.zeros(4, dtype=torch.int32)
    extents = [Extent("x", x.data_ptr(), 16, 4, read_only=True, owner=weakref.ref(x)),
               Extent("out", out.data_ptr(), 16, 4, judged=True),
               Extent("scratch", scratch.data_ptr(), 16, 4)]
    with Sandbox(extents) as sandbox:
        for _ in range(launches):
            _pairs[(2,)](x, out, scratch, HOW=how)
    return [a for a in sandbox.accesses if a.kind == "race"]


@pytest.mark.parametrize("how,racing", [
    (0, None), (1, "out"), (2, None), (3, "out"), (4, None), (5, None), (6, None), (7, None),
    (8, None), (9, "scratch")],
    ids=["own-elements", "two-values", "same-value", "read-modify-write", "atomic",
         "read-after-write", "unread-sink", "loaded-and-thrown-away", "same-value-read-back",
         "two-values-read-back"])
def test_the_sandbox_records_elements_two_programs_of_a_launch_race_on(how, racing):
    """Two programs each changing an element whose value is read (a judged output, or a
    load in the launch) race; benign patterns engines use do not (review of 2026-12-08)."""
    races = _races(how)
    assert [r.buffer for r in races] == ([racing] if racing else []), races
    if racing:
        (race,) = races
        assert (race.offset, race.lanes) == (0, 1)
        assert race.where == "programs (0, 0) and (1, 0)"


def test_programs_of_two_launches_do_not_race():
    assert not _races(0, launches=2)
    # one program per launch, each reading what the launch before wrote: ordered by the
    # launches, not a race
    x = torch.zeros(1, dtype=torch.int32)
    out = torch.zeros(4, dtype=torch.int32)
    with Sandbox([Extent("x", x.data_ptr(), 4, 4, read_only=True, owner=weakref.ref(x)),
                  Extent("out", out.data_ptr(), 16, 4, judged=True)]) as sandbox:
        for _ in range(3):
            _pairs[(1,)](x, out, out, HOW=3)
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
