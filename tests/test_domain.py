"""Each path's declared domain: the default selection reaches every partition and every pair
of scalar partitions; the stale transformations are generic and real; coverage is measured
on data; and a kernel wrong only in one partition passes a selection without it and fails
the default command.
"""

import subprocess
import sys
from pathlib import Path

import domain_kernels
import numpy as np
import pytest
import torch
from conftest import CPU, suite_cases

from diffcheck.case import Scenario
from diffcheck.domain import STALE_TRANSFORMS, Dimension, Partition, domain_of, exercised
from diffcheck.executors import run_all
from diffcheck.fixtures.derived import pairwise
from diffcheck.fixtures.stale import GENERIC, generic
from diffcheck.impls import find
from diffcheck.job import Job
from diffcheck.paths import known_paths
from diffcheck.report import read_report
from diffcheck.selection import DEFAULT_SUITES, build_suites
from diffcheck.settings import RunSettings

KERNELS = Path(domain_kernels.__file__)
PATHS = list(known_paths())


@pytest.fixture(scope="module")
def default_cases():
    return {path: build_suites([path], list(DEFAULT_SUITES), 0) for path in PATHS}


@pytest.mark.parametrize("path", PATHS)
def test_default_selection_reaches_every_partition(path, default_cases):
    spec = known_paths()[path]
    reached = set().union(*(exercised(spec, target) for target in default_cases[path]))
    missing = [key for key in domain_of(spec).keys(gpu=False) if key not in reached]
    assert not missing, f"{path}: the default selection never reaches {missing}"


@pytest.mark.parametrize("path", PATHS)
def test_default_selection_holds_every_pair_of_scalar_partitions(path, default_cases):
    spec = known_paths()[path]
    scalar = {key for d in domain_of(spec).dimensions if d.kind == "scalar"
              for key in d.keys()}
    together = set()
    for target in default_cases[path]:
        keys = sorted(exercised(spec, target) & scalar)
        together |= {(a, b) for a in keys for b in keys}
    missing = [(a, b) for a, b in domain_of(spec).scalar_pairs() if (a, b) not in together
               and (b, a) not in together]
    assert not missing, f"{path}: no default case holds {missing[:5]}"


def test_pairwise_covers_every_pair_and_is_smaller_than_the_product():
    dims = [Dimension(name, "scalar", "", tuple(Partition(f"{name}{i}", "") for i in range(n)))
            for name, n in (("a", 4), ("b", 4), ("c", 2), ("d", 2), ("e", 3))]
    rows = pairwise(dims)
    for i, x in enumerate(dims):
        for y in dims[i + 1:]:
            for p in x.partitions:
                for q in y.partitions:
                    assert any(r[x.name] == p and r[y.name] == q for r in rows)
    assert 16 <= len(rows) < 4 * 4 * 2 * 2 * 3


def test_generated_captures_and_table_oddities_are_the_domains():
    from diffcheck.domain import CAPTURES, TABLE_ODDITIES
    from diffcheck.fixtures import generated

    assert set(generated.CAPTURES) == {name for name, _ in CAPTURES}
    for spec in known_paths().values():
        assert set(spec.generators().table) <= set(TABLE_ODDITIES)


def test_stale_transformations_are_one_generic_table():
    assert {role: set(names) for role, names in STALE_TRANSFORMS.items()} == \
        {role: set(names) for role, names in GENERIC.items()}


@pytest.mark.parametrize("path", PATHS)
def test_every_tensor_of_a_stale_role_has_every_transformation(path):
    """Generic: a tensor's stale dimension is its role's, whatever the path."""
    spec = known_paths()[path]
    dims = {d.name: d for d in domain_of(spec).dimensions}
    for tensor in spec.tensors:
        if tensor.role in STALE_TRANSFORMS and not tensor.fresh:
            names = [p.name for p in dims[f"{tensor.name}.stale"].partitions]
            assert names == list(STALE_TRANSFORMS[tensor.role])
        else:
            assert f"{tensor.name}.stale" not in dims


@pytest.mark.parametrize("role, transform",
                         [(r, t) for r, names in GENERIC.items() for t in names])
def test_each_stale_transformation_changes_its_tensor(role, transform):
    rng = np.random.default_rng(0)
    arrays = {"indptr": np.array([0, 3, 40, 41, 300, 301], dtype=np.int32),
              "ids": np.array([0, 0, 1, 2, 3, 4], dtype=np.int32),
              "positions": np.tile(np.arange(8, dtype=np.int32), (6, 1)),
              "table": np.arange(1, 13, dtype=np.int32).reshape(6, 2),
              "lengths": np.array([3, 37, 1, 259, 1], dtype=np.int32)}
    fresh = {n: a.copy() for n, a in arrays.items()}
    spoil = generic(role, role, transform)
    seen = spoil(rng, {n: a.copy() for n, a in arrays.items()}, 8)
    assert spoil.labels == (f"{role}:{transform}",)
    changed = seen[role].shape != fresh[role].shape or not np.array_equal(seen[role],
                                                                          fresh[role])
    assert changed, f"{role}:{transform} left the tensor as it was"


def test_coverage_is_measured_on_data_not_on_names():
    """A case renamed, or a stale label on an unchanged tensor, reaches nothing new."""
    spec = known_paths()["decode"]
    case = build_suites(["decode"], ["domain"], 0)[0]
    before = exercised(spec, case)
    case.name, case.stale = "anything", ("kv_indptr:unwritten",)
    assert exercised(spec, case) == before  # kv_indptr is what was intended: not stale


def test_scenario_capture_partitions_come_from_the_capture_batch():
    spec = known_paths()["decode"]
    scenarios = [t for t in build_suites(["decode"], ["domain-replay"], 0)
                 if isinstance(t, Scenario)]
    captured = {k for t in scenarios for k in exercised(spec, t) if k.startswith("capture=")}
    assert captured == {f"capture={p.name}"
                        for p in domain_of(spec).dimension("capture").partitions}
    # eager rows run steps one by one: no graph, no capture partition
    assert not any(k.startswith("capture=") for t in scenarios
                   for k in exercised(spec, t, fresh=True))


def _compare(tmp_path, impl, path, *extra):
    report = tmp_path / "report.csv"
    report.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "diffcheck", "compare", "--impl", impl, "--path", path,
         "--report", str(report), "--quiet", *extra],
        capture_output=True, text=True, timeout=900)
    return done, read_report(report) if report.exists() else None


#: (implementation, path, status): every planted kernel the CPU can show, and the one of
#: tests/fuzz_kernels.py that only the GPU production suite caught before (a slot through
#: float32, past 2^24)
PLANTED = [(f"{KERNELS}:{name}", domain_kernels.PATH_OF[name], status)
           for name, status in domain_kernels.EXPECTED.items()
           if name not in domain_kernels.GPU_ONLY]
PLANTED.append((f"{KERNELS.parent / 'fuzz_kernels.py'}:blocktable_slot_through_float",
                "blocktable", "mismatch"))
#: the default command before the domain was declared
OLD_DEFAULT = [a for s in ("smoke", "smoke-2048", "stale", "replay", "glm52")
               for a in ("--suite", s)]


@pytest.mark.slow
@pytest.mark.parametrize("impl, path, status", PLANTED,
                         ids=[impl.rpartition(":")[2] for impl, _, _ in PLANTED])
def test_planted_kernel_passes_the_old_default_and_fails_the_new(tmp_path, impl, path, status):
    done, report = _compare(tmp_path, impl, path, *OLD_DEFAULT)
    assert done.returncode == 0, done.stdout + done.stderr
    done, report = _compare(tmp_path, impl, path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert status in set(report["status"]), report["status"].value_counts()
    assert f"coverage: {path} " in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("kernel", domain_kernels.CORRECT)
def test_correct_twins_pass_the_default(tmp_path, kernel):
    done, _ = _compare(tmp_path, f"{KERNELS}:{kernel}", domain_kernels.PATH_OF[kernel])
    assert done.returncode == 0, done.stdout + done.stderr


def _batch(**fields):
    from diffcheck.fixtures.generated import Batch

    base = dict(k=256, contexts=(300, 40), drafts=(1, 1), oddities=(), shuffled=True,
                extra_rows=0, extra_cols=0, padding=0, slot_base=0, spoiler="",
                scalars=(("page_size", 16), ("stride_rows", 0), ("layer_id", 0),
                         ("bounded", 0), ("valid_counts", 0)), without_out=False, seed=5)
    return Batch(**{**base, **fields})


def _reached(batch, path="blocktable", scalars=None):
    spec = known_paths()[path]
    case = spec.generators().layout(batch).case(path, "probe", 0, spec.fill)
    return exercised(spec, case, scalars=scalars)


def test_coverage_counts_the_scalars_an_implementation_is_given():
    """lmdeploy's signature takes no stride, layer, bounded or counts: its rows run at the
    defaults, and coverage says so."""
    from diffcheck import modes
    from diffcheck.coverage import coverage_of
    from diffcheck.selection import select

    engine = Path(__file__).parent / "engine_kernels.py"
    chosen = select("blocktable", [f"{engine}:lmdeploy_convert"], ["domain"], [], [],
                    modes.select("eager"), 0, None, None)
    missing = coverage_of(chosen.jobs()).missing("blocktable")
    assert {"stride_rows=interleaved", "layer_id=positive", "bounded=1",
            "valid_counts=1", "seq_lens.stale=previous-batch"} <= set(missing)


def test_a_tensor_the_kernel_is_not_given_reaches_nothing():
    got = _reached(_batch(spoiler="seq_lens:previous-batch"))
    assert not any(k.startswith("seq_lens.") for k in got)
    scalars = dict(_batch().scalars, bounded=1)
    got = _reached(_batch(spoiler="seq_lens:previous-batch", scalars=tuple(scalars.items())))
    assert "seq_lens.stale=previous-batch" in got


def test_values_of_a_stale_tensor_count_only_where_the_fresh_one_holds_them_too():
    fresh = _reached(_batch(oddities=("max", "far")))
    assert {"token_indices.positions=int32-max", "token_indices.positions=far-beyond"} <= fresh
    stale = _reached(_batch(oddities=("max", "far"), contexts=(3,), drafts=(1,),
                            spoiler="token_indices:unwritten"))
    assert not {"token_indices.positions=int32-max", "token_indices.positions=far-beyond",
                "token_indices.positions=valid"} & stale


def test_a_null_or_evicted_page_counts_only_where_a_valid_position_reads_it():
    read = _reached(_batch(table=("null", "evicted"), contexts=(40, 200, 90)), "prefill",
                    scalars={"page_size": 16})
    assert {"block_table.contents=null-in-use", "block_table.contents=evicted-in-use"} <= read
    # every position an oddity past the context: nothing reads the pages
    unread = _reached(_batch(table=("null",), contexts=(2, 1), oddities=("beyond",)),
                      "prefill", scalars={"page_size": 16})
    assert "block_table.contents=null-in-use" not in unread


@pytest.mark.parametrize("requests", [1, 2])
def test_prefill_shaped_holds_for_one_request(requests):
    rng = np.random.default_rng(0)
    values = np.arange(requests + 1, dtype=np.int32)  # a decode qo_indptr
    seen = generic("indptr", "indptr", "prefill-shaped")(rng, {"indptr": values.copy()}, 8)
    assert seen["indptr"][-1] > requests and not np.array_equal(seen["indptr"], values)


def test_an_extra_output_shorter_than_intended_is_judged_not_an_internal_error(tmp_path):
    """A generic stale spoiler (fewer top-k rows) with valid counts: the kernel returns counts
    for the rows it was given, fewer than the intended batch has; the missing ones differ
    (stale_sensitive), and the run goes on (fuzz found this as an internal error)."""
    from diffcheck.casefile import save_case

    scalars = dict(_batch().scalars, valid_counts=1)
    batch = _batch(spoiler="token_indices:fewer-rows", scalars=tuple(scalars.items()),
                   contexts=(5, 300, 40), drafts=(2, 2, 2))
    spec = known_paths()["blocktable"]
    case = spec.generators().layout(batch).case("blocktable", "probe", 0, spec.fill)
    save_case(case, tmp_path / "fewer.npz")
    done, report = _compare(tmp_path, "blocktable:guarded", "blocktable", "--cases",
                            str(tmp_path / "fewer.npz"), "--mode", "eager")
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(report["status"]) == {"stale_sensitive"}


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["blocktable_page_by_shift", "blocktable_stride_by_16"])
def test_the_api_without_suites_catches_a_planted_kernel(kernel):
    """diffcheck.api.check with no suites= runs the same default as the CLI (a page size and
    a row stride no named suite had)."""
    from diffcheck.api import check

    report = check(f"{KERNELS}:{kernel}", path="blocktable")
    assert "mismatch" in set(report["status"])
    assert {"domain", "domain-replay"} <= set(report["suite"])


def _storage(tensor: torch.Tensor) -> tuple[int, int]:
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def _alive(storages: set[tuple[int, int]]) -> int:
    """How many of these storages (address and size) some live tensor still holds."""
    import gc

    return len({_storage(o) for o in gc.get_objects() if isinstance(o, torch.Tensor)
                and o.device.type != "meta" and _storage(o) in storages})


@pytest.mark.parametrize("mode", ["eager", "capture", "graph"])
def test_a_filling_frees_its_staged_memory_before_the_next_is_staged(monkeypatch, mode):
    """The production-domain case holds gigabytes: every filling staged it (an arena and its
    copy) and kept it until the row was judged, so four fillings held eight copies and an
    80 GB GPU ran out. Now a staging's copy goes when its run ends and its arena once the
    next run has staged (two runs in a row never share addresses: a launcher that kept a
    pointer from its last call must not find the right data there)."""
    from diffcheck import runner
    from diffcheck.modes import select

    case = suite_cases("decode", "smoke")[0]
    staged: list[set[tuple[int, int]]] = []  # each staging's arena and its kept copy
    held = []  # when a staging begins: how many of the earlier runs' are still alive
    original = runner.stage

    def counting(*args, **kwargs):
        held.append(_alive(set().union(*staged)))
        made = original(*args, **kwargs)
        staged.append({_storage(made.arena), _storage(made.expected)})
        return made

    monkeypatch.setattr(runner, "stage", counting)
    settings = RunSettings(CPU, "test", 0, fillings=4)
    rows = run_all([Job(case, find("decode:guarded"), m) for m in select(mode)], settings)
    assert rows and {r.status for r in rows} == {"pass"}, [(r.status, r.detail) for r in rows]
    assert len(held) >= 4 and held[0] == 0
    if mode == "eager":  # the last run's arena alone, and only until this one is staged
        assert held[1:] == [1] * (len(held) - 1), held
    else:  # or, staging the larger batch, this run's own staging (the graph's memory)
        assert 1 <= max(held) <= 2, held
