"""--devices (issue 27): one worker per device, rows merged in selection order, a fault
replacing only the worker of its device. On the CPU, workers stand for devices."""

import pytest
import torch
from conftest import CPU, make_impl, suite_cases
from typer.testing import CliRunner

from diffcheck import devices
from diffcheck.cli import app
from diffcheck.errors import UsageError
from diffcheck.executors import run_all, settings_for
from diffcheck.impls import find
from diffcheck.job import Job
from diffcheck.modes import Eager

FAULTS_ON_K512 = make_impl("decode:faults-on-k512", "broken_kernels:decode_faults_on_k512")


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(devices, "_available", lambda device: 4)


@pytest.mark.parametrize("text, expected", [
    (None, ()), ("", ()), ("all", ("0", "1", "2", "3")), ("2", ("0", "1")),
    ("4", ("0", "1", "2", "3")),
    ("3,1", ("3", "1")), ("0", ("0",)), ("0,2", ("0", "2")), (" 1 , 2 ", ("1", "2")),
])
def test_devices_are_all_a_count_or_a_list(four_cores, text, expected):
    assert devices.parse_devices(text, CPU) == expected


@pytest.mark.parametrize("text, says", [
    ("5", "only 4"), ("4,1", "device 4 is not there"), ("1,1", "listed twice"),
    ("gpu0", "all, a count or a list"), ("-1", "all, a count or a list"), ("1,,2", "a list"),
])
def test_devices_that_are_not_there_are_usage_errors(four_cores, text, says):
    with pytest.raises(UsageError, match=says):
        devices.parse_devices(text, CPU)


def test_a_pinned_worker_sees_the_physical_device_this_process_numbers_so():
    gpu = torch.device("cuda")
    assert devices.pinned_environment({"A": "1"}, gpu, "2") == {"A": "1", devices.VISIBLE: "2"}
    # under CUDA_VISIBLE_DEVICES=4,6 this process's device 1 is the physical device 6
    assert devices.pinned_environment({devices.VISIBLE: "4,6"}, gpu, "1")[devices.VISIBLE] == "6"
    assert devices.pinned_environment({devices.VISIBLE: "GPU-ab,GPU-cd"}, gpu,
                                      "0")[devices.VISIBLE] == "GPU-ab"
    assert devices.pinned_environment({"A": "1"}, CPU, "1") == {"A": "1"}  # stand-ins


def test_devices_with_jobs_or_in_this_process_is_a_usage_error(four_cores):
    impls = [find("decode:guarded")]
    with pytest.raises(UsageError, match="drop --jobs"):
        settings_for(impls, CPU, 0, workers=2, devices="2")
    with pytest.raises(UsageError, match="drop --isolation none"):
        settings_for(impls, CPU, 0, isolation="none", devices="2")
    assert settings_for(impls, CPU, 0, devices="3").workers == 3


def test_rows_over_two_devices_equal_one_workers_rows_and_a_fault_stays_on_its_device(
        four_cores):
    """A kernel that faults on one case (SIGSEGV here, a device fault on a GPU): over two
    devices every row is the one a single worker gives, in the same order, both devices ran
    rows, and the rows after the fault still ran on both."""
    cases = suite_cases("decode", "smoke")
    jobs = [Job(c, FAULTS_ON_K512, Eager()) for c in cases] + \
        [Job(c, find("decode:guarded"), Eager()) for c in cases]
    one = settings_for([FAULTS_ON_K512], CPU, 0, interpreter_check=False, workers=1)
    two = settings_for([FAULTS_ON_K512], CPU, 0, interpreter_check=False, devices="0,1")
    single, spread = run_all(jobs, one), run_all(jobs, two)
    key = [(r.case_id, r.implementation, r.status) for r in single]
    assert [(r.case_id, r.implementation, r.status) for r in spread] == key
    assert [r.status for r in spread].count("fault") == 1
    assert {r.device for r in single} == {"cpu:triton-interpreter"}
    assert {r.device for r in spread} == {"cpu:triton-interpreter (device 0)",
                                          "cpu:triton-interpreter (device 1)"}
    after = [r for r in spread[[r.status for r in spread].index("fault") + 1:]]
    assert {r.status for r in after} == {"pass"}
    assert len({r.device for r in after}) == 2


def test_compare_devices_announces_them_and_names_each_rows_device(tmp_path, four_cores):
    report = tmp_path / "r.csv"
    done = CliRunner().invoke(app, ["compare", "--device", "cpu", "--path", "decode", "--suite",
                                    "edge", "--mode", "eager", "--devices", "2", "--report",
                                    str(report), "--quiet"])
    assert done.exit_code == 0, done.output
    assert "in 2 worker processes, one per device (0,1)" in done.output
    import pandas as pd

    rows = pd.read_csv(report)
    assert set(rows["device"]) <= {"cpu:triton-interpreter (device 0)",
                                   "cpu:triton-interpreter (device 1)"}
    assert (rows["status"] == "pass").all()
    bad = CliRunner().invoke(app, ["compare", "--device", "cpu", "--devices", "9", "--report",
                                   str(tmp_path / "x.csv")])
    assert bad.exit_code == 4 and "only 4" in bad.output


# -- fuzz --devices -------------------------------------------------------------------------

def test_each_search_gets_every_option_as_given_and_a_seed_of_its_own():
    import typer.main

    from diffcheck.fuzz import FuzzOptions
    from diffcheck.fuzz_devices import _arguments

    options = FuzzOptions(impl="decode:guarded", seed=3, fast=True, interpreter_check=False,
                          budget="2m", devices="0,1", keep_going=True, fillings=4)
    words = _arguments(options, 4)
    assert words[words.index("--seed") + 1] == "4"
    assert words[words.index("--impl") + 1] == "decode:guarded"
    assert {"--fast", "--no-interpreter-check"} <= set(words)
    assert words[words.index("--budget") + 1] == "2m"
    assert "--devices" not in words and "--keep-going" not in words
    # every field is one of fuzz's options, so the mapping cannot drift from the CLI
    params = typer.main.get_command(app).commands["fuzz"].params
    flags = {o for p in params for o in [*p.opts, *p.secondary_opts]}
    from dataclasses import fields

    assert {"--" + f.name.replace("_", "-") for f in fields(FuzzOptions)} <= flags


def test_summed_progress_and_the_exit_code_that_matters(tmp_path):
    from diffcheck.errors import ExitCode
    from diffcheck.fuzz_devices import _summed, _worst

    (tmp_path / "0.json").write_text('{"checks": 30, "elapsed": 10.0, "shrinking": false}')
    (tmp_path / "1.json").write_text('{"checks": 10, "elapsed": 5.0, "shrinking": false}')
    assert _summed(tmp_path, ("0", "1", "2")) == \
        "fuzz: 3 devices together: 40 checks (5.0 checks/s)"
    assert _worst([0, 2, 1], stopped=True) == ExitCode.FAILURES
    assert _worst([0, 2], stopped=False) == ExitCode.INTERRUPTED
    assert _worst([0, 4, 2], stopped=False) == ExitCode.USAGE
    assert _worst([0, 0], stopped=False) == ExitCode.OK


def test_fuzz_over_two_devices_stops_both_at_the_first_finding_and_keeps_it(tmp_path):
    """Two stand-in devices search a planted kernel (a fixed tile: found within seconds);
    the first finding stops the other search, the run exits 1, every finding is saved
    whole in the one folder, and no search's shrinking file is left behind."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "diffcheck", "fuzz", "--impl",
         "domain_kernels:decode_fixed_tile", "--path", "decode", "--devices", "2", "--budget",
         "150s", "--shrink-time", "3", "--save-to", str(tmp_path / "found"), "--device",
         "cpu"], env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "fuzz: 2 searches, one per device (0,1), seeds 0 to 1" in done.stderr
    assert "found a failure; stopping the other searches" in done.stderr
    assert "[device 0] " in done.stderr + done.stdout and "[device 1] " in done.stderr
    saved = sorted(p.name for p in (tmp_path / "found").iterdir())
    assert saved and all("-shrinking-" not in name for name in saved), \
        (saved, done.stderr[-3000:], done.stdout[-2000:])
    assert any(line.startswith("[device ") and "saved: " in line
               for line in done.stdout.splitlines())
    from diffcheck.casefile import load_any

    for path in (tmp_path / "found").iterdir():
        load_any(path)  # whole files, each readable


def test_keep_going_needs_devices(tmp_path):
    done = CliRunner().invoke(app, ["fuzz", "--impl", "decode:guarded", "--keep-going",
                                    "--device", "cpu", "--save-to", str(tmp_path)])
    assert done.exit_code == 4 and "--keep-going" in done.output
