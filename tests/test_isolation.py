"""Crash isolation and time limits: a job that dies or hangs is a row, and the run goes on."""

import os

import pandas as pd
import torch
from conftest import CPU, make_impl, suite_cases

from diffcheck.executors import run_all
from diffcheck.impls import find
from diffcheck.job import Job
from diffcheck.modes import Eager
from diffcheck.outcome import is_device_fault
from diffcheck.settings import RunSettings

FAULTS_ON_K512 = make_impl("decode:faults-on-k512", "broken_kernels:decode_faults_on_k512")
RUNAWAY = make_impl("decode:runaway", "broken_kernels:decode_runaway")


def settings(**overrides) -> RunSettings:
    base = RunSettings(CPU, "test", 0)
    for name, value in overrides.items():
        setattr(base, name, value)
    return base


def test_worker_process_survives_a_segfaulting_kernel_and_the_next_cases_pass():
    cases = suite_cases("decode", "smoke")
    assert [c.k for c in cases].count(512) == 1
    jobs = [Job(c, FAULTS_ON_K512, Eager()) for c in cases]
    rows = run_all(jobs, settings(interpreter_check=False, isolation="process"))
    by_k = {c.k: [] for c in cases}
    for case, row in zip(cases, rows, strict=True):
        by_k[case.k].append(row)
    (crashed,) = by_k[512]
    assert crashed.status == "fault"
    assert "worker process was killed by SIG" in crashed.error
    assert {r.status for r in by_k[256]} == {"pass"}


def test_a_runaway_loop_times_out_and_the_next_job_runs_in_process():
    first, second = suite_cases("decode", "smoke")[:2]
    jobs = [Job(first, RUNAWAY, Eager()), Job(second, find("decode:pid"), Eager())]
    rows = run_all(jobs, settings(timeout=1.0))
    assert [r.status for r in rows] == ["timeout", "pass"]
    assert "ran past the 1 s time limit" in rows[0].error


def test_a_runaway_loop_times_out_in_a_worker_that_is_then_replaced():
    first, second = suite_cases("decode", "smoke")[:2]
    jobs = [Job(first, RUNAWAY, Eager()), Job(second, find("decode:pid"), Eager())]
    rows = run_all(jobs, settings(timeout=3.0, isolation="process"))
    assert [r.status for r in rows] == ["timeout", "pass"]


def test_worker_rows_equal_in_process_rows():
    cases = suite_cases("mtp", "stale")
    jobs = [Job(c, find("mtp:unguarded"), Eager()) for c in cases]
    here = run_all(jobs, settings())
    there = run_all(jobs, settings(isolation="process"))
    # Not the values nor far reads: a wild gather yields a tag, and a far address is named
    # after its nearest tensor, both of which depend on where memory happens to be.
    keep = ("case_id", "status", "mismatches", "first_mismatch")
    assert [[getattr(r, k) for k in keep] for r in here] == \
        [[getattr(r, k) for k in keep] for r in there]
    near = [i for i, r in enumerate(here) if r.case_id.endswith("rows-unwritten")]
    assert [here[i].first_oob_read for i in near] == [there[i].first_oob_read for i in near]
    assert here[near[0]].first_oob_read.startswith("kv_indices[-1]")


def test_device_faults_are_told_from_wrapper_exceptions():
    assert is_device_fault(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert is_device_fault(RuntimeError("HIP error: hipErrorIllegalAddress"))
    assert not is_device_fault(ValueError("unsupported NUM_TOPK_TOKENS=256"))


def test_worker_reports_its_start_and_case_rebuilds_for_the_breakdown():
    settings = RunSettings(CPU, "t", 0, isolation="process")
    cases = suite_cases("decode", "smoke")[:1]
    timings = []
    run_all([Job(cases[0], find(name), Eager()) for name in ("decode:pid", "decode:guarded")],
            settings, lambda outcome: timings.append(outcome.timing))
    first, second = timings
    assert first["worker_start"] > 0 and "worker_start" not in second  # one start, told once
    assert {"cases", "calls", "references", "total"} <= first.keys() & second.keys()


def test_a_well_formed_case_is_uploaded_once_for_its_inputs_and_its_reference():
    # Its intended batch is its inputs: staging and the reference share one upload.
    settings = RunSettings(CPU, "t", 0)
    case = suite_cases("decode", "smoke")[0]
    assert settings.on_device(case, intended=True) is settings.on_device(case)


def test_uploads_of_earlier_cases_are_let_go_past_a_byte_budget(monkeypatch):
    """A GPU-sized case is gigabytes: the uploads kept for the cases before it must not stay
    beside it (the count alone kept four)."""
    from diffcheck import settings as run_settings

    small, large, other = suite_cases("decode", "smoke")[:3]
    size = sum(t.numel() * t.element_size() for t in large.inputs.values())
    monkeypatch.setattr(run_settings, "UPLOAD_BYTES_KEPT", size + 1)
    settings = RunSettings(CPU, "t", 0)
    first = settings.on_device(small)
    assert settings.on_device(small) is first  # kept
    settings.on_device(large)  # over the budget with it: the small one goes
    assert [case for case, _ in settings._uploaded.values()] == [large]
    monkeypatch.setattr(run_settings, "UPLOAD_BYTES_KEPT", 1 << 40)
    settings.on_device(other)
    assert [case for case, _ in settings._uploaded.values()] == [large, other]


def test_a_case_too_large_for_the_device_is_an_error_row_and_the_run_goes_on(tmp_path,
                                                                            monkeypatch):
    """diffcheck's own staging running out of memory (production-domain on an 80 GB GPU) ended
    the whole run as an internal error (exit 3); now that job's rows say so and the other
    jobs run."""
    from typer.testing import CliRunner

    from diffcheck import runner
    from diffcheck.cli import app
    from diffcheck.errors import ExitCode

    real_stage = runner.stage

    def stage(inputs, *args, **kwargs):
        if inputs["kv_indices"].numel() > 2000:  # the large smoke cases only
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.71 GiB.")
        return real_stage(inputs, *args, **kwargs)

    monkeypatch.setattr(runner, "stage", stage)
    report = tmp_path / "r.csv"
    result = CliRunner().invoke(app, ["compare", "--path", "decode", "--impl", "decode:guarded",
                                      "--suite", "smoke", "--mode", "eager", "--isolation",
                                      "none", "--report", str(report), "--quiet"])
    assert result.exit_code == ExitCode.FAILURES, result.output
    df = pd.read_csv(report, keep_default_na=False)
    large = df[df["error"].str.contains("ran out of cpu memory")]
    assert len(large) and (large["status"] == "error").all()
    assert large["error"].str.contains("Tried to allocate 9.71 GiB").all()
    assert (df.drop(large.index)["status"] == "pass").all() and len(df) > len(large)


def test_a_larger_batch_too_large_to_stage_is_a_note_and_the_replay_is_judged(tmp_path,
                                                                             monkeypatch):
    """The batch diffcheck calls between capture and replay cannot be staged for lack of
    memory: the replay rows are judged all the same and say no larger batch was called (a
    capture-time finding is not lost to it)."""
    from pathlib import Path

    from typer.testing import CliRunner

    from diffcheck import runner
    from diffcheck.cli import app

    real_stage, larger = runner.stage, []

    def stage(inputs, *args, **kwargs):
        if inputs["kv_indptr"].numel() > 30:  # only the larger batch (2 x 16 + 1 and more)
            larger.append(inputs["kv_indptr"].numel())
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB.")
        return real_stage(inputs, *args, **kwargs)

    monkeypatch.setattr(runner, "stage", stage)
    kernel = Path(__file__).parent / "autotuned_kernels.py"
    report = tmp_path / "r.csv"
    result = CliRunner().invoke(app, ["compare", "--path", "decode", "--impl",
                                      f"{kernel}:cached_columns_decode", "--suite", "replay",
                                      "--mode", "replay", "--isolation", "none", "--report",
                                      str(report), "--quiet"])
    assert result.exit_code in (0, 1), result.output
    df = pd.read_csv(report, keep_default_na=False)
    assert larger, "the larger batch was never staged"
    assert not (df["status"] == "error").any(), df[["case_id", "status", "error"]]
    assert df["detail"].str.contains("no larger batch between capture and replay: diffcheck "
                                     "ran out of cpu memory staging this case").any()


def _helper_type_in_a_worker(device: str, tmp_path) -> str:
    """The type of triton.language's own jit helper tl.cdiv in a process started as a worker
    for ``device`` by a parent that interprets."""
    import multiprocessing

    from diffcheck.worker import environment_for

    out = tmp_path / f"{device}.txt"
    code = ("import diffcheck.worker, triton.language as tl\n"
            f"open({str(out)!r}, 'w').write(type(tl.cdiv).__name__)")
    with environment_for(torch.device(device)):
        child = multiprocessing.get_context("spawn").Process(target=exec, args=(code,))
        child.start()
    child.join(300)
    return out.read_text()


def test_a_gpu_worker_of_an_interpreting_parent_compiles_tritons_own_helpers(tmp_path,
                                                                              monkeypatch):
    """A GPU worker must not see TRITON_INTERPRET from its first import: with it, tl.sum and
    tl.cdiv were interpreted functions and every instrumented kernel compiled on the GPU failed
    with a bare AssertionError (the GPU parity test, run from this interpreting test session)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert _helper_type_in_a_worker("cuda", tmp_path) == "JITFunction"
    assert _helper_type_in_a_worker("cpu", tmp_path) == "InterpretedFunction"
    assert os.environ["TRITON_INTERPRET"] == "1"  # the parent's own setting is back


def test_a_staging_with_no_room_beside_the_last_runs_arena_lets_it_go_and_stages_again(
        monkeypatch):
    """The last run's arena is kept until the next run has staged (runner.execute); where
    both do not fit, it goes first and staging is tried again: the row is judged."""
    from diffcheck import runner

    real_stage, refused = runner.stage, []

    def stage(*args, **kwargs):
        settings_now = live[0]
        if settings_now._staged_before and not refused:
            refused.append(len(settings_now._staged_before))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.71 GiB.")
        return real_stage(*args, **kwargs)

    monkeypatch.setattr(runner, "stage", stage)
    live = [settings(fillings=2)]
    case = suite_cases("decode", "smoke")[0]
    rows = run_all([Job(case, find("decode:guarded"), Eager())], live[0])
    assert refused == [1] and [r.status for r in rows] == ["pass"], [r.error for r in rows]


def test_a_malformed_cases_inputs_and_intended_batch_stay_uploaded_together(monkeypatch):
    """Past the byte budget the uploads of earlier cases go, never the same case's other one
    (its inputs for staging, its intended batch for the reference): the next job of the case
    would upload it again."""
    from diffcheck import settings as run_settings

    case = next(c for c in suite_cases("decode", "stale") if c.intended is not None)
    monkeypatch.setattr(run_settings, "UPLOAD_BYTES_KEPT", 1)
    settings = RunSettings(CPU, "t", 0)
    inputs = settings.on_device(case)
    intended = settings.on_device(case, intended=True)
    assert settings.on_device(case) is inputs
    assert settings.on_device(case, intended=True) is intended


def test_a_case_too_large_to_keep_runs_for_every_implementation_in_a_row(monkeypatch):
    """A worker keeps few cases built; production-domain's gigabytes were rebuilt once per
    implementation (33 s of a 212 s GPU default): such a case now runs last, for every
    implementation in a row, and the worker keeps the small cases past it."""
    import diffcheck.selection as selection
    from diffcheck.case import elements
    from diffcheck.modes import Capture
    from diffcheck.worker import Built

    cases = suite_cases("decode", "smoke")[:3]
    large = max(cases, key=elements)
    monkeypatch.setattr(selection, "CASE_ELEMENTS_KEPT", elements(large) - 1)
    impls = [find("decode:pid"), find("decode:guarded")]
    jobs = selection.Selection(cases, impls, [Eager(), Capture()]).jobs()
    order = [(job.case.name, job.impl.name, job.mode.name) for job in jobs]
    small = [c.name for c in cases if c is not large]
    assert order == [(c, i.name, m) for i in impls for c in small for m in ("eager", "capture")] \
        + [(large.name, i.name, m) for i in impls for m in ("eager", "capture")]

    built = Built(budget=elements(large) - 1)
    recipes = {c.name: ("suite", "decode", "smoke", c.name, 0, c.fill) for c in cases}
    for name in (*small, large.name):
        built.get(recipes[name])
    assert list(built.cases) == [recipes[n] for n in (*small, large.name)]  # all three kept
    kept = built.cases[recipes[small[0]]]
    assert built.get(recipes[small[0]]) is kept  # not rebuilt
    other = ("suite", "decode", "edge", suite_cases("decode", "edge")[0].name, 0, 0)
    built.get(other)
    assert recipes[large.name] not in built.cases  # no longer the latest: too large to keep


def test_a_spare_worker_killed_meanwhile_is_replaced_and_the_job_runs(monkeypatch):
    """From the first replacement on a worker keeps a spare; one killed meanwhile (the OOM
    killer) must not end the run with a broken pipe: a fresh worker takes the job."""
    import signal
    import time

    from diffcheck import worker

    monkeypatch.setattr(worker, "_FORK_SERVER", [True])
    job = Job(suite_cases("decode", "smoke")[0], find("decode:pid"), Eager())
    handle = worker.Worker(settings(isolation="process"))
    try:
        handle.send(job)
        assert [o.row.status for o in handle.collect()] == ["pass"]
        handle.stop()  # as after a fault
        handle.send(job)
        assert [o.row.status for o in handle.collect()] == ["pass"]
        assert handle.spare is not None  # replaced once: a spare waits
        time.sleep(1.0)  # it has said it is ready
        os.kill(handle.spare[0].pid, signal.SIGKILL)
        time.sleep(0.3)
        handle.stop()
        handle.send(job)
        assert [o.row.status for o in handle.collect()] == ["pass"]
    finally:
        handle.close()
    assert handle.spare is None


def test_a_worker_that_imported_another_diffcheck_says_so(monkeypatch):
    """A fork server started as `python -c` once imported diffcheck from the working
    directory: a worker checks its diffcheck is its parent's and says which two it found."""
    import multiprocessing
    import signal
    import sys

    from diffcheck import worker

    monkeypatch.setattr(signal, "signal", lambda *args: None)  # serve runs in this process
    parent, child = multiprocessing.Pipe()
    worker.serve(child, settings().config(),
                 (dict(os.environ), list(sys.path), "/elsewhere/diffcheck/worker.py"))
    kind, text = parent.recv()
    assert kind == "broken" and "/elsewhere/diffcheck/worker.py" in text


def test_a_stop_swallowed_during_a_run_never_exits_0(monkeypatch):
    """A SIGTERM raised where Python ignores exceptions and never sent again: the run ends 2,
    not 0; later stops leave at once with that status (stops.closing)."""
    import signal

    from diffcheck import stops

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setitem(stops._STOPS, "raised", None)
    monkeypatch.setitem(stops._STOPS, "closing", False)
    try:
        assert stops.closing(0) == 0 and stops.closing(1) == 1
        monkeypatch.setitem(stops._STOPS, "raised", KeyboardInterrupt("terminated (SIGTERM)"))
        assert stops.closing(0) == 2 and stops.closing(1) == 1
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) not in (signal.SIG_DFL, signal.SIG_IGN)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_in_process_runs_reach_the_cli_with_triton_not_yet_imported(tmp_path):
    """`--isolation none` runs kernels in the CLI's own process: importing triton there before
    TRITON_INTERPRET=1 is set made triton.language's own jit helpers compiled ones, and every
    kernel with a tl.sum failed ("Cannot call @triton.jit'd outside of the scope of a
    kernel": the block table's valid counts, a false error)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    probe = subprocess.run([sys.executable, "-c", "import sys, diffcheck.cli, diffcheck.executors,"
                            " diffcheck.runner; print('triton' in sys.modules)"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert probe.stdout.strip() == "False", probe.stderr[-2000:]
    report = tmp_path / "r.csv"
    done = subprocess.run([sys.executable, "-m", "diffcheck", "compare", "--impl",
                           "blocktable:guarded", "--path", "blocktable", "--suite", "smoke",
                           "--mode", "eager", "--isolation", "none", "--report", str(report),
                           "--quiet"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:] + report.read_text()[-2000:]
