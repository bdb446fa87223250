"""Engines' kernels, part 2 (issue 25), on the CPU: autotuned kernels run under each config,
heuristic values reported, kernels that refuse malformed input, and launchers whose graphs
keep memory they no longer own. Every broken kernel is caught under the default command
(no options but the kernel and its path); every correct one passes."""

from pathlib import Path

import autotuned_kernels
import engine_kernels
import pandas as pd
import pytest
import torch
from test_cli import invoke

from diffcheck.errors import ExitCode, UsageError
from diffcheck.executors import parse_configs
from diffcheck.graphs import EmulatedGraph
from diffcheck.status import DEFAULT_FAIL_ON, Status

TUNED = Path(autotuned_kernels.__file__)
ENGINES = Path(engine_kernels.__file__)
FAILING = {s.value for s in DEFAULT_FAIL_ON}


def default_run(tmp_path, target, path="decode", *more):
    """The default command on one kernel: (result, report)."""
    report = tmp_path / "r.csv"
    result = invoke("compare", "--impl", target, "--path", path, "--report", report, *more)
    return result, pd.read_csv(report, keep_default_na=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tuned_decode", "tuned_decode_own_bench", "heuristic_decode",
                                  "tuned_decode_grid_of_meta"])
def test_correct_autotuned_and_heuristic_kernels_pass_the_default_command(name, tmp_path):
    result, df = default_run(tmp_path, f"{TUNED}:{name}")
    assert result.exit_code == ExitCode.OK, result.output
    assert not set(df["status"]) & (FAILING | {"error", "refused"})
    assert set(df["mode"]) == {"eager", "capture", "replay"}
    if name.startswith("tuned"):  # every row ran under both configs, none named as failing
        assert set(df["configs"]) == {2} and set(df["config"]) == {""}


def test_an_autotuned_kernel_whose_grid_is_a_function_of_its_config_passes_capture(tmp_path):
    """The emulated graph evaluates a callable grid on the kernel's own arguments: the
    launch options an autotuner adds (num_warps, num_stages) are not among them."""
    result, df = default_run(tmp_path, f"{TUNED}:tuned_decode_grid_of_meta", "decode",
                             "--suite", "smoke", "--mode", "capture")
    assert result.exit_code == ExitCode.OK, result.output
    assert set(df["status"]) == {"pass"} and set(df["configs"]) == {2}


def test_correct_autotuned_kernel_passes_stale_and_replay_suites_under_both_configs(tmp_path):
    result, df = default_run(tmp_path, f"{TUNED}:tuned_decode", "decode", "--suite", "smoke",
                             "--suite", "stale", "--suite", "replay", "--mode", "all")
    assert result.exit_code == ExitCode.OK, result.output
    assert set(df["status"]) <= {"pass", "stale_sensitive"}
    assert set(df["configs"]) == {2}
    assert "autotune:" in result.output


@pytest.mark.parametrize("suites", [
    pytest.param(("--suite", "smoke", "--suite", "replay"), id="smoke-replay"),
    pytest.param((), id="default", marks=pytest.mark.slow)])
def test_a_bug_in_the_second_config_only_is_caught_and_that_config_named(suites, tmp_path):
    result, df = default_run(tmp_path, f"{TUNED}:tuned_decode_second_config_unmasked",
                             "decode", *suites)
    assert result.exit_code == ExitCode.FAILURES, result.output
    caught = df[df["status"] == "oob_read"]
    assert set(caught["mode"]) == {"eager", "capture", "replay"}
    assert caught["config"].str.startswith(
        "2/2 _tuned_body: BLOCK_N=256, MASK_GATHER=False, num_warps=8").all()
    # the unmasked gather reads around kv_indices (a stale row may land elsewhere)
    assert caught[caught["well_formed"]]["first_oob_read"].str.startswith("kv_indices[").all()
    assert "rows failing under config 2/2" in result.output
    if not suites:
        return
    # with the first config only, the autotuner's own tuning still runs the second once
    # (as it does in production), and the row says so
    first, df1 = default_run(tmp_path, f"{TUNED}:tuned_decode_second_config_unmasked",
                             "decode", "--configs", "first", "--suite", "smoke")
    assert first.exit_code == ExitCode.FAILURES, first.output
    assert set(df1["configs"]) == {1}
    named = df1[df1["status"] == "oob_read"]["config"]
    assert len(named) and named.str.startswith("1/2 ").all()
    assert named.str.endswith("(tuning benchmarked every config in this run)").all()


@pytest.mark.parametrize("suites", [
    pytest.param(("--suite", "domain", "--mode", "eager"), id="domain-eager"),
    pytest.param((), id="default", marks=pytest.mark.slow)])
def test_a_heuristic_fast_path_wrong_only_when_k_is_a_multiple_of_its_tile(suites, tmp_path):
    result, df = default_run(tmp_path, f"{TUNED}:heuristic_decode_even_k_unmasked", "decode",
                             *suites)
    assert result.exit_code == ExitCode.FAILURES, result.output
    bad = df[df["status"].isin(FAILING)]
    assert len(bad) and (bad["k"] % 128 == 0).all()  # only where EVEN_K holds
    assert not df[(df["k"] % 128 != 0) & df["status"].isin(FAILING)].size
    line = next(x for x in result.output.splitlines() if x.startswith("heuristics:"))
    assert "_heuristic_body.EVEN_K took" in line and "True" in line and "False" in line
    assert "never" not in line


def test_a_heuristic_side_no_case_reached_is_said(tmp_path):
    result, _ = default_run(tmp_path, f"{TUNED}:heuristic_decode", "decode", "--suite", "smoke",
                            "--mode", "eager")
    assert "EVEN_K took True (never False: no case reached that side)" in result.output


def test_a_launcher_that_refuses_malformed_ids_is_refused_not_failed(tmp_path):
    result, df = default_run(tmp_path, f"{ENGINES}:vllm_convert_checked", "blocktable")
    assert result.exit_code == ExitCode.OK, result.output
    refused = df[df["status"] == "refused"]
    said = refused["finding"]
    assert len(refused) and said.str.startswith(
        "refused the malformed input before launching anything: ").all()
    assert said.str.contains("ValueError: request ids").any()  # ids outside the table
    assert said.str.contains("AssertionError: req_id and token_indices disagree").any()
    assert not refused["well_formed"].any()
    # a graph captured on a batch its warm-up refused is captured all the same, and its
    # steps judged
    noted = df[df["detail"].str.contains("captured without it")]
    assert len(noted) and set(noted["mode"]) == {"replay"}
    assert "error" not in set(df["status"])
    assert (df[df["well_formed"]]["status"] == "pass").all()


def _raises_after_launching(req_id, block_table, token_indices, BLOCK_SIZE=64,
                            NUM_TOPK_TOKENS=2048):
    out = torch.empty((req_id.shape[0], NUM_TOPK_TOKENS), dtype=torch.int32)
    engine_kernels._paged(req_id, block_table, token_indices, BLOCK_SIZE, NUM_TOPK_TOKENS,
                          128, out, BLOCK_SIZE)
    raise ValueError("checked its inputs only after launching")


def _always_raises(req_id, block_table, token_indices, BLOCK_SIZE=64, NUM_TOPK_TOKENS=2048):
    raise ValueError("never launches")


def _indexes_on_the_host(req_id, block_table, token_indices, BLOCK_SIZE=64,
                         NUM_TOPK_TOKENS=2048):
    rows = block_table[req_id.long()]  # an unchecked gather: a device assert on a GPU
    raise ValueError(f"unreachable for a bad id ({rows.shape})")


def test_raising_on_a_well_formed_case_or_after_a_launch_stays_an_error(tmp_path):
    from conftest import make_impl, run_cases, suite_cases

    cases = suite_cases("blocktable", "smoke", "stale")
    for fn, stale_status in ((_always_raises, "refused"), (_raises_after_launching, "error"),
                             (_indexes_on_the_host, None)):
        impl = make_impl(f"blocktable:{fn.__name__[1:]}", f"{__file__}:{fn.__name__}")
        rows = run_cases(impl, cases)
        assert {r.status for r in rows if r.well_formed} == {"error"}
        stale = {r.status for r in rows if not r.well_formed}
        if stale_status is None:  # a failed operation is no refusal, even before a launch
            failed_op = [r for r in rows if "IndexError" in r.error]
            assert failed_op and {r.status for r in failed_op} == {"error"}
            continue
        assert stale_status in stale and not stale & ({"error", "refused"} - {stale_status})


@pytest.mark.parametrize("name, caught, every", [
    ("cached_columns_decode", {"mismatch", "divergence"}, True),
    ("cached_view_decode", {"mismatch", "divergence"}, True),
    ("shared_scratch_decode", {"oob_write"}, True),
    # its capacity rounded up to a power of two regrows on the worker's first larger batch
    # only (README, "Graph modes"): some rows, and the run, fail
    ("zeroed_scratch_decode", {"oob_write"}, False),
])
def test_a_graph_that_keeps_memory_its_launcher_freed_is_caught_in_replay(name, caught, every,
                                                                          tmp_path):
    result, df = default_run(tmp_path, f"{TUNED}:{name}", "decode", "--suite", "smoke",
                             "--suite", "replay")
    assert result.exit_code == ExitCode.FAILURES, result.output
    replay = df[df["mode"] == "replay"]
    assert set(replay["status"]) <= caught | {"pass"} and set(replay["status"]) & caught
    assert set(df[df["mode"] != "replay"]["status"]) == {"pass"}
    named = replay["detail"].str.contains("made before capture, no longer held by its launcher")
    assert named.all() if every else named.any()
    if "oob_write" in caught:
        found = replay[replay["status"] == "oob_write"]["oob_write_found_by"]
        assert len(found) and (found == "freed-memory").all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cached_columns_decode", "shared_scratch_decode"])
def test_graph_kept_memory_is_caught_by_the_default_command(name, tmp_path):
    result, df = default_run(tmp_path, f"{TUNED}:{name}")
    assert result.exit_code == ExitCode.FAILURES, result.output
    assert set(df[df["status"].isin(FAILING)]["mode"]) == {"replay"}


def test_an_orphan_is_found_whichever_argument_it_is():
    source = torch.zeros(4, dtype=torch.int32)
    for first in (True, False):
        kept = {"t": torch.arange(4, dtype=torch.int32)}
        graph = EmulatedGraph()
        args = (kept["t"], source) if first else (source, kept["t"])
        graph.work.append(_launch(*args))
        del args
        assert graph.orphans() == []
        kept.clear()
        found = graph.orphans()
        assert len(found) == 1 and f"argument {'a' if first else 'b'} of _two" in found[0][0]


def test_only_tensors_nobody_but_graphs_holds_are_orphans():
    kept = {}

    def launcher(order_src):
        ws = kept.setdefault("ws", torch.arange(8, dtype=torch.int32))
        view = ws[:4]
        graph = EmulatedGraph()
        graph.work.append(_launch(view, order_src))
        return graph

    source = torch.zeros(4, dtype=torch.int32)
    graph = launcher(source)
    assert graph.orphans() == []  # the launcher still holds the view's base
    kept.clear()
    found = graph.orphans()
    assert len(found) == 1 and "argument a of _two" in found[0][0]
    # a tensor the launcher holds as the very object the graph holds is not an orphan
    same = torch.ones(3, dtype=torch.int32)
    kept["same"] = same
    held = EmulatedGraph()
    held.work.append(_launch(same, source))
    del same
    assert held.orphans() == []


def _launch(a, b):
    import triton
    import triton.language as tl

    from diffcheck.graphs import Launch

    @triton.jit
    def _two(a, b, N: tl.constexpr):
        pass

    return Launch(_two, (a, b), {"N": 4}, (1,))


def test_configs_option_is_parsed_with_a_clear_error():
    assert parse_configs("all") == 0 and parse_configs("first") == 1
    assert parse_configs("3") == 3
    for bad in ("0", "-1", "some"):
        with pytest.raises(UsageError, match="--configs must be all, first or a number"):
            parse_configs(bad)


def test_refused_is_reported_but_does_not_fail_by_default():
    assert Status.REFUSED not in DEFAULT_FAIL_ON
    assert Status.STALE_SENSITIVE.severity > Status.REFUSED.severity > Status.PASS.severity


def test_autotuning_inside_a_capture_is_an_error_that_says_so(tmp_path):
    result, df = default_run(tmp_path, f"{TUNED}:tuned_decode_keyed_on_graph_size", "decode",
                             "--suite", "smoke", "--mode", "capture")
    assert result.exit_code == ExitCode.FAILURES, result.output
    tuned_in_capture = df[df["finding"].str.contains("autotuned during graph capture")]
    assert len(tuned_in_capture) and set(tuned_in_capture["status"]) == {"error"}


def test_compare_help_names_the_default_suites_and_configs():
    from diffcheck.selection import DEFAULT_SUITES, GPU_DEFAULT_SUITES

    text = " ".join(invoke("compare", "--help").output.split())
    for suite in (*DEFAULT_SUITES, *GPU_DEFAULT_SUITES):
        assert suite in text
    assert "--configs" in text


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tuned_decode_second_config_unmasked", "shared_scratch_decode",
                                  "heuristic_decode_even_k_unmasked", "vllm_convert_checked"])
def test_the_python_api_with_no_suites_catches_each_class(name):
    """diffcheck.api.check with no suites runs the CLI's default and catches issue 25's
    classes alike: a bug in one autotune config (named), graph-kept memory (replay only), a
    heuristic fast path wrong on one side (only where K is a multiple of its tile), and a
    launcher refusing malformed ids is refused, not failed."""
    from diffcheck.api import check

    if name == "vllm_convert_checked":
        df = check(f"{ENGINES}:{name}", path="blocktable")
        assert not set(df["status"]) & (FAILING | {"error"})
        refused = df[df["status"] == "refused"]
        assert len(refused) and not refused["well_formed"].any()
        return
    df = check(f"{TUNED}:{name}", path="decode")
    bad = df[df["status"].isin(FAILING)]
    assert len(bad), df["status"].value_counts()
    if name == "tuned_decode_second_config_unmasked":
        assert set(bad["mode"]) == {"eager", "capture", "replay"}
        assert bad["config"].str.startswith("2/2 _tuned_body: BLOCK_N=256").all()
    elif name == "shared_scratch_decode":
        assert set(bad["mode"]) == {"replay"}
    else:
        assert (bad["k"] % 128 == 0).all()
