"""`diffcheck bench`: what it measures and how it refuses (timings themselves are not tested)."""

import pandas as pd
import pytest
import torch
from test_cli import error_line, invoke

from diffcheck.bench import SECTOR, bench_case, bytes_moved
from diffcheck.case import Case
from diffcheck.errors import ExitCode


def test_bench_refuses_politely_without_a_gpu():
    if torch.cuda.is_available():
        return
    result = invoke("bench")
    assert result.exit_code == ExitCode.USAGE
    assert "pass --device cpu" in error_line(result)


def test_bench_on_the_interpreter_times_every_item_and_compares_to_unguarded(tmp_path):
    report = tmp_path / "b.csv"
    result = invoke("bench", "--device", "cpu", "--path", "decode", "--rows", "4", "--k", "256",
                    "--regime", "4k", "--repeats", "2", "--warmup", "0", "--launches", "2",
                    "--report", report)
    assert result.exit_code == ExitCode.OK, result.output
    df = pd.read_csv(report)
    items = set(zip(df["item"], df["how"], strict=True))
    for name in ("decode:guarded", "decode:pid", "decode:unguarded"):
        assert {(name, "eager"), (name, "graph")} <= items
    assert {("decode:reference-oracle", "reference"),
            ("decode:reference-oracle", "reference-graph")} <= items
    # the floors that bound the kernels: an empty launch and a bare gather of the same slots
    assert {("floor:launch", "graph"), ("floor:gather", "graph")} <= items
    # a check with its reference computed (a case's first) and reused (the others in a run)
    assert {("memory-safety check", "check"),
            ("memory-safety check, reference reused", "check")} <= items
    guarded = df[(df["item"] == "decode:guarded") & (df["how"] == "graph")].iloc[0]
    assert guarded["versus"] == "decode:unguarded" and guarded["ratio"] > 0
    assert (df["bytes_moved"] == bytes_moved(bench_case("decode", "4k", 4, 256))).all()
    assert (df["median_us"] > 0).all()
    assert (df[df["how"] != "check"]["repeats"] == 2).all()


def test_bench_covers_every_registered_path(tmp_path):
    """`bench --path all` times every path's kernels and its check (it once branched on
    decode/mtp and crashed on a third path)."""
    from diffcheck.paths import known_paths

    report = tmp_path / "all.csv"
    result = invoke("bench", "--device", "cpu", "--path", "all", "--rows", "2", "--k", "256",
                    "--regime", "4k", "--repeats", "1", "--warmup", "0", "--launches", "1",
                    "--report", report)
    assert result.exit_code == ExitCode.OK, result.output
    df = pd.read_csv(report)
    assert set(df["path"]) == set(known_paths())
    for path in known_paths():
        items = set(df[df["path"] == path]["item"])
        assert {f"{path}:guarded", f"{path}:unguarded", "memory-safety check"} <= items, path


def test_bytes_moved_counts_gathers_in_32_byte_sectors():
    # one request of 20 slots; positions 0, 1 share a sector, 9 is in the next, -1 is unused
    inputs = {
        "qo_indptr": torch.tensor([0, 1], dtype=torch.int32),
        "kv_indptr": torch.tensor([0, 20], dtype=torch.int32),
        "page_kv_indptr": torch.tensor([0, 4], dtype=torch.int32),
        "kv_indices": torch.arange(1, 21, dtype=torch.int32),
        "token_indices": torch.tensor([[0, 1, 9, -1] + [-1] * 4], dtype=torch.int32),
    }
    case = Case("decode", "tiny", 8, 0, 0, "", inputs)
    metadata = 3 * 2 * 4
    topk_and_out = 2 * 4 * 4
    assert bytes_moved(case) == metadata + topk_and_out + 2 * SECTOR


def test_sweep_times_each_launch_shape_and_checks_its_output(tmp_path):
    report = tmp_path / "sweep.csv"
    result = invoke("bench", "--device", "cpu", "--sweep", "--path", "decode", "--impl",
                    "decode:pid", "--rows", "4", "--k", "256", "--regime", "4k", "--repeats", "1",
                    "--warmup", "0", "--launches", "1", "--block-n", "64", "--block-n", "256",
                    "--warps", "2", "--column-programs", "1", "--column-programs", "4",
                    "--report", report)
    assert result.exit_code == ExitCode.OK, result.output
    df = pd.read_csv(report)
    # 256-wide tiles over K=256 have one tile: four column programs would repeat one
    shapes = set(zip(df["block_n"], df["column_programs"], strict=True))
    assert shapes == {(64, 1), (64, 4), (256, 1)}
    assert df["correct"].all() and (df["num_warps"] == 2).all()


def test_sweep_refuses_an_implementation_without_launch_keywords():
    result = invoke("bench", "--device", "cpu", "--sweep", "--path", "decode", "--impl",
                    "decode:reference", "--rows", "2", "--k", "256", "--regime", "4k")
    assert result.exit_code == ExitCode.USAGE
    assert "num_warps=" in error_line(result)


@pytest.mark.parametrize("args, text", [
    (["--q", "1000000000"], "past the case size limit"),
    (["--launches", "1000000000"], "--launches must be at most 1024"),
    (["--rows", "100000000", "--k", "2048"], "past the case size limit"),
])
def test_bench_bounds_every_size_before_allocating(args, text):
    import resource
    import time

    started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = invoke("bench", "--device", "cpu", *args)
    assert result.exit_code == ExitCode.USAGE and text in error_line(result)
    assert time.monotonic() - started < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1 << 20  # KB


def test_bench_over_two_devices_times_each_and_puts_them_side_by_side(tmp_path, monkeypatch):
    """Issue 27: bench --devices times the same items on each device in turn (the CPU's
    stand-ins here), the CSV names each row's device, and a table sets them side by side."""
    from diffcheck import devices

    monkeypatch.setattr(devices, "_available", lambda device: 2)
    report = tmp_path / "d.csv"
    result = invoke("bench", "--device", "cpu", "--path", "decode", "--impl", "decode:guarded",
                    "--rows", "2", "--k", "256", "--regime", "4k", "--repeats", "1",
                    "--warmup", "0", "--launches", "1", "--no-check", "--devices", "2",
                    "--report", report)
    assert result.exit_code == ExitCode.OK, result.output
    df = pd.read_csv(report, dtype={"device": str})
    assert set(df["device"]) == {"0", "1"}
    first = df[df["device"] == "0"][["item", "how"]].values.tolist()
    assert first == df[df["device"] == "1"][["item", "how"]].values.tolist()
    assert "median us by device" in result.output
    assert "cpu:triton-interpreter (device 1)" in result.output
    table = result.output.split("median us by device", 1)[1].splitlines()
    assert "device 0" in table[1] and "device 1" in table[1]
    row = next(line for line in table if "decode:guarded" in line and " graph " in line)
    assert row.rstrip().endswith("x") and len(row.split()) == 7  # two medians, the spread
