"""`diffcheck bench`: how fast the kernels, the reference and one memory-safety check are.

For each path and context regime it builds one production-shaped case (512 rows, K=2048 by
default; MTP with q drafts per request) and times, on the same device and in the same run:
every implementation as an eager launch and per launch inside a graph (L launches captured in
one graph, replayed, divided by L), and in a graph as its instrumented copy
(diffcheck.instrument: what bounds-checking every access costs it); two floors that bound the
kernels (an empty launch, a bare gather of the case's slots); the reference eager and in a
graph; and one full memory-safety check of the case (stage, both fillings, reference, compare),
with its reference computed and reused. Times are medians with the 10th and 90th percentiles
over the repeats, after a warm-up, with the kernels sampled in turn: CUDA events on a GPU, the
wall clock on the CPU interpreter (only when asked for: it says nothing about GPU speed).
``sweep_path`` times launch shapes instead (docs/tiling.md).

Bytes moved count what a kernel must touch: the region indptrs and request ids, the top-k
entries inside the regions, the output regions, and the gathered slots as 32-byte sectors
(each 4-byte slot of a random gather pulls a whole sector). Bandwidth = bytes / time, next to
the device's peak where it is known.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from diffcheck import backend
from diffcheck.buffers import CONSTANT, stage
from diffcheck.calls import bind, contract_of
from diffcheck.case import Case
from diffcheck.defaults import MAX_LAUNCHES
from diffcheck.graphs import new_graph
from diffcheck.impls import Implementation
from diffcheck.paths import get_path

#: context regimes: the longest context of the case (contexts spread over [1, high])
REGIMES = {"4k": 4096, "32k": 32_768, "128k": 131_072}
#: peak DRAM bandwidth in GB/s by device name (datasheet values)
PEAK_GBPS = {"H100 80GB HBM3": 3350, "H100 PCIe": 2000, "H100 NVL": 3900, "H200": 4800,
             "A100-SXM4-80GB": 2039, "A100-SXM4-40GB": 1555, "MI300X": 5300}
SECTOR = 32


@dataclass
class BenchRow:
    """One timed item; field order is the CSV column order."""

    path: str
    regime: str
    item: str
    how: str  # eager, graph (per launch), reference, reference-graph, check
    rows: int
    k: int
    median_us: float
    p10_us: float
    p90_us: float
    repeats: int
    bytes_moved: int
    gbps: float
    peak_gbps: float | None
    #: what the ratio compares against, and median / that median
    versus: str = ""
    ratio: float | None = None
    #: the device (of --devices) it was timed on; "" for the run's one device
    device: str = ""


#: how the top-k positions of a row are ordered: as an indexer's top-k leaves them (shuffled,
#: so neighbouring lanes gather from unrelated sectors) or ascending (neighbours share sectors)
ORDERS = ("shuffled", "ascending")


def bench_case(path: str, regime: str, rows: int, k: int, q: int = 4,
               order: str = "shuffled") -> Case:
    """A production-shaped case of the path: ``rows`` output rows (MTP: rows/q requests of
    q drafts), contexts spread up to the regime."""
    if order not in ORDERS:
        raise ValueError(f"unknown position order {order!r}; known: {', '.join(ORDERS)}")
    spec = get_path(path)
    if spec.bench_case is None:
        raise ValueError(f"path {path} declares no bench case")
    return spec.bench_case(REGIMES[regime], rows, k, q, order == "shuffled")


def _region_lengths(case: Case) -> np.ndarray:
    """Each output row's region length (<= K)."""
    starts, ends = get_path(case.path).row_bounds(case.kernel_inputs(), case.k)
    return np.clip((ends - starts).numpy(), 0, case.k)


def gathered_slots(case: Case) -> list[np.ndarray]:
    """Per output row, the elements of the gathered table its valid entries read (int64);
    none for a path that declares no gather."""
    spec = get_path(case.path)
    return spec.gathered(case)[1] if spec.gathered is not None else []


def bytes_moved(case: Case) -> int:
    """The bytes a kernel must move for this case: its 1-D metadata (indptrs, ids), the
    top-k entries and output elements of the regions, and the gathers counted in 32-byte
    sectors (the gathers of one row that share a sector pull it once)."""
    spec = get_path(case.path)
    lengths = _region_lengths(case)
    metadata = sum(t.numel() * 4 for n, t in case.kernel_inputs().items()
                   if spec.ndim(n) == 1 and spec.tensor(n).role != "slots")
    sectors = sum(np.unique(slots * 4 // SECTOR).size for slots in gathered_slots(case))
    return int(metadata + 2 * lengths.sum() * 4 + sectors * SECTOR)


class Timer:
    """Times callables: CUDA events on a GPU, the wall clock on the CPU."""

    def __init__(self, device: torch.device, warmup: int, repeats: int) -> None:
        self.device, self.warmup, self.repeats = device, warmup, repeats

    def __call__(self, fn: Callable[[], object], per: int = 1) -> list[float]:
        """Microseconds per call of ``fn`` divided by ``per``, one value per repeat."""
        return self.interleaved([fn], per)[0]

    def interleaved(self, fns: list[Callable[[], object]], per: int = 1) -> list[list[float]]:
        """Samples of several callables taken in turn (A, B, C, A, B, C, ...): clock and
        temperature drift during the run then weigh on each alike, so their ratios hold."""
        for _ in range(self.warmup):
            for fn in fns:
                fn()
        backend.synchronize(self.device)
        samples: list[list[float]] = [[] for _ in fns]
        for _ in range(self.repeats):
            for taken, fn in zip(samples, fns, strict=True):
                taken.append(self._once(fn) / per)
        return samples

    def _once(self, fn: Callable[[], object]) -> float:
        if self.device.type == "cuda":
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) * 1e3
        began = time.perf_counter()
        fn()
        return (time.perf_counter() - began) * 1e6


def _row(case: Case, regime: str, item: str, how: str, samples: list[float], moved: int,
         peak: float | None) -> BenchRow:
    median = statistics.median(samples)
    deciles = np.percentile(samples, [10, 90])
    return BenchRow(case.path, regime, item, how, get_path(case.path).counts(
        case.kernel_inputs())[1], case.k, round(median, 3), round(float(deciles[0]), 3),
        round(float(deciles[1]), 3), len(samples), moved,
        round(moved / (median * 1e-6) / 1e9, 1) if median else 0.0, peak)


def clocks(device: torch.device) -> str:
    """The SM clock and temperature now, where NVML answers (timings depend on both)."""
    if device.type != "cuda":
        return ""
    try:
        return (f"SM clock {torch.cuda.clock_rate(device)} MHz, "
                f"{torch.cuda.temperature(device)} C")
    except Exception:  # NVML missing or not allowed: the timings stand without it
        return ""


def peak_of(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_GBPS.items() if k in name), None)


def bench_path(case: Case, regime: str, impls: list[Implementation], device: torch.device,
               timer: Timer, launches: int,
               check: Callable[[Case, bool], None] | None,
               captured: tuple[tuple[str, Callable[[], object], int], ...] = ()
               ) -> list[BenchRow]:
    """Every implementation eager and per launch in a graph, the reference, one check (with
    its reference computed, as a case's first check in a run, and reused, as the others)."""
    spec = get_path(case.path)
    moved, peak = bytes_moved(case), peak_of(device)
    staged = stage(case.inputs, case.columns, spec.workspace_size(case.inputs, case.k), device,
                   CONSTANT, spec.names)
    calls = [bind(spec, impl, impl.load(), staged, contract_of(spec, impl, case, None))
             for impl in impls]
    graphs = [_captured(call, launches, device) for call in calls]
    # the same launches, instrumented (diffcheck.instrument): what the checks cost a kernel
    checked = [_captured(call, launches, device, staged) for call in calls]
    floors = _floors(case, staged, device, launches)
    # All kernels, and the floors, timed in turn: their ratios are what the run is for.
    eager = timer.interleaved(calls)
    in_graph = timer.interleaved(graphs + checked + [replay for _, replay in floors], launches)
    n = len(impls)
    rows = [_row(case, regime, impl.name, how, samples, moved, peak)
            for impl, samples_eager, samples_graph, samples_checked in zip(
                impls, eager, in_graph[:n], in_graph[n:2 * n], strict=True)
            for how, samples in (("eager", samples_eager), ("graph", samples_graph),
                                 ("graph-instrumented", samples_checked))]
    rows += [_row(case, regime, item, "graph", samples, moved, peak)
             for (item, _), samples in zip(floors, in_graph[2 * n:], strict=True)]
    tensors, size = staged.tensors(), staged.out.span

    def oracle():
        return spec.expected(tensors, case.k, case.fill, case.scalars, size)

    rows.append(_row(case, regime, f"{case.path}:reference-oracle", "reference",
                     timer(oracle), moved, peak))
    # Sync-free, so it can be captured: the same work without the host's dispatch.
    graph = _captured(oracle, 1, device)
    rows.append(_row(case, regime, f"{case.path}:reference-oracle", "reference-graph",
                     timer(graph), moved, peak))
    if check is not None:
        slow = Timer(device, 2, max(5, timer.repeats // 5))
        fresh, reused = slow.interleaved([lambda: check(case, True), lambda: check(case, False)])
        rows.append(_row(case, regime, "memory-safety check", "check", fresh, moved, peak))
        rows.append(_row(case, regime, "memory-safety check, reference reused", "check",
                         reused, moved, peak))
    for item, fn, per in captured:  # diffcheck.fastcheck: the same check as graph replays
        rows.append(_row(case, regime, item, "check", timer(fn, per), moved, peak))
    _ratios(rows)
    return rows


@functools.cache
def _floor_kernels():
    """Two measuring kernels, defined on first use (after the interpreter is set up)."""
    import triton
    import triton.language as tl

    @triton.jit
    def gather(slots_ptr, table_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = offs < n
        slot_at = tl.load(slots_ptr + offs, mask=inside, other=0)
        tl.store(out_ptr + offs, tl.load(table_ptr + slot_at, mask=inside), mask=inside)

    @triton.jit
    def empty(out_ptr):
        if tl.program_id(0) < 0:
            tl.store(out_ptr, 0)

    return gather, empty


#: items that bound a kernel from below rather than implement the path
FLOOR_GATHER, FLOOR_LAUNCH = "floor:gather", "floor:launch"


def _captured(call: Callable[[], object], launches: int, device: torch.device,
              instrumented=None) -> Callable[[], object]:
    """``launches`` calls captured in one graph (after one call outside it, which compiles);
    returns what replays it without waiting. With ``instrumented`` (the staged case), the
    kernels are launched as their instrumented copies (diffcheck.instrument)."""
    import contextlib

    from diffcheck.instrument import Instrumented
    from diffcheck.oob import extents

    checking = (Instrumented(extents(instrumented), device=device) if instrumented is not None
                else contextlib.nullcontext())
    with checking:
        call()
        backend.synchronize(device)
        graph = new_graph(device)
        graph.capture(lambda: [call() for _ in range(launches)])
    # the replay holds ``call`` (and the tensors it launches with): a graph keeps raw
    # pointers only, so what it points at must outlive it
    if instrumented is not None and device.type != "cuda":  # the emulator re-runs launches
        return lambda: (_replayed_instrumented(graph, instrumented, device), call)
    return lambda: (graph.replay(sync=False), call)


def _replayed_instrumented(graph, staged, device: torch.device) -> None:
    from diffcheck.instrument import Instrumented
    from diffcheck.oob import extents

    with Instrumented(extents(staged), device=device):
        graph.replay(sync=False)


def _floors(case: Case, staged, device: torch.device,
            launches: int) -> list[tuple[str, Callable[[], object]]]:
    """What bounds the kernels, as captured graphs: an empty launch of one program per row,
    and a bare gather of exactly the case's slots (read a slot list, gather, write; no
    metadata, no guards), the memory-system floor of the random gathers."""
    gather, empty = _floor_kernels()
    spec = get_path(case.path)
    rows_of_case = spec.counts(case.kernel_inputs())[1]
    launched = torch.empty(max(rows_of_case, 1), dtype=torch.int32, device=device)

    def empty_launch():
        empty[(max(rows_of_case, 1),)](launched)

    floors = [(FLOOR_LAUNCH, empty_launch)]
    if spec.gathered is not None:
        table, rows = spec.gathered(case)
        flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        slots = torch.from_numpy(flat.astype(np.int32)).to(device)
        n = slots.numel()
        sink = torch.empty(max(n, 1), dtype=torch.int32, device=device)
        source = staged.buffers[table].view
        block = 1024

        def bare_gather():
            if n:
                gather[(-(-n // block),)](slots, source, sink, n, BLOCK=block, num_warps=4)

        floors.insert(0, (FLOOR_GATHER, bare_gather))
    return [(item, _captured(fn, launches, device)) for item, fn in floors]


def _ratios(rows: list[BenchRow]) -> None:
    """Safe kernels against the unguarded one (same tiling, same how); the reference against
    the fastest kernel in a graph; the gather floor against that kernel too."""
    by = {(r.item, r.how): r for r in rows}
    for r in rows:
        path = r.item.partition(":")[0]
        base = by.get((f"{path}:unguarded", r.how))
        if r.how in ("eager", "graph") and base is not None and r.item != base.item:
            r.versus, r.ratio = base.item, round(r.median_us / base.median_us, 3)
        plain = by.get((r.item, "graph"))
        if r.how == "graph-instrumented" and plain is not None and plain.median_us > 0:
            r.versus, r.ratio = f"{r.item} (graph)", round(r.median_us / plain.median_us, 2)
    graphs = [r for r in rows if r.how == "graph" and not r.item.startswith("floor:")]
    if not graphs:
        return
    fastest = min(graphs, key=lambda g: g.median_us)
    for r in rows:
        if r.item == FLOOR_GATHER or r.how.startswith("reference"):
            r.versus = f"{fastest.item} (graph)"
            r.ratio = round(r.median_us / fastest.median_us, 3 if r.item == FLOOR_GATHER else 2)


@dataclass
class SweepRow:
    """One launch shape of one implementation, timed per launch in a graph."""

    path: str
    regime: str
    item: str
    block_n: int
    num_warps: int
    column_programs: int
    median_us: float
    p10_us: float
    p90_us: float
    gbps: float
    #: the output equals the reference on the regions (a shape must not change results)
    correct: bool


def tunable(fn: Callable) -> bool:
    """True when ``fn`` takes the launch-shape keywords that a sweep varies."""
    params = inspect.signature(fn).parameters
    return "num_warps" in params and "column_programs" in params


def sweep_path(case: Case, regime: str, impls: list[Implementation], device: torch.device,
               timer: Timer, launches: int, block_ns: list[int], warps: list[int],
               columns: list[int]) -> list[SweepRow]:
    """Every (BLOCK_N, num_warps, column programs) of every implementation, in a graph.

    Shapes with more column programs than tiles per row are skipped (they repeat a smaller
    one). Each shape's output is compared with the reference once.
    """
    spec = get_path(case.path)
    moved = bytes_moved(case)
    staged = stage(case.inputs, case.columns, spec.workspace_size(case.inputs, case.k), device,
                   CONSTANT, spec.names)
    args = spec.call_args(staged.tensors())
    expected, mask = spec.expected(staged.tensors(), case.k, case.fill, case.scalars,
                                   staged.out.span)["out"]
    loaded = [impl.load() for impl in impls]
    rows = []
    for block_n in block_ns:
        tiles = -(-case.k // block_n)
        for warp in warps:
            for column in sorted({min(c, tiles) for c in columns}):
                shape = dict(BLOCK_N=block_n, num_warps=warp, column_programs=column)
                graphs, correct = [], []
                for fn in loaded:
                    kwargs = dict({spec.k_keyword: case.k}, out=staged.out.view, **shape)

                    def call(fn=fn, kwargs=kwargs):
                        return fn(*args, **kwargs)

                    staged.poison_out()
                    call()
                    backend.synchronize(device)
                    correct.append(bool(torch.equal(staged.out.view[mask], expected[mask])))
                    graphs.append(_captured(call, launches, device))
                # The implementations of one shape in turn, so their ratios hold.
                timed = timer.interleaved(graphs, launches)
                for impl, samples, ok in zip(impls, timed, correct, strict=True):
                    median = statistics.median(samples)
                    low, high = np.percentile(samples, [10, 90])
                    rows.append(SweepRow(
                        case.path, regime, impl.name, block_n, warp, column, round(median, 3),
                        round(float(low), 3), round(float(high), 3),
                        round(moved / (median * 1e-6) / 1e9, 1), ok))
    return rows


def sweep_table(rows: list[SweepRow]) -> str:
    """The sweep, fastest shape first within each implementation and regime."""
    import pandas as pd

    df = pd.DataFrame([asdict(r) for r in rows])
    df = df.sort_values(["path", "regime", "item", "median_us"])
    return df.to_string(index=False)


def checks_per_second(rows: list[BenchRow]) -> list[str]:
    """One line per timed check: how many checks of that case a second (1 / median)."""
    return [f"{row.path} {row.regime}: {row.item}: {1e6 / row.median_us:,.0f} checks/s "
            f"({row.median_us / 1e3:.3f} ms)" for row in rows
            if row.how == "check" and row.median_us > 0]


def table(rows: list[BenchRow]) -> str:
    import pandas as pd

    df = pd.DataFrame([asdict(r) for r in rows])
    shown = ["path", "regime", "item", "how", "median_us", "p10_us", "p90_us", "gbps",
             "peak_gbps", "versus", "ratio"]
    return df[shown].to_string(index=False)


#: device mutants per timed call of bench's mutant row
BENCH_MUTANTS = 64


@dataclass
class BenchOptions:
    """What `diffcheck bench` was asked for, as the command line says it (see its --help)."""

    path: str = "all"
    impl: list[str] | None = None
    regime: list[str] | None = None
    rows: int = 512
    positions: str = "shuffled"
    k: int = 2048
    q: int = 4
    device: str = "auto"
    repeats: int = 50
    warmup: int = 5
    launches: int = 20
    check: bool = True
    report: Path | None = None
    sweep: bool = False
    block_n: list[int] | None = None
    warps: list[int] | None = None
    column_programs: list[int] | None = None
    devices: str | None = None


def _checked(o: BenchOptions) -> torch.device:
    """The device to time on, once the options are known to be usable (a usage error
    otherwise, before anything is built)."""
    from diffcheck.casefile import max_elements
    from diffcheck.errors import DeviceError, UsageError

    dev = backend.resolve(o.device)
    if o.device == "auto" and dev.type == "cpu":
        raise DeviceError("diffcheck bench times GPU kernels and sees no CUDA/ROCm device; "
                          "pass --device cpu to time the Triton interpreter instead")
    for name in o.regime or []:
        if name not in REGIMES:
            raise UsageError(f"unknown regime '{name}'; known: {', '.join(REGIMES)}")
    if o.positions not in ORDERS:
        raise UsageError(f"unknown --positions '{o.positions}'; known: {', '.join(ORDERS)}")
    if min(o.rows, o.k, o.q, o.repeats, o.launches) < 1 or o.warmup < 0:
        raise UsageError("--rows, --k, --q, --repeats and --launches must be at least 1")
    if o.rows * o.q * o.k * 4 > max_elements():  # top-k rows (MTP: q a request), output, ...
        raise UsageError(f"--rows {o.rows} x --q {o.q} x --k {o.k} is past the case size limit "
                         f"of {max_elements():,} elements (DIFFCHECK_MAX_ELEMENTS raises it)")
    if o.launches > MAX_LAUNCHES:
        raise UsageError(f"--launches must be at most {MAX_LAUNCHES}, got {o.launches}")
    return dev


def _captured_checks(case: Case, safe: Implementation, settings, dev: torch.device,
                     say: Callable[[str], None], where: str) -> tuple:
    """The captured check's rows (GPUs, see diffcheck.fastcheck), or none for a kernel that
    cannot be captured."""
    from diffcheck.fastcheck import CapturedCheck

    # the case already on the device, as for the full check's row
    there = dataclasses.replace(case, inputs={n: t.to(dev) for n, t in case.inputs.items()})
    try:
        captured = CapturedCheck(there, safe, settings)
        mutating = CapturedCheck(there, safe, settings, mutating=True)
    except Exception as e:  # a kernel that cannot be captured: no such row
        say(f"bench {where}: no captured check of {safe.name} ({type(e).__name__}: {e})")
        return ()
    return (("memory-safety check, captured", functools.partial(captured.run, there), 1),
            (f"memory-safety check, captured, per device mutant (of {BENCH_MUTANTS})",
             functools.partial(mutating.first_failing_mutant, there, BENCH_MUTANTS),
             BENCH_MUTANTS))


def _chosen(o: BenchOptions, spec) -> list[Implementation]:
    """The implementations timed on a path: those named, or every registered kernel of it
    (unguarded included: the ratios compare to it)."""
    from diffcheck.impls import builtin, find

    chosen = ([find(n, spec.name) for n in o.impl] if o.impl else
              [i.described() for i in builtin().values() if i.path == spec.name
               and not i.name.endswith(":reference")])
    return [i for i in chosen if i.path == spec.name]


def _time_path(o: BenchOptions, spec, chosen: list[Implementation], dev: torch.device,
               timer: Timer, settings, say: Callable[[str], None]) -> list:
    """Every chosen kernel of one path timed on each regime, with the full check (and on a
    GPU the captured one) of the first safe kernel."""
    from diffcheck.executors import InProcess
    from diffcheck.job import Job
    from diffcheck.modes import Eager

    results: list = []
    safe = next((i for i in chosen if i.safe), chosen[0])
    runner = InProcess(settings)

    def one_check(case, fresh_reference, safe=safe, runner=runner):
        # A whole check: stage both fillings, call, compute the reference, compare.
        # The upload of the case to the device (once per case in a run) is not part
        # of it; a run computes a case's reference once, for its first check.
        if fresh_reference:
            settings.forget_references()
        runner.run(Job(case, safe, Eager()))

    for name in o.regime or list(REGIMES):
        say(f"bench {spec.name} {name}: {o.rows} rows, K={o.k} ...")
        case = bench_case(spec.name, name, o.rows, o.k, o.q, o.positions)
        fast = _captured_checks(case, safe, settings, dev, say, f"{spec.name} {name}") \
            if o.check and dev.type == "cuda" else ()
        results += bench_path(case, name, chosen, dev, timer, o.launches,
                              one_check if o.check else None, fast)
    return results


def run(o: BenchOptions, say: Callable[[str], None], show: Callable[[str], None]) -> None:
    """`diffcheck bench` from its options: time every chosen kernel (or sweep launch shapes)
    on each regime, print the table, write the CSV. ``say`` gets progress lines (stderr),
    ``show`` the tables (stdout). With --devices, the same on each device in turn, then the
    medians side by side."""
    import pandas as pd

    from diffcheck.devices import parse_devices
    from diffcheck.errors import NothingSelectedError

    dev = _checked(o)
    backend.prepare(dev)
    results: list = []
    for slot in parse_devices(o.devices, dev) or ("",):
        here = torch.device(dev.type, int(slot)) if slot and dev.type == "cuda" else dev
        with torch.cuda.device(here) if here.type == "cuda" else contextlib.nullcontext():
            timed = _time_every_path(o, here, say)
        if not timed:
            raise NothingSelectedError("nothing to time (check --path and --impl)")
        state = clocks(here)
        show(f"device: {backend.describe(here, slot)}{'; ' + state if state else ''}; "
             f"{o.rows} rows, K={o.k}, positions {o.positions}")
        show(sweep_table(timed) if o.sweep else table(timed))
        if not o.sweep:
            for line in checks_per_second(timed):
                show(line)
        for row in timed:
            row.device = slot
        results += timed
    if o.devices and not o.sweep:
        show(side_by_side(results))
    if o.report is not None:
        o.report.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([asdict(r) for r in results]).to_csv(o.report, index=False)
        say(f"report: {o.report}")


def _time_every_path(o: BenchOptions, dev: torch.device, say: Callable[[str], None]) -> list:
    """Every chosen path's rows (or sweep rows) on ``dev``."""
    from diffcheck.errors import UsageError
    from diffcheck.paths import select_paths
    from diffcheck.settings import RunSettings, new_run_id

    timer = Timer(dev, o.warmup, o.repeats)
    settings = RunSettings(dev, new_run_id(), 0, isolation="none")
    results: list = []
    with backend.interpreter_as_on_gpu(dev):  # kernels run on the interpreter as on a GPU
        for spec in select_paths(o.path):
            chosen = _chosen(o, spec)
            if not chosen or spec.bench_case is None:
                continue
            if o.sweep:
                for i in chosen:
                    if not tunable(i.load()):
                        raise UsageError(f"--sweep needs num_warps= and column_programs= "
                                         f"keywords, which {i.name} does not take")
                for name in o.regime or list(REGIMES):
                    say(f"sweep {spec.name} {name}: {o.rows} rows, K={o.k} ...")
                    case = bench_case(spec.name, name, o.rows, o.k, o.q, o.positions)
                    results += sweep_path(case, name, chosen, dev, timer, o.launches,
                                          o.block_n or [128, 256, 512, 1024, 2048],
                                          o.warps or [1, 2, 4, 8],
                                          o.column_programs or [1, 2, 4, 8, 16])
                continue
            results += _time_path(o, spec, chosen, dev, timer, settings, say)
    return results


def side_by_side(rows: list[BenchRow]) -> str:
    """Each timed item's median on every device, and the slowest over the fastest: a card
    that alone is slow shows."""
    slots = list(dict.fromkeys(r.device for r in rows))
    medians: dict[tuple, dict[str, float]] = {}
    for r in rows:
        medians.setdefault((r.path, r.regime, r.item, r.how), {})[r.device] = r.median_us
    head = f"{'path':<10} {'regime':<6} {'item':<26} {'how':<16}" + \
        "".join(f" {'device ' + s:>12}" for s in slots) + "  slowest/fastest"
    lines = ["median us by device", head]
    for (path, regime, item, how), by in medians.items():
        times = [by.get(s) for s in slots]
        known = [t for t in times if t is not None]
        spread = max(known) / min(known) if known and min(known) > 0 else float("nan")
        lines.append(f"{path:<10} {regime:<6} {item[:26]:<26} {how:<16}" + "".join(
            f" {t:>12.2f}" if t is not None else f" {'-':>12}" for t in times) +
            f"  {spread:.2f}x")
    return "\n".join(lines)
