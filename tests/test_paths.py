"""Contract tests over every registered path: what a plug-in must satisfy to be trusted.

Each path's reference equals a literal loop transcription of its contract (tests/oracle.py) on
every case of its suites; its cases round-trip through case files; its reference replays in a
graph on new step data; every safe built-in kernel passes every CPU suite in every mode; every
unsafe fixture is caught; and it declares what the default selection needs.
"""

import pytest
import torch
from conftest import CPU, run_cases, slow_when, suite_cases
from oracle import blocktable_oracle, decode_oracle, mtp_oracle, prefill_oracle

from diffcheck.case import Scenario
from diffcheck.casefile import load_case, save_case
from diffcheck.executors import run_all
from diffcheck.graphs import EmulatedGraph
from diffcheck.impls import builtin
from diffcheck.job import Job
from diffcheck.modes import select
from diffcheck.paths import known_paths
from diffcheck.selection import DEFAULT_SUITES
from diffcheck.settings import RunSettings
from diffcheck.status import DEFAULT_FAIL_ON, Status

PATHS = list(known_paths())
#: suites sized for a GPU, left out of CPU tests
GPU_SIZED = ("production", "production-replay", "production-domain")


def decode(t, case, fill):
    return decode_oracle(t["kv_indptr"], t["page_kv_indptr"], t["kv_indices"],
                         t["token_indices"], case.k, fill)


def mtp(t, case, fill):
    return mtp_oracle(t["sparse_kv_indptr"], t["token_to_seq_idxs"], t["topk_indices"],
                      t["kv_indices"], t["kv_indptr"], case.k, fill)


def prefill(t, case, fill):
    return prefill_oracle(t["dsa_kv_indptr"], t["token_to_seq_idxs"], t["topk_indices"],
                          t["block_table"], t["cu_seqlens_q"],
                          case.scalars.get("page_size", 1), case.k, fill)


def blocktable(t, case, fill):
    s = known_paths()["blocktable"].scalars_of(case.scalars)
    expected, _ = blocktable_oracle(t["req_id"], t["block_table"], t["token_indices"],
                                    t["seq_lens"], s["page_size"], s["stride_rows"],
                                    s["layer_id"], case.k, fill, s["bounded"])
    return expected


#: each path's contract as a literal loop (tests/oracle.py): {flat index: value} in regions
ORACLES = {"decode": decode, "mtp": mtp, "prefill": prefill, "blocktable": blocktable}


def cpu_suites(path):
    return [name for name in known_paths()[path].suites() if name not in GPU_SIZED]


def every_case(path, fill=None):
    """Every case of the path's CPU suites: its intended batch, and each scenario step's."""
    for target in suite_cases(path, *cpu_suites(path), fill=fill):
        yield from (target.steps if isinstance(target, Scenario) else [target])


@pytest.mark.parametrize("path", PATHS)
def test_every_path_declares_what_the_defaults_need(path):
    spec = known_paths()[path]
    suites = spec.suites()
    for name in ("smoke", "stale", "replay", "smoke-2048"):
        assert name in suites, f"{path} lacks the {name} suite"
    # glm52 is decode's; domain-replay comes with generated scenarios (not prefill's)
    assert set(DEFAULT_SUITES) - {"glm52", "domain-replay"} <= set(suites)
    assert "domain-replay" in suites or spec.generators is None \
        or spec.generators().scenario is None
    smoke = suite_cases(path, "smoke")
    assert any(c.fill_swapped for c in smoke), "a smoke case judged with the other fill"
    assert all(c.k == 2048 for c in suite_cases(path, "smoke-2048"))
    impls = [i for i in builtin().values() if i.path == path]
    assert any(i.safe for i in impls) and any(not i.safe for i in impls)
    assert spec.doc and "Result" in spec.doc, "the contract in words, for docs/contracts.md"
    assert path in ORACLES, f"write {path}'s contract as a loop in tests/oracle.py"


@pytest.mark.parametrize("fill", [0, -1])
@pytest.mark.parametrize("path", PATHS)
def test_the_reference_is_the_literal_contract_on_every_case(path, fill):
    spec = known_paths()[path]
    checked = 0
    for case in every_case(path, fill):
        t = case.intended_inputs()
        size = spec.workspace_size(t, case.k)
        expected, mask = spec.expected(t, case.k, fill, case.scalars, size)["out"]
        oracle = ORACLES[path](t, case, fill)
        hits = torch.nonzero(mask).flatten().tolist()
        assert sorted(hits) == sorted(oracle), case.case_id
        assert {i: int(expected[i]) for i in hits} == oracle, case.case_id
        checked += len(hits)
    assert checked > 1000


@pytest.mark.parametrize("path", PATHS)
def test_cases_round_trip_through_case_files_with_their_scalars(path, tmp_path):
    for n, case in enumerate(every_case(path)):
        loaded = load_case(save_case(case, tmp_path / f"{n}.npz"))
        assert (loaded.path, loaded.name, loaded.k, loaded.fill, loaded.scalars,
                loaded.fill_swapped, loaded.columns) == (
            case.path, case.name, case.k, case.fill, case.scalars, case.fill_swapped,
            case.columns)
        for name, tensor in case.kernel_inputs().items():
            got = loaded.kernel_inputs()[name]
            assert torch.equal(got, tensor) and got.stride() == tensor.stride()
        assert loaded.well_formed == case.well_formed


@pytest.mark.parametrize("path", PATHS)
def test_the_reference_has_no_host_sync_and_replays_in_a_graph(path):
    spec = known_paths()[path]
    scenario = suite_cases(path, "replay")[0]
    first, later = scenario.steps[0], scenario.steps[-1]
    static = {n: t.clone() for n, t in first.kernel_inputs().items()}
    size = spec.workspace_size(first.inputs, first.k)
    holder = {}
    graph = EmulatedGraph()
    graph.capture(lambda: holder.setdefault("result", spec.expected(
        static, first.k, spec.fill, first.scalars, size)["out"]))
    for name, tensor in later.kernel_inputs().items():  # a new step, copied in place
        static[name].copy_(tensor)
    graph.replay()
    expected, mask = spec.expected(later.kernel_inputs(), later.k, spec.fill, later.scalars,
                                   size)["out"]
    got_expected, got_mask = holder["result"]
    assert torch.equal(got_mask, mask) and torch.equal(got_expected[mask], expected[mask])


SAFE = [impl for impl in builtin().values() if impl.safe]
UNSAFE = [impl for impl in builtin().values() if not impl.safe]


@pytest.mark.parametrize("impl", slow_when(
    SAFE, {"prefill:guarded", "decode:pid", "mtp:guarded", "blocktable:guarded"},
    lambda i: i.name))
def test_every_safe_kernel_passes_every_suite_in_every_mode(impl):
    impl = impl.described()
    targets = suite_cases(impl.path, *cpu_suites(impl.path))
    jobs = [Job(t, impl, m) for t in targets for m in select("all") if m.rows(t)]
    rows = run_all(jobs, RunSettings(CPU, "test", 0))
    assert len(rows) > 20
    bad = [(r.case_id, r.mode, r.status, r.finding) for r in rows
           if r.status not in ("pass", "stale_sensitive")
           or (r.status == "stale_sensitive" and r.well_formed)]
    assert not bad


@pytest.mark.parametrize("impl", UNSAFE, ids=lambda i: i.name)
def test_every_unsafe_fixture_is_caught(impl):
    rows = run_cases(impl.described(), suite_cases(impl.path, "smoke", "stale"))
    assert any(Status(r.status) in DEFAULT_FAIL_ON for r in rows)
