"""Eager and capture rows of one case from one job (diffcheck.job.fused, modes.EagerThenCapture):
the rows its two jobs give, in their order; a fused job that faults or runs out of time runs
again as its two jobs, so a clean eager row stays clean; one whose capture raises keeps that
row; an implementation with autotuners or heuristics runs as two jobs."""

import dataclasses

import pytest
from conftest import CPU, make_impl, slow_when, suite_cases

import diffcheck.executors as executors
from diffcheck.executors import run_all
from diffcheck.impls import find
from diffcheck.job import Job, fused, parts
from diffcheck.modes import Capture, Eager, EagerThenCapture, Replay
from diffcheck.settings import RunSettings

#: one kernel of each class the eager and capture rows report, and correct ones
KERNELS = [
    ("decode:guarded", None),
    ("decode:pid", None),
    ("len-plus-one", "broken_kernels:decode_len_plus_one"),
    ("writes-before-out", "broken_kernels:decode_writes_before_out"),
    ("raises", "broken_kernels:decode_raises"),
    ("ignores-out", "broken_kernels:decode_ignores_out"),
    ("wrong-fill", "broken_kernels:decode_wrong_fill"),
    ("zeroes-kv-indices", "misbehaving_kernels:decode_zeroes_kv_indices"),
    ("racy", "misbehaving_kernels:decode_racy"),
    ("reseeds", "misbehaving_kernels:decode_reseeds_the_rng"),
    ("frozen-at-capture", "misbehaving_kernels:decode_launch_frozen_at_capture"),
    ("grid-from-item", "graph_wrappers:decode_grid_from_item"),
    ("lazy-scratch", "graph_wrappers:decode_lazy_scratch"),
    # found by an adversarial review of the fused job: each differed before its fix
    ("returns-a-kept-buffer", "graph_wrappers:decode_returns_a_kept_buffer"),
    ("sets-up-at-first-capture", "graph_wrappers:decode_sets_up_at_first_capture"),
    ("heuristic-when-captured", "graph_wrappers:decode_heuristic_when_captured"),
    ("tuned", "autotuned_kernels:tuned_decode"),
]
#: a thread the call leaves running writes whenever it runs: the fused capture comes after
#: the eager row's second look (a quarter of a second later than a capture job's would), so
#: the late write lands elsewhere; the statuses are the same
LATE = [("writes-late", "misbehaving_kernels:decode_writes_out_late")]


def _impl(name: str, target: str | None):
    return find(name, "decode") if target is None else make_impl(f"decode:{name}", target)


def _settings(**overrides) -> RunSettings:
    settings = RunSettings(CPU, "test", 0, isolation="none")
    for name, value in overrides.items():
        setattr(settings, name, value)
    return settings


def _cases():
    smoke = {c.case_id: c for c in suite_cases("decode", "smoke")}
    stale = suite_cases("decode", "stale")
    return [smoke["smoke/decode-shuffled"], smoke["smoke/decode-mixed"], stale[0]]


def _comparable(row) -> dict:
    fields = dataclasses.asdict(row)
    fields.pop("elapsed_ms")
    return fields


def test_only_an_eager_job_then_the_capture_job_of_its_case_and_implementation_fuse():
    a, b = _cases()[:2]
    guarded, pid = find("decode:guarded", "decode"), find("decode:pid", "decode")
    jobs = [Job(a, guarded, Eager()), Job(a, guarded, Capture()), Job(a, guarded, Replay()),
            Job(b, guarded, Eager()), Job(a, guarded, Capture()),  # another case
            Job(b, pid, Eager()), Job(b, guarded, Capture()),  # another implementation
            Job(b, pid, Capture()), Job(b, pid, Eager())]  # capture before eager
    merged = fused(jobs)
    assert [type(j.mode).__name__ for j in merged] == [
        "EagerThenCapture", "Replay", "Eager", "Capture", "Eager", "Capture", "Capture", "Eager"]
    assert [j.mode.name for j in parts(merged[0])] == ["eager", "capture"]
    assert parts(merged[1]) == [merged[1]]


#: run in every environment; the rest with the slow tests (a worker each side, minutes)
EVERYWHERE = {"decode:guarded", "writes-before-out", "grid-from-item", "returns-a-kept-buffer",
              "sets-up-at-first-capture", "heuristic-when-captured"}


@pytest.mark.parametrize("kernel", slow_when(
    KERNELS + LATE, {k[0] for k in KERNELS + LATE} - EVERYWHERE, ids=lambda k: k[0]))
def test_a_fused_job_gives_the_rows_of_its_two_jobs(kernel, monkeypatch):
    """Each side in a fresh worker process of its own (a launcher's state starts alike)."""
    name, target = kernel
    impl, settings = _impl(name, target), _settings(isolation="process", workers=1)
    jobs = [Job(case, impl, mode) for case in _cases() for mode in (Eager(), Capture())]
    together = run_all(jobs, settings)
    monkeypatch.setattr(executors, "fused", lambda jobs: jobs)
    separately = run_all(jobs, settings)
    assert [(r.case_id, r.mode) for r in together] == [(j.case.case_id, j.mode.name)
                                                        for j in jobs]
    if (name, target) in LATE:
        assert [r.status for r in together] == [r.status for r in separately]
        assert {r.status for r in together} == {"side_effect"}
    else:
        assert [_comparable(r) for r in together] == [_comparable(r) for r in separately]
    if name == "sets-up-at-first-capture":  # the first capture raised, in both
        assert [r.status for r in together][:2] == ["pass", "error"]


def test_a_fused_job_runs_only_under_process_isolation():
    """In this process, what a fused attempt left behind would be its parts' state."""
    impl, case = find("decode:guarded", "decode"), _cases()[0]
    settings = _settings()
    rows = run_all([Job(case, impl, Eager()), Job(case, impl, Capture())], settings)
    assert [r.mode for r in rows] == ["eager", "capture"]


def test_a_capture_that_ends_the_process_or_hangs_leaves_the_eager_row_clean():
    case = _cases()[0]
    exits = make_impl("decode:exits-when-captured", "graph_wrappers:decode_exits_when_captured")
    hangs = make_impl("decode:hangs-when-captured", "graph_wrappers:decode_hangs_when_captured")
    jobs = [Job(case, impl, mode) for impl in (hangs, exits) for mode in (Eager(), Capture())]
    assert [type(j.mode) for j in fused(jobs)] == [EagerThenCapture] * 2
    rows = run_all(jobs, _settings(isolation="process", timeout=4.0, workers=1))
    assert [(r.implementation, r.mode) for r in rows] == [
        (j.impl.name, j.mode.name) for j in jobs]
    assert [r.status for r in rows] == ["pass", "timeout", "pass", "fault"]
