"""`diffcheck fuzz`: generated cases find what no named suite holds, shrink it, save it.

The four kernels of fuzz_kernels.py pass every named CPU suite (asserted below) and are each
found by a seeded 60-second fuzz run, shrunk to a handful of requests, saved, and reproduced
by `compare --cases`. Correct kernels survive long runs. Generated cases are well-formed for
every path; scenario files round-trip and refuse bad input with exit 4.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import domain_kernels
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from test_cli import error_line, invoke

from diffcheck.case import Scenario
from diffcheck.casefile import case_problems, load_any, save_scenario
from diffcheck.domain import domain_of
from diffcheck.errors import ExitCode
from diffcheck.fixtures.derived import replay_spoilers
from diffcheck.fixtures.generated import CPU_LIMITS, batches, plans
from diffcheck.fuzz import Budget
from diffcheck.modes import Replay
from diffcheck.paths import get_path, known_paths
from diffcheck.report import read_report
from diffcheck.selection import build_suites

TESTS = Path(__file__).parent


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A diffcheck command in a fresh process, as a user runs it (test kernels importable)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "diffcheck", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def requests_of(target) -> int:
    """Requests (padding included) of a saved case, or of a scenario's largest step."""
    spec = get_path(target.path)
    steps = target.steps if isinstance(target, Scenario) else [target]
    return max(spec.counts(step.kernel_inputs())[0] for step in steps)


#: kernel, path, the most requests its shrunk case may keep (the fast path needs 8)
CLASSES = [
    ("decode_fast_path_for_large_batches", "decode", 8),
    ("decode_grid_frozen_at_warm_up", "decode", 2),
    ("blocktable_padding_id_wraps", "blocktable", 1),
    ("blocktable_slot_through_float", "blocktable", 1),
]


@pytest.mark.parametrize("kernel,path,most", CLASSES, ids=[c[0] for c in CLASSES])
def test_fuzz_finds_shrinks_and_saves_each_class_within_a_minute(tmp_path, kernel, path, most):
    """Under fuzz's defaults (no --mode: cases and replay scenarios alike where the path
    generates scenarios; the frozen-at-capture class fails only in a replay)."""
    impl = f"fuzz_kernels:{kernel}"
    done = run("fuzz", "--impl", impl, "--path", path, "--budget", "60s", "--seed", "0",
               "--save-to", "found", cwd=tmp_path)
    assert done.returncode == ExitCode.FAILURES, done.stdout + done.stderr[-3000:]
    found = re.search(r"fuzz: (\w+) after (\d+) generated cases \((\d+) s\)", done.stdout)
    assert found and found.group(1) == "mismatch", done.stdout
    assert int(found.group(3)) <= 60
    assert "checks/s" in done.stderr  # progress while searching
    saved = list((tmp_path / "found").glob("*.npz"))
    assert len(saved) == 1
    target = load_any(saved[0])
    assert requests_of(target) <= most, done.stdout
    what = "scenario" if isinstance(target, Scenario) else "case"
    assert f"The smallest failing {what} found" in done.stdout
    # the printed command reproduces it, and the saved folder is a regression suite
    command = re.search(r"^reproduce: diffcheck (.*)$", done.stdout, re.M).group(1).split()
    again = run(*command, "--report", "r.csv", "--quiet", cwd=tmp_path)
    assert again.returncode == ExitCode.FAILURES, again.stderr[-2000:]
    assert "mismatch" in set(read_report(tmp_path / "r.csv")["status"])
    rerun = run("fuzz", "--impl", impl, "--path", path, "--budget", "1",
                "--save-to", "found", cwd=tmp_path)
    assert rerun.returncode == ExitCode.FAILURES
    assert "a saved regression case still fails" in rerun.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kernel,path", [(c[0], c[1]) for c in CLASSES],
                         ids=[c[0] for c in CLASSES])
def test_every_named_cpu_suite_passes_the_fuzz_kernels(tmp_path, kernel, path):
    """What made them fuzz-only: every hand-named suite a CPU runs (production ones are sized
    for a GPU; the suites derived from the domain catch two of them, test below) in every
    mode passes them."""
    suites = [s for s in get_path(path).suites() if not s.startswith("production")
              and not s.startswith("domain")]
    args = [a for s in suites for a in ("--suite", s)]
    done = run("compare", "--impl", f"fuzz_kernels:{kernel}", "--path", path, *args,
               "--report", "r.csv", "--quiet", cwd=tmp_path)
    assert done.returncode == ExitCode.OK, done.stderr[-3000:]
    df = read_report(tmp_path / "r.csv")
    assert set(df["status"]) <= {"pass", "stale_sensitive"}
    assert set(df["suite"]) == set(suites)


#: the fuzz-only classes the suites derived from the domain now catch, with the status
DERIVED_CATCH = [("decode_grid_frozen_at_warm_up", "decode", "mismatch"),  # a padded capture
                 ("blocktable_slot_through_float", "blocktable", "mismatch")]  # past 2^24


@pytest.mark.slow
@pytest.mark.parametrize("kernel,path,status", DERIVED_CATCH, ids=[c[0] for c in DERIVED_CATCH])
def test_the_domain_suites_catch_two_fuzz_only_classes(tmp_path, kernel, path, status):
    done = run("compare", "--impl", f"fuzz_kernels:{kernel}", "--path", path, "--suite",
               "domain", "--suite", "domain-replay", "--report", "r.csv", "--quiet", cwd=tmp_path)
    assert done.returncode == ExitCode.FAILURES, done.stderr[-3000:]
    assert status in set(read_report(tmp_path / "r.csv")["status"])


@pytest.mark.slow
@pytest.mark.parametrize("impl,path,mode", [
    ("decode:guarded", "decode", "eager"),
    ("decode:pid", "decode", "graph"),
    ("mtp:guarded", "mtp", "auto"),
    ("fuzz_kernels:blocktable_right", "blocktable", "auto"),
    ("prefill:guarded", "prefill", "eager"),
])
def test_correct_kernels_survive_a_long_fuzz_run(tmp_path, impl, path, mode):
    chosen = ["--mode", mode] if mode != "auto" else []  # auto: fuzz's default
    done = run("fuzz", "--impl", impl, "--path", path, *chosen, "--budget", "12s",
               "--seed", "3", cwd=tmp_path)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr[-3000:]
    assert re.search(r"fuzz: no failure: \d+ cases in \d+ s \([\d.,]+ checks/s\)", done.stdout)
    assert not (tmp_path / "fuzz-cases").exists()


@pytest.mark.parametrize("path", sorted(known_paths()))
def test_generated_cases_and_scenarios_are_well_formed_for_every_path(path):
    spec = get_path(path)
    gen = spec.generators()
    kinds = set()

    domain = domain_of(spec)  # as fuzz draws them: by the declared domain's partitions

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(batches(gen, CPU_LIMITS, domain))
    def check(batch):
        case = gen.layout(batch).case(path, "", batch.seed, spec.fill)
        assert not case_problems(case), (batch, case_problems(case))
        kinds.add("stale" if batch.spoiler else "well-formed")
        # the slots a kernel writes are large (but a planted NULL block's, or a zeroed
        # padding entry's that positions past the pages read: block 0)
        if batch.slot_base and not batch.spoiler and \
                not {"null", "pad-zero"} & set(batch.table):
            t = case.kernel_inputs()
            expected, mask = spec.reference(t, case.k, spec.fill, spec.scalars_of(case.scalars),
                                            spec.workspace_size(t, case.k))["out"]
            written = expected[mask & (expected != spec.fill)]
            assert not written.numel() or int(written.min()) >= 1 << 24

    check()
    assert kinds == {"stale", "well-formed"}
    if gen.scenario is None:
        return

    stale, spoilers, ks = set(), set(), set()
    generic = replay_spoilers(domain, gen)
    assert generic  # the domain's stale transformations reach replayed steps too

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(plans(gen, CPU_LIMITS, domain, generic))
    def check_plan(plan):
        spoilers.update(s for _, _, s, _ in plan.steps if s)
        ks.add(plan.k)
        scenario = gen.scenario(plan).case(path, "", plan.seed, spec.fill)
        assert len(scenario.steps) == len(plan.steps) + (2 if plan.second else 1)
        assert sorted(set(scenario.sizes)) == sorted({plan.graph, plan.second} - {0})
        for step in scenario.steps:
            assert not case_problems(step), (plan, case_problems(step))
            stale.add(step.well_formed)

    check_plan()
    assert stale == {True, False}  # stale steps among the fresh ones
    assert spoilers & set(generic) and len(ks) > 1, (spoilers, ks)


def test_budgets_parse_times_and_counts():
    assert Budget.parse("60s") == Budget(seconds=60)
    assert Budget.parse("2m") == Budget(seconds=120)
    assert Budget.parse("500") == Budget(cases=500)
    assert Budget(cases=3).spent(0.0, 3) and not Budget(seconds=5).spent(4.9, 10**6)
    for bad in ("", "0", "-1s", "10x", "1.5"):
        with pytest.raises(Exception, match="--budget"):
            Budget.parse(bad)


def test_fuzz_usage_errors_are_one_line_and_exit_4(tmp_path):
    result = invoke("fuzz", "--impl", "decode:guarded", "--budget", "soon")
    assert result.exit_code == ExitCode.USAGE and "--budget" in error_line(result)
    result = invoke("fuzz", "--impl", "prefill:guarded", "--mode", "replay")
    assert result.exit_code == ExitCode.USAGE
    assert "generates no replay scenarios" in error_line(result)
    result = invoke("fuzz", "--impl", "decode:guarded", "--mutants", "8")
    assert result.exit_code == ExitCode.USAGE and "--mutants" in error_line(result)
    result = invoke("fuzz", "--impl", "my_engine.ops:convert")
    assert result.exit_code == ExitCode.USAGE and "--path" in error_line(result)
    result = invoke("fuzz", "--impl", "decode:guarded", "--fast", "--device", "cpu")
    assert result.exit_code == ExitCode.USAGE and "--fast" in error_line(result)


def scenario() -> Scenario:
    return build_suites(["decode"], ["replay"], 0)[0]


def test_a_big_endian_case_file_loads_as_its_values(tmp_path):
    import numpy as np

    from diffcheck.casefile import save_case

    case = suite_cases_of("decode", "edge")[0]
    file = save_case(case, tmp_path / "c.npz")
    with np.load(file, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays = {k: (v.astype(">i4") if k != "meta" else v) for k, v in arrays.items()}
    np.savez(tmp_path / "big.npz", **arrays)
    loaded = load_any(tmp_path / "big.npz")
    assert all(torch.equal(loaded.inputs[n], case.inputs[n]) for n in case.inputs)


def suite_cases_of(path, suite):
    return build_suites([path], [suite], 0)


def test_scenario_files_round_trip_and_replay(tmp_path):
    original = scenario()
    file = save_scenario(original, tmp_path / "s.npz")
    loaded = load_any(file)
    assert isinstance(loaded, Scenario) and loaded.sizes == original.sizes
    assert [s.name for s in loaded.steps] == [s.name for s in original.steps]
    for a, b in zip(loaded.steps, original.steps, strict=True):
        assert all(torch.equal(a.inputs[n], b.inputs[n]) for n in b.inputs)
        assert (a.intended is None) == (b.intended is None)
    report = tmp_path / "r.csv"
    result = invoke("compare", "--cases", file, "--impl", "decode:guarded", "--path", "decode",
                    "--mode", "replay", "--report", report, "--quiet")
    assert result.exit_code == ExitCode.OK, result.output
    df = read_report(report)
    assert len(df) == len(Replay().rows(original)) and set(df["mode"]) == {"replay"}
    assert df["reproduce"].str.contains(str(file.resolve())).all()
    shown = invoke("show", file)
    assert shown.exit_code == 0 and "replay scenario of path decode" in shown.output


@pytest.mark.parametrize("damage,message", [
    ("sizes", "one graph size"),
    ("steps", "no 'steps' list"),
    ("entry", "unexpected entry"),
    ("step-dtype", "step 0: "),
    ("one-step", "at least one more"),
    ("fill-differs", "step 1 has fill"),
    ("shape-differs", "other shapes"),
    ("digit", "unexpected entry"),
])
def test_bad_scenario_files_are_refused_with_exit_4(tmp_path, damage, message):
    import json

    import numpy as np

    file = save_scenario(scenario(), tmp_path / "s.npz")
    with np.load(file, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    if damage == "sizes":
        meta["sizes"] = meta["sizes"][:-1]
    elif damage == "steps":
        meta["steps"] = "three"
    elif damage == "entry":
        arrays["steps/99/inputs/kv_indptr"] = np.zeros(2, np.int32)
    elif damage == "digit":
        arrays["steps/\u00b3/inputs/kv_indptr"] = np.zeros(2, np.int32)
    elif damage == "one-step":
        meta["steps"], meta["sizes"] = meta["steps"][:1], meta["sizes"][:1]
        arrays = {k: v for k, v in arrays.items() if not k.startswith("steps/") or
                  k.startswith("steps/0/")}
    elif damage == "fill-differs":
        meta["steps"][1]["fill"] = -1
    elif damage == "shape-differs":
        key = "steps/1/inputs/token_indices"
        arrays[key] = np.concatenate([arrays[key], np.full((1, arrays[key].shape[1]), -1,
                                                           np.int32)])
    else:
        key = next(k for k in arrays if k.startswith("steps/0/inputs/"))
        arrays[key] = arrays[key].astype(np.int64)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad.npz", **arrays)
    result = invoke("compare", "--cases", tmp_path / "bad.npz", "--impl", "decode:guarded",
                    "--path", "decode", "--mode", "replay")
    assert result.exit_code == ExitCode.USAGE
    assert message in error_line(result)


def test_the_recorder_records_a_live_graphs_replays_as_one_scenario(tmp_path):
    """An engine-like loop: static buffers, a warm-up call on a real batch padded to the
    graph, then three replays of larger batches copied into the same buffers."""
    import numpy as np

    from diffcheck.fixtures.decode import decode_static, decode_step
    from diffcheck.impls import find
    from diffcheck.record import ScenarioRecorder

    rng, k, graph = np.random.default_rng(0), 256, 4
    static = decode_static(graph, k)
    first = decode_step(rng, static, [40])
    buffers = {n: torch.from_numpy(a.copy()) for n, a in first.items()}
    out = torch.zeros(graph * k, dtype=torch.int32)
    recorder = ScenarioRecorder("decode", tmp_path / "live.npz")
    convert = recorder.wrap(find("decode:guarded").load())
    convert(*buffers.values(), NUM_TOPK_TOKENS=k, out=out)  # the warm-up, as engines do
    for real in (2, 4, 3):
        for name, array in decode_step(rng, static, [300] * real).items():
            buffers[name].copy_(torch.from_numpy(array))
        recorder.replay()
    file = recorder.save()
    scenario = load_any(file)
    assert isinstance(scenario, Scenario) and len(scenario.steps) == 4
    assert torch.equal(scenario.steps[-1].inputs["kv_indptr"], buffers["kv_indptr"])
    for impl, code, statuses in (("decode:guarded", ExitCode.OK, {"pass"}),
                                 ("fuzz_kernels:decode_grid_frozen_at_warm_up",
                                  ExitCode.FAILURES, {"mismatch"})):
        done = run("compare", "--cases", str(file), "--impl", impl, "--path", "decode",
                   "--mode", "replay", "--report", "r.csv", "--quiet", cwd=tmp_path)
        assert done.returncode == code, done.stderr[-2000:]
        assert statuses <= set(read_report(tmp_path / "r.csv")["status"])


def test_ctrl_c_while_shrinking_keeps_the_smallest_failing_case_so_far():
    from conftest import CPU, make_impl

    from diffcheck.executors import settings_for
    from diffcheck.fuzz import Checker, fuzz
    from diffcheck.modes import Eager
    from diffcheck.status import DEFAULT_FAIL_ON

    impl = make_impl("blocktable:blocktable_padding_id_wraps",
                     "fuzz_kernels:blocktable_padding_id_wraps")
    checker = Checker(impl, [Eager()], settings_for([impl], CPU, 0, isolation="none"))
    lines = []

    def interrupt_when_shrinking(line: str) -> None:
        lines.append(line)
        if "shrinking" in line:
            raise KeyboardInterrupt

    result = fuzz(get_path("blocktable"), checker, False, Budget(seconds=60), 0, CPU_LIMITS,
                  -1, DEFAULT_FAIL_ON, 60.0, interrupt_when_shrinking)
    assert result.interrupted and result.finding is not None, lines
    assert result.finding.row.status == "mismatch"


def test_diffcheck_failing_while_fuzzing_is_an_error_never_no_failure():
    from diffcheck.fuzz import fuzz
    from diffcheck.status import DEFAULT_FAIL_ON

    class Broken:
        def rows(self, target, modes=None):
            raise RuntimeError("staging exploded")

    with pytest.raises(RuntimeError, match="staging exploded"):
        fuzz(get_path("decode"), Broken(), False, Budget(cases=20), 0, CPU_LIMITS, 0,
             DEFAULT_FAIL_ON)


@pytest.mark.parametrize("signals", [1, 2], ids=["one-sigterm", "two-sigterms-0.3s-apart"])
def test_sigterm_while_shrinking_keeps_the_smallest_failing_case(tmp_path, signals):
    """A cancelled job, once or twice in a row: exit 2, and the failing case is on disk (it
    is saved when found and at each smaller one, before anything can stop the save)."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    fuzzing = subprocess.Popen(
        [sys.executable, "-m", "diffcheck", "fuzz", "--impl",
         "fuzz_kernels:blocktable_slot_through_float", "--path", "blocktable", "--budget",
         "120s", "--shrink-time", "300", "--save-to", "found", "--mode", "eager"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in fuzzing.stderr:
        seen.append(line)
        if "shrinking it" in line:
            break
    assert any("shrinking it" in line for line in seen), "".join(seen)[-2000:]
    # the line comes once the case is saved; the stop lands while shrinking has begun
    time.sleep(0.5)
    for _ in range(signals):
        fuzzing.send_signal(signal.SIGTERM)
        time.sleep(0.3)
    out, err = fuzzing.communicate(timeout=120)
    assert fuzzing.returncode == ExitCode.INTERRUPTED, out + err[-2000:]
    saved = list((tmp_path / "found").glob("*.npz"))
    assert len(saved) == 1, saved
    assert load_any(saved[0]).path == "blocktable"


@pytest.mark.parametrize("path", sorted(known_paths()))
def test_fuzz_draws_every_row_stride_the_domain_declares(path):
    """Contiguous rows, a 16-aligned wider buffer and a stride Triton does not see as
    aligned: each a partition of the domain, each drawn (the contiguous one once was not)."""
    from diffcheck.fixtures.generated import domain_draws

    spec = get_path(path)
    groups = domain_draws(domain_of(spec), spec.generators(), CPU_LIMITS)["extra_cols"]
    widths = {w for group in groups for w in group}
    assert 0 in widths and 16 in widths and any(w % 16 for w in widths), groups


def test_a_stale_draw_that_differs_is_checked_as_its_intended_batch_too():
    """A kernel wrong for pages of 48 differs from the intended output on a stale draw as on
    any other (stale_sensitive, no failure); the intended batch, checked as a well-formed call,
    is its mismatch, and the case kept is that batch, which fails again when replayed."""
    from conftest import CPU, make_impl

    from diffcheck.executors import settings_for
    from diffcheck.fixtures.generated import Batch
    from diffcheck.fuzz import Checker, _Search
    from diffcheck.modes import Eager
    from diffcheck.status import DEFAULT_FAIL_ON

    impl = make_impl("blocktable:blocktable_page_by_shift",
                     "domain_kernels:blocktable_page_by_shift")
    checker = Checker(impl, [Eager()], settings_for([impl], CPU, 0, isolation="none"))
    scalars = (("page_size", 48), ("stride_rows", 0), ("layer_id", 0), ("bounded", 0),
               ("valid_counts", 0))
    drawn = Batch(k=256, contexts=(300, 40), drafts=(1, 1), oddities=(), shuffled=True,
                  extra_rows=0, extra_cols=0, padding=0, slot_base=0,
                  spoiler="token_indices:leftover", scalars=scalars, without_out=False, seed=5)
    search = _Search(get_path("blocktable"), checker, Budget(cases=10), -1, DEFAULT_FAIL_ON,
                     0.0, lambda line: None, lambda target: None)
    stale = search.target_of(drawn)
    assert not stale.well_formed
    rows = checker.rows(stale)
    assert {r.status for r in rows} == {"stale_sensitive"}
    assert {r.status for r in search._intended_rows(drawn, stale, rows)} == {"mismatch"}
    intended = search.target_of(drawn)
    assert intended.well_formed and intended.scalars["page_size"] == 48
    assert intended.description.startswith("the intended batch of a stale draw")
    assert {r.status for r in checker.rows(intended)} == {"mismatch"}
    # a correct kernel's stale draw stays what it was: nothing more to find in its batch
    right = make_impl("blocktable:blocktable_int64_row_offset",
                      "domain_kernels:blocktable_int64_row_offset")
    fine = _Search(get_path("blocktable"), Checker(right, [Eager()], checker.settings),
                   Budget(cases=10), -1, DEFAULT_FAIL_ON, 0.0, lambda line: None,
                   lambda target: None)
    kept = fine.checker.rows(stale)
    assert fine._intended_rows(drawn, stale, kept) is kept
    assert not fine.target_of(drawn).well_formed


#: every planted kernel of the domain (tests/domain_kernels.py) the CPU can show
DOMAIN_PLANTED = [name for name in domain_kernels.EXPECTED if name not in domain_kernels.GPU_ONLY]


@pytest.mark.slow
@pytest.mark.parametrize("kernel", DOMAIN_PLANTED)
def test_fuzz_under_its_defaults_finds_each_planted_domain_kernel(tmp_path, kernel):
    """Issue 21: from an empty regression folder, within 5 minutes on this CPU."""
    path = domain_kernels.PATH_OF[kernel]
    done = run("fuzz", "--impl", f"domain_kernels:{kernel}", "--path", path, "--budget", "300s",
               "--shrink-time", "5", "--save-to", "found", cwd=tmp_path)
    assert done.returncode == ExitCode.FAILURES, done.stdout + done.stderr[-3000:]
    found = re.search(r"fuzz: (\w+) after (\d+) generated cases \((\d+) s\)", done.stdout)
    assert found and int(found.group(3)) <= 300, done.stdout
    assert found.group(1) in (domain_kernels.EXPECTED[kernel], "mismatch", "oob_read",
                              "oob_write", "stray_write"), done.stdout


def test_a_search_takes_turns_between_kinds_of_draws(monkeypatch):
    """Production-size draws alone give a GPU search a few cases a minute; taking turns with
    small structural draws (checked by their own modes) gives both kinds about half the time,
    each turn a search of its own with a seed of its own."""
    import diffcheck.fuzz as fuzzing
    from diffcheck.fixtures.generated import Limits
    from diffcheck.modes import Eager
    from diffcheck.status import DEFAULT_FAIL_ON

    small_modes = (Eager(),)
    few = Limits(requests=2)

    class Recording:
        modes, seen = [Eager()], []

        def rows(self, target, modes=None):
            self.seen.append(("small" if modes is not None else "few", modes))
            return []

    monkeypatch.setattr(fuzzing, "TURN_SECONDS", 0.5)
    searches = []
    real = fuzzing._search_once
    monkeypatch.setattr(fuzzing, "_search_once",
                        lambda *a: (searches.append((a[2], a[-1])), real(*a)))
    checker = Recording()
    draws = (fuzzing.Draws("small", CPU_LIMITS, small_modes), fuzzing.Draws("few", few))
    result = fuzzing.fuzz(get_path("decode"), checker, False, Budget(seconds=3), 7, draws, 0,
                          DEFAULT_FAIL_ON)
    assert result.finding is None and result.checked == len(checker.seen)
    kinds = [kind for kind, _ in checker.seen]
    turns = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
    assert turns[:4] == ["small", "few", "small", "few"], turns
    assert all(modes == list(small_modes) for kind, modes in checker.seen if kind == "small")
    assert [(limits, seed) for limits, seed in searches[:3]] == [
        (CPU_LIMITS, 7), (few, 7), (CPU_LIMITS, "7:2")]  # seeds: by --seed, then by turn


def test_on_a_gpu_fuzz_takes_turns_between_small_and_production_draws(monkeypatch):
    """The default size on a GPU: small structural draws (checked in full under --fast, not
    screened) in turns with production-size ones (screened, with device mutants);
    --size production or small keeps one kind."""
    import diffcheck.fuzz as fuzzing
    from diffcheck import backend
    from diffcheck.fastcheck import Screened
    from diffcheck.fixtures.generated import GPU_LIMITS
    from diffcheck.modes import Eager

    monkeypatch.setattr(backend, "resolve", lambda device: torch.device("cuda"))
    monkeypatch.setattr(backend, "prepare", lambda device: None)
    fast = fuzzing._set_up(fuzzing.FuzzOptions(impl="decode:guarded", fast=True))
    small, production = fast.draws
    assert (small.limits, production.limits) == (CPU_LIMITS, GPU_LIMITS)
    assert [type(m) for m in small.modes] == [Eager] and production.modes is None
    assert [type(m) for m in fast.modes] == [Screened]
    assert "in turns of" in fuzzing._sizes(fast.draws)
    for size, limits in (("production", GPU_LIMITS), ("small", CPU_LIMITS)):
        one = fuzzing._set_up(fuzzing.FuzzOptions(impl="decode:guarded", size=size))
        assert [kind.limits for kind in one.draws] == [limits]
    plain = fuzzing._set_up(fuzzing.FuzzOptions(impl="decode:guarded"))
    assert [kind.modes for kind in plain.draws] == [None, None]


def test_a_stop_waits_until_the_finding_is_saved_whole():
    """Ctrl-C (a second search's stop, under fuzz --devices) landing while a finding is
    renamed from its shrinking file would leave that file: the stop waits for the save."""
    import os
    import signal

    from diffcheck.stops import deferred_stops, install_stop_handlers

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    install_stop_handlers()
    done = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with deferred_stops():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("saved")  # reached: the stop waited
        assert done == ["saved"]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
