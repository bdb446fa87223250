"""Real-device runs: skipped without CUDA/ROCm. Each runs the CLI in a fresh process, since
the rest of the suite imports the kernels through the Triton interpreter."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

from diffcheck.report import frame
from diffcheck.status import Status

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA or ROCm device"),
]


def keep(report, name: str) -> None:
    """A copy of a test's report where the GPU scripts collect their output ($OUT)."""
    if os.environ.get("OUT"):
        shutil.copy(report, os.path.join(os.environ["OUT"], name))


def gpu_env(test_kernels: bool = False) -> dict[str, str]:
    """This environment without the interpreter (and with tests/ importable, if asked)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if test_kernels:
        env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__),
                                             env.get("PYTHONPATH", "")])
    return env


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "diffcheck", *map(str, args)], env=gpu_env(),
                          capture_output=True, text=True, timeout=600)


def test_safe_kernels_pass_smoke_and_edge_on_the_gpu(tmp_path):
    report = tmp_path / "r.csv"
    done = run_cli("compare", "--device", "cuda", "--suite", "smoke", "--suite", "edge",
                   "--invalid-fill", "-1", "--report", report)
    assert done.returncode == 0, done.stderr + done.stdout
    df = pd.read_csv(report)
    assert set(df["status"]) == {"pass"} and df["device"].str.startswith("cuda").all()
    from diffcheck.impls import builtin

    assert set(df["implementation"]) == {i.name for i in builtin().values() if i.safe}
    assert df["elements_checked"].sum() > 0


def test_unguarded_kernels_get_the_cpu_statuses_on_the_gpu(tmp_path):
    from conftest import suite_cases
    from test_kernels import has_invalid_positions

    report = tmp_path / "r.csv"
    done = run_cli("compare", "--device", "cuda", "--suite", "smoke", "--suite", "edge",
                   "--impl", "decode:unguarded", "--impl", "mtp:unguarded", "--report", report)
    assert done.returncode == 1, done.stderr + done.stdout
    df = pd.read_csv(report)
    odd = {c.case_id for path in ("decode", "mtp") for c in suite_cases(path, "smoke", "edge")
           if has_invalid_positions(c)}
    invalid = df["case_id"].isin(odd)
    assert invalid.sum() >= 16
    # a tag used as an index can fault the device instead (README, "Limits")
    assert df.loc[invalid, "status"].isin(["oob_read", "fault"]).all()
    reads = df[invalid & (df["status"] == "oob_read")]
    # the default on a GPU launches instrumented copies: they see the address itself
    assert len(reads) and (reads["oob_read_found_by"] == "instrumented").all()
    assert (df.loc[~invalid, "status"] == "pass").all()
    # where a kernel cannot be instrumented, the red zones still see the reads
    plain = tmp_path / "plain.csv"
    done = run_cli("compare", "--device", "cuda", "--suite", "edge", "--impl", "decode:unguarded",
                   "--no-instrument", "--report", plain)
    assert done.returncode == 1, done.stderr + done.stdout
    df = pd.read_csv(plain)
    reads = df[df["case_id"].isin(odd) & (df["status"] == "oob_read")]
    assert len(reads) and reads["oob_read_found_by"].isin(["redzone-tag", "redzone-diff"]).all()


def gpu_settings(**overrides):
    from diffcheck.settings import RunSettings

    settings = RunSettings(torch.device("cuda"), "gpu-test", 0, isolation="process")
    for name, value in overrides.items():
        setattr(settings, name, value)
    return settings


def test_a_kernel_that_faults_the_device_is_a_fault_row_and_the_run_goes_on():
    # Workers compile for the GPU even though this process imported Triton interpreted.
    from conftest import make_impl, suite_cases

    from diffcheck.executors import run_all
    from diffcheck.job import Job
    from diffcheck.modes import Eager

    impl = make_impl("decode:faults-on-k512", "broken_kernels:decode_faults_on_k512")
    cases = suite_cases("decode", "smoke")
    # red zones only: the gather 4 GiB away really runs, and faults the device
    rows = run_all([Job(c, impl, Eager()) for c in cases], gpu_settings(instrument=False))
    statuses = {c.k: [] for c in cases}
    for case, row in zip(cases, rows, strict=True):
        statuses[case.k].append(row)
    (faulted,) = statuses[512]
    assert faulted.status == "fault", faulted.detail
    assert faulted.device.startswith("cuda")
    assert {r.status for r in statuses[256]} == {"pass"}
    # the default (instrumented) masks the lanes off before they fault and names the read
    (named,) = run_all([Job(c, impl, Eager()) for c in cases if c.k == 512], gpu_settings())
    assert named.status == "oob_read", named.detail
    assert named.oob_read_found_by == "instrumented"


def test_stale_suite_on_the_gpu_safe_kernels_in_bounds_unguarded_caught():
    from conftest import suite_cases

    from diffcheck.executors import run_all
    from diffcheck.impls import find
    from diffcheck.job import Job
    from diffcheck.modes import Eager

    kernels = {"decode": ("decode:guarded", "decode:pid", "decode:unguarded"),
               "mtp": ("mtp:guarded", "mtp:unguarded")}
    jobs = [Job(c, find(name), Eager()) for path, names in kernels.items()
            for c in suite_cases(path, "stale") for name in names]
    rows = run_all(jobs, gpu_settings())
    for row in rows:
        if row.impl_safe:
            assert row.status in ("pass", "stale_sensitive"), (row.case_id, row.detail)
    unguarded = {r.case_id: r for r in rows if r.implementation == "decode:unguarded"}
    unwritten = unguarded["stale/decode-stale-rows-unwritten"]
    assert unwritten.status == "oob_read"
    assert unwritten.first_oob_read.startswith("kv_indices[-1]")
    assert unwritten.oob_read_found_by == "instrumented"
    # red zones alone (a kernel that cannot be instrumented) see the same read
    job = next(j for j in jobs if j.impl.name == "decode:unguarded"
               and j.case.case_id == unwritten.case_id)
    (plain,) = run_all([job], gpu_settings(instrument=False))
    assert plain.status == "oob_read" and plain.first_oob_read.startswith("kv_indices[-1]")
    assert plain.oob_read_found_by == "redzone-tag"


def test_broken_kernels_are_caught_on_the_gpu_too():
    """Same status as on the CPU; an out-of-bounds read may fault the GPU instead (a red-zone
    tag used as an index), and the runaway loop just finishes there (its bound is ~2^30)."""
    from conftest import make_impl, suite_cases
    from test_broken_kernels import EXPECTED, RUN_WITH

    from diffcheck.executors import run_all
    from diffcheck.job import Job
    from diffcheck.modes import Eager
    from diffcheck.status import worst

    names = [n for n in EXPECTED if n != "decode_runaway"]
    jobs, owner = [], []
    for name in names:
        path = name.split("_")[0]
        impl = make_impl(f"{path}:{name}", f"broken_kernels:{name}")
        only = RUN_WITH.get(name, {}).get("case")
        for case in suite_cases(path, *RUN_WITH.get(name, {}).get("suites", ("smoke", "edge"))):
            if only not in (None, case.case_id):
                continue
            jobs.append(Job(case, impl, Eager()))
            owner.append(name)
    wrong = []
    for instrument, differences in ((True, ON_GPU), (False, ON_GPU_RED_ZONES_ONLY)):
        rows = run_all(jobs, gpu_settings(instrument=instrument))
        got = {name: worst([Status(r.status) for r, o in zip(rows, owner, strict=True)
                            if o == name]) for name in names}
        wrong += [(instrument, name, got[name]) for name in names
                  if got[name] not in differences.get(name, {EXPECTED[name][0]})]
    assert not wrong, wrong


#: where a GPU sees other than the CPU sandbox (README, "What a GPU sees")
ON_GPU = {
    # one past each region is the next region's first element: two programs race for it, and
    # a race that resolves the same way in all three reruns still reads as a red-zone read
    "decode_len_plus_one": {Status.STRAY_WRITE, Status.OOB_READ},
}
#: and without instrumentation (--no-instrument, or a kernel it cannot reach)
ON_GPU_RED_ZONES_ONLY = {
    **ON_GPU,
    # a gather 4 GiB away faults the device (instrumented, it is masked off and named)
    "decode_wild_index": {Status.FAULT},
    "decode_faults_on_k512": {Status.FAULT},
}


def test_every_read_the_cpu_sandbox_sees_is_a_read_on_the_gpu(tmp_path):
    """Parity: every broken kernel and unguarded fixture row whose CPU status is oob_read
    (tests/cpu_reads.csv, kept current by test_plausible.py) is oob_read on the GPU too,
    naming a buffer the CPU's finding names: the instrumented kernels see every address
    (tests/bounded_reads.py's reads only they can see), the plausible fillings find reads
    in torch code, and what they found stands when a red-zone value used as an index then
    faults the device."""
    from parity import recorded, same_buffer

    on_cpu = {(r["implementation"], r["case_id"]): r for r in recorded()
              if r["wild"] != "True"}
    rows, found = _parity_rows(on_cpu, gpu_settings())
    frame(rows).to_csv(tmp_path / "parity.csv", index=False)
    keep(tmp_path / "parity.csv", "report-parity.csv")
    wrong = [(r.implementation, r.case_id, r.status, r.detail[:300]) for r in rows
             if r.status != "oob_read" or not same_buffer(
                 r.path, on_cpu[(r.implementation, r.case_id)]["buffers"],
                 found[(r.implementation, r.case_id)])]
    found_by = sorted({r.oob_read_found_by for r in rows if r.status == "oob_read"})
    print(f"parity: {len(rows)} rows oob_read on CPU; on the GPU {len(rows) - len(wrong)} "
          f"alike, same buffer (found by {', '.join(found_by)}), {len(wrong)} not")
    assert len(rows) == len(on_cpu) >= 30, (len(rows), len(on_cpu))
    assert not wrong, "\n".join(map(str, wrong))
    assert "instrumented" in found_by


def _parity_rows(chosen: dict, settings):
    """The parity jobs' rows on the GPU, and the buffers each row's read finding names."""
    from parity import parity_jobs, read_buffers

    from diffcheck.executors import run_all
    from diffcheck.job import Job
    from diffcheck.modes import Eager

    found: dict[tuple[str, str], str] = {}

    def note(outcome) -> None:
        found[(outcome.row.implementation, outcome.row.case_id)] = read_buffers(
            outcome.findings)

    jobs = [Job(c, impl, Eager()) for impl, cases in parity_jobs() for c in cases
            if (impl.name, c.case_id) in chosen]
    return run_all(jobs, settings, note), found


def test_without_instrumentation_red_zones_miss_the_bounded_reads():
    """What instrumentation adds, measured: the reads of tests/bounded_reads.py (the kernel
    bounds what it read afterwards) are invisible to every red-zone filling on a GPU."""
    from parity import BOUNDED, recorded

    chosen = {(r["implementation"], r["case_id"]): r for r in recorded()
              if r["implementation"].split(":")[1] in BOUNDED}
    rows, _ = _parity_rows(chosen, gpu_settings(instrument=False))
    statuses = {r.status for r in rows}
    print(f"bounded reads without instrumentation: {len(rows)} rows, "
          f"{sum(r.status == 'oob_read' for r in rows)} oob_read ({sorted(statuses)})")
    assert len(rows) == len(chosen) >= 10
    # every row ran: an error row is no evidence that red zones miss the read
    assert not statuses & {"error", "fault", "timeout"}, [
        (r.implementation, r.case_id, r.status, r.error[:200]) for r in rows
        if r.status in ("error", "fault", "timeout")][:5]
    assert sum(r.status == "oob_read" for r in rows) < len(rows) / 2


@pytest.mark.parametrize("kernel, path, suites", [
    ("decode_peeks_past_kv_indptr", "decode", ("smoke", "replay")),
    ("mtp_reads_before_kv_indptr", "mtp", ("domain", "stale", "domain-replay")),
])
def test_a_bounded_read_is_named_in_eager_capture_and_replay(tmp_path, kernel, path, suites):
    """The kernel reads one element outside kv_indptr and throws the value away: on the GPU,
    under the default command's settings, every mode names kv_indptr (a far read through a
    request id past the table may land nearer another tensor), found by the instrumented
    kernel."""
    report = tmp_path / "r.csv"
    done = subprocess.run(
        [sys.executable, "-m", "diffcheck", "compare", "--device", "cuda", "--path", path,
         "--impl", f"bounded_reads.py:{kernel}", "--mode", "all", "--report", report,
         *(w for s in suites for w in ("--suite", s))],
        env=gpu_env(test_kernels=True), capture_output=True, text=True, timeout=600,
        cwd=os.path.dirname(__file__))
    assert done.returncode == 1, done.stderr[-2000:] + done.stdout[-2000:]
    df = pd.read_csv(report)
    keep(report, f"report-bounded-{kernel}.csv")
    read = df[df.status == "oob_read"]
    print(kernel, df.groupby(["mode", "status"]).size().to_dict())
    assert set(read["mode"]) == {"eager", "capture", "replay"}, df.groupby(
        ["mode", "status"]).size()
    named = read[read["first_oob_read"].str.startswith("kv_indptr[")]
    assert set(named["mode"]) == {"eager", "capture", "replay"}
    assert (read["oob_read_found_by"] == "instrumented").all()


def test_glm52_under_real_cuda_graphs(tmp_path):
    report = tmp_path / "r.csv"
    done = run_cli("compare", "--device", "cuda", "--mode", "all", "--suite", "glm52",
                   "--path", "decode", "--impl", "decode:unguarded", "--impl", "decode:pid",
                   "--impl", "decode:guarded", "--report", report)
    assert done.returncode == 1, done.stderr + done.stdout
    df = pd.read_csv(report)
    stale = df["case_id"].str.endswith("/stale-qo") & (df["mode"] == "replay")
    by_impl = {name: df[df["implementation"] == name] for name in set(df["implementation"])}
    unguarded = by_impl["decode:unguarded"]
    row = unguarded[stale[unguarded.index]].iloc[0]
    assert row["status"] == "oob_read" and row["first_oob_read"].startswith("kv_indices[-1]")
    assert set(unguarded[~stale[unguarded.index]]["status"]) == {"pass"}
    assert set(by_impl["decode:pid"]["status"]) == {"pass"}
    guarded = by_impl["decode:guarded"]
    assert set(guarded[stale[guarded.index]]["status"]) == {"stale_sensitive"}
    assert set(guarded[~stale[guarded.index]]["status"]) == {"pass"}


def test_host_read_during_a_real_cuda_capture_is_an_error_naming_it():
    from conftest import make_impl, suite_cases

    from diffcheck.executors import run_all
    from diffcheck.job import Job
    from diffcheck.modes import select

    impl = make_impl("decode:item", "graph_wrappers:decode_grid_from_item")
    case = suite_cases("decode", "smoke")[0]
    rows = {r.mode: r for r in run_all([Job(case, impl, m) for m in select("graph")
                                        if m.rows(case)], gpu_settings())}
    assert rows["capture"].status == "error" and ".item()" in rows["capture"].error


def test_the_default_command_catches_every_misbehaving_kernel_on_the_gpu(tmp_path):
    """test_no_false_passes.py's kernels through the default command on a real GPU."""
    from test_no_false_passes import CORRECT, EXPECTED, GPU_ONLY, KERNELS, OTHERS, SAFE, worst

    names = [*EXPECTED, *GPU_ONLY, *CORRECT]
    args = ["compare", "--device", "cuda", "--path", "decode", "--timeout", "20"]
    for name in [f"{KERNELS}:{n}" for n in names] + list(OTHERS):
        args += ["--impl", name]
    report = tmp_path / "r.csv"
    done = run_cli(*args, "--report", report, "--quiet")
    assert done.returncode == 1, done.stderr[-3000:]
    keep(report, "misbehaving-gpu.csv")
    df = pd.read_csv(report)
    got = worst(df)
    expected = {**{n: {s} for n, s in {**EXPECTED, **GPU_ONLY}.items()},
                **{n.rsplit(":", 1)[-1]: {s} for n, s in OTHERS.items()}, **MISBEHAVING_ON_GPU}
    wrong = {n: got.get(n) for n, s in expected.items()
             if Status(got.get(n, "pass")) not in s}
    assert not wrong, wrong
    for name in CORRECT:
        rows = df[df["implementation"].str.endswith(f":{name}")]
        assert len(rows) and rows["status"].isin(SAFE).all(), name


#: where the GPU may judge a misbehaving kernel differently from the CPU
MISBEHAVING_ON_GPU = {
    # the GPU decides who wins a race: a different winner each run, or always the wrong one
    "decode_racy": {Status.NONDETERMINISTIC, Status.MISMATCH},
    # a tag used as an index faults the device instead of being read
    "unguarded": {Status.OOB_READ, Status.FAULT},
    # reseeding the CUDA generator while a graph is being captured raises there
    "decode_reseeds_the_rng": {Status.SIDE_EFFECT, Status.ERROR},
    "decode_len_plus_one": {Status.OOB_READ, Status.NONDETERMINISTIC, Status.STRAY_WRITE},
    # stores into an input undone before the call returns: the sandbox sees them, the GPU
    # only a negation that a race left behind (README, "What a GPU sees")
    "decode_borrows_kv_indices": {Status.INPUT_WRITE, Status.PASS, Status.STALE_SENSITIVE},
}


def test_a_leftover_thread_never_spoils_another_implementations_rows(tmp_path):
    """An implementation whose thread keeps launching work on the device, then correct
    kernels in the same run: their captures must not be invalidated (the worker holding the
    thread is replaced before they run)."""
    from test_no_false_passes import KERNELS

    report = tmp_path / "r.csv"
    done = run_cli("compare", "--device", "cuda", "--path", "decode", "--suite", "smoke",
                   "--mode", "capture", "--impl",
                   f"{KERNELS}:decode_leaves_a_thread_on_the_device", "--impl", "decode:pid",
                   "--impl", "decode:guarded", "--report", report, "--quiet")
    assert done.returncode == 1, done.stderr[-3000:]
    keep(report, "leftover-gpu.csv")
    df = pd.read_csv(report)
    culprit = df["implementation"].str.endswith("on_the_device")
    # the thread starts on the culprit's first call in a worker: that call is its finding
    assert (df[culprit]["status"] == "side_effect").any()
    assert df[culprit]["status"].isin(["side_effect", "pass"]).all()
    assert (df[~culprit]["status"] == "pass").all(), df[~culprit][["case_id", "detail"]]


def _sanitizer() -> str | None:
    import glob

    return shutil.which("compute-sanitizer") or next(
        iter(sorted(glob.glob("/usr/local/cuda*/bin/compute-sanitizer"))), None)


@pytest.mark.parametrize("impl, clean", [("decode:unguarded", False), ("decode:guarded", True)])
def test_memcheck_confirms_a_read_through_the_plain_call(impl, clean):
    """What a failing row's "confirm with memcheck" line runs: diffcheck call with every
    buffer its own cudaMalloc, so memcheck sees kv_indices[-1] as out of bounds."""
    sanitizer = _sanitizer()
    if sanitizer is None:
        pytest.skip("compute-sanitizer is not installed")
    env = gpu_env()
    env["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"
    done = subprocess.run(
        [sanitizer, "--tool", "memcheck", sys.executable, "-m", "diffcheck", "call",
         "--path", "decode", "--suite", "edge", "--case", "*odd-minus-one", "--impl", impl,
         "--device", "cuda"], env=env, capture_output=True, text=True, timeout=600)
    text = done.stdout + done.stderr
    assert ("Invalid __global__ read" not in text) == clean, text[-3000:]
    assert "ERROR SUMMARY: 0 errors" in text if clean else "ERROR SUMMARY: 0 errors" not in text


def test_the_captured_check_agrees_with_the_full_check_and_is_timed(tmp_path):
    """diffcheck.fastcheck on real graphs: zero counters on correct kernels over generated
    cases of one shape, a counter on each broken kernel the full check fails, and bench's
    checks/s line for it."""
    env = gpu_env()
    script = os.path.join(os.path.dirname(__file__), "captured_agreement.py")
    agreed = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True,
                            timeout=600)
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr[-3000:]
    print(agreed.stdout.strip())
    done = run_cli("bench", "--path", "decode", "--regime", "4k", "--repeats", "30")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [x for x in done.stdout.splitlines() if "checks/s" in x]
    assert any("memory-safety check, captured" in x for x in lines), done.stdout
    assert any("per device mutant" in x for x in lines), done.stdout
    print(done.stdout)


def test_fuzz_on_the_gpu_finds_the_fast_path_and_passes_correct_kernels(tmp_path):
    env = gpu_env(test_kernels=True)
    for extra in ([], ["--fast"]):
        done = subprocess.run(
            [sys.executable, "-m", "diffcheck", "fuzz", "--impl", "decode:guarded",
             "--budget", "60s", "--size", "production", *extra], env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=600)
        print(done.stdout.strip().splitlines()[-1])
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    found = subprocess.run(
        [sys.executable, "-m", "diffcheck", "fuzz", "--impl",
         "fuzz_kernels:decode_fast_path_for_large_batches", "--path", "decode", "--budget",
         "60s", "--fast"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    print(found.stdout)
    assert found.returncode == 1 and "mismatch" in found.stdout, found.stderr[-3000:]
    # the saved case (a device mutant or a drawn case) fails again through compare
    command = next(x for x in found.stdout.splitlines() if x.startswith("reproduce: "))
    words = shlex.split(command.removeprefix("reproduce: "))
    again = subprocess.run([sys.executable, "-m", *words], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 1, again.stdout + again.stderr[-3000:]


def test_a_device_mutant_that_faults_the_device_is_named_and_saved(tmp_path):
    """fuzz --fast queues mutants back to back, so a fault names none of them; the case's
    mutants run again, each waited for, and the one that faulted is the saved case. (The
    kernel faults only in a band of far positions that well-formed generated cases never
    reach, test_mutants.py; the seed is fixed, as a stale case may; production draws only,
    whose well-formed cases get the mutants.)"""
    env = gpu_env(test_kernels=True)
    done = subprocess.run(
        [sys.executable, "-m", "diffcheck", "fuzz", "--impl",
         "fuzz_kernels:decode_faults_on_far_positions", "--path", "decode", "--budget", "60s",
         "--fast", "--shrink-time", "15", "--seed", "1", "--size", "production"], env=env,
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    print(done.stdout)
    assert done.returncode == 1 and "(fault" in done.stdout, done.stdout + done.stderr[-3000:]
    saved = next(x for x in done.stdout.splitlines() if x.startswith("saved: "))
    assert re.search(r"-m\d+\.npz$", saved), saved


TUNED = os.path.join(os.path.dirname(__file__), "autotuned_kernels.py")
FAILS = {s.value for s in Status if s.severity >= Status.DIVERGENCE.severity}


def _tuned_run(tmp_path, name: str, *suites: str):
    report = tmp_path / f"{name}.csv"
    picked = [a for s in suites for a in ("--suite", s)]
    done = run_cli("compare", "--device", "cuda", "--impl", f"{TUNED}:{name}", "--path",
                   "decode", *picked, "--report", report)
    keep(report, f"engines2-{name}.csv")
    return done, pd.read_csv(report, keep_default_na=False)


@pytest.mark.parametrize("name", ["tuned_decode", "tuned_decode_own_bench", "heuristic_decode",
                                  "cached_columns_decode", "shared_scratch_decode"])
def test_issue25_kernels_on_the_gpu(tmp_path, name):
    """Correct autotuned and heuristic kernels pass smoke, stale and replay on the GPU under
    every config; the two launchers whose graphs keep freed memory pass eager and capture
    and are caught in replay (the free memory poisoned after an eager call on a larger
    batch)."""
    done, df = _tuned_run(tmp_path, name, "smoke", "stale", "replay")
    failing = df[df["status"].isin(FAILS | {"error"})]
    if name in ("cached_columns_decode", "shared_scratch_decode"):
        assert done.returncode == 1, done.stderr + done.stdout
        assert set(failing["mode"]) == {"replay"}, failing[["case_id", "mode", "status"]]
        print(name, failing[["status", "finding"]].head(3).to_string())
    else:
        assert done.returncode == 0, done.stderr + done.stdout
        assert failing.empty, failing[["case_id", "mode", "status", "finding"]]
        if name.startswith("tuned"):
            assert set(df["configs"]) == {2}


def test_a_bug_in_one_autotune_config_is_caught_and_named_on_the_gpu(tmp_path):
    done, df = _tuned_run(tmp_path, "tuned_decode_second_config_unmasked", "smoke", "replay")
    assert done.returncode == 1, done.stderr + done.stdout
    caught = df[df["status"] == "oob_read"]
    assert set(caught["mode"]) == {"eager", "capture", "replay"}
    assert caught["config"].str.startswith("2/2 _tuned_body: BLOCK_N=256").all()


def test_every_planted_domain_kernel_fails_the_domain_suite_on_the_gpu(tmp_path):
    """tests/domain_kernels.py's kernels (each a class only the declared domain holds) fail
    the `domain` suite on a GPU as on the CPU, where the compiled code runs; the fixed tile's
    spill into the next request's region is a race there, which the reversed program ids of
    the instrumented copies decide the other way once."""
    import domain_kernels

    kernels = os.path.join(os.path.dirname(__file__), "domain_kernels.py")
    missed = {}
    for name in domain_kernels.EXPECTED:
        if name in domain_kernels.GPU_ONLY:
            continue
        report = tmp_path / f"{name}.csv"
        done = run_cli("compare", "--device", "cuda", "--impl", f"{kernels}:{name}", "--path",
                       domain_kernels.PATH_OF[name], "--suite", "domain", "--report", report,
                       "--quiet")
        statuses = set(pd.read_csv(report)["status"]) if report.exists() else set()
        if done.returncode != 1 or statuses <= {"pass", "stale_sensitive"}:
            missed[name] = (done.returncode, sorted(statuses), done.stderr[-500:])
    assert not missed, missed


def test_devices_all_spreads_over_every_visible_gpu_and_names_each_rows_device(tmp_path):
    """Issue 27 on whatever host runs it: one worker per visible GPU, every row's device
    named, the same statuses as one device."""
    count = torch.cuda.device_count()
    spread, single = tmp_path / "spread.csv", tmp_path / "single.csv"
    args = ["compare", "--device", "cuda", "--path", "decode", "--suite", "smoke", "--quiet"]
    done = run_cli(*args, "--devices", "all", "--report", spread)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"one per device ({','.join(map(str, range(count)))})" in done.stderr
    assert run_cli(*args, "--report", single).returncode == 0
    keep(spread, "devices-all.csv")
    rows, one = pd.read_csv(spread), pd.read_csv(single)
    named = {f"cuda:{torch.cuda.get_device_name(i)} (device {i})" for i in range(count)}
    assert set(rows["device"]) <= named and len(set(rows["device"])) == min(count, len(rows))
    assert list(rows["status"]) == list(one["status"])
    assert list(rows["case_id"]) == list(one["case_id"])
    timed = tmp_path / "bench.csv"
    done = run_cli("bench", "--path", "decode", "--impl", "decode:guarded", "--regime", "4k",
                   "--repeats", "5", "--no-check", "--devices", "all", "--report", timed)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "median us by device" in done.stdout
    assert set(pd.read_csv(timed, dtype={"device": str})["device"]) == \
        {str(i) for i in range(count)}
