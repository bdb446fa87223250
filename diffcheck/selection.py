"""From command-line choices to the list of jobs: which cases, implementations and modes."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from diffcheck.case import Case, Scenario, elements
from diffcheck.casefile import case_problems, load_any, max_elements
from diffcheck.defaults import CASE_ELEMENTS_KEPT
from diffcheck.errors import CaseFileError, NothingSelectedError, UnknownNameError, UsageError
from diffcheck.impls import Implementation, defaults, find
from diffcheck.job import Job
from diffcheck.modes import Mode
from diffcheck.paths import known_paths, select_paths

#: int32 elements per graph row and top-k column one replay step holds, about: a KV table
#: of 4 K slots per row, a top-k buffer of 1.75 rows, the output workspace
STEP_BUFFERS = 8

#: what runs without --suite or --cases: every layout with every oddity, large batches, a
#: case judged with the other fill, a call without out= (smoke); every partition of the
#: path's declared domain and every pair of scalar partitions, K = 2048 included, and every
#: stale transformation of every tensor (domain); graphs captured every way the domain names
#: (domain-replay); malformed metadata from serving (stale); graphs captured on dummy and on
#: full batches, grown, shrunk, two sizes (replay); the GLM-5.2 failure (glm52). Together
#: they catch every bug class the full suites do. smoke-2048 (smoke layouts at K = 2048)
#: left the default when domain brought K = 2048 with its boundaries to every scalar pair.
DEFAULT_SUITES = ("smoke", "domain", "domain-replay", "stale", "replay", "glm52")
#: what a GPU adds to the default: the domain's partitions that need a GPU's memory (offsets
#: past 2^24, top-k rows starting past 2^31 elements, prefill requests of 64K tokens)
GPU_DEFAULT_SUITES = ("production-domain",)


def case_files(paths: list[Path]) -> list[Path]:
    """Case files as given, a folder standing for every ``.npz`` file in it (sorted); a file
    named twice (directly, through a folder or a link) or a copy of one runs once: two rows of
    one case would make a report that `report regress` and `merge` refuse."""
    named: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.npz"))
            if not found:
                raise CaseFileError(f"case folder {path}: no .npz case files in it")
        else:
            found = [path]
        for file in found:
            named.setdefault(os.path.realpath(file), file)
    # a copy has the size of its original: only files of a shared size are read and hashed
    size_of = {file: _size(file) for file in named.values()}
    sizes = Counter(size_of.values())
    files, digests = [], set()
    for file, size in size_of.items():
        if size is not None and sizes[size] > 1:
            digest = _content(file)
            if digest in digests:
                continue
            digests |= {digest} - {""}
        files.append(file)
    return files


def _size(file: Path) -> int | None:
    try:
        return file.stat().st_size
    except OSError:
        return None


def _content(file: Path) -> str:
    """A file's bytes by hash; '' when unreadable (loading it says why)."""
    try:
        return hashlib.sha256(file.read_bytes()).hexdigest()
    except OSError:
        return ""


def suite_names() -> list[str]:
    names: list[str] = []
    for spec in known_paths().values():
        names += [n for n in spec.suites() if n not in names]
    return names


def build_suites(
    paths: list[str], suites: list[str], run_seed: int, fill: int | None = None,
    graph_size: int | None = None
) -> list[Case | Scenario]:
    """Generate the named suites' cases and scenarios for the selected paths (by seed).

    ``graph_size`` overrides the graph size of replay scenarios.
    """
    known = suite_names()
    for name in suites:
        if name not in known:
            raise UnknownNameError(f"unknown suite '{name}'; known: {', '.join(known)}")
    if graph_size is not None and graph_size < 2:
        raise UsageError(f"--graph-size must be at least 2, got {graph_size}")
    if graph_size is not None:
        widest = max((layout.k for path in paths for name in suites
                      for layout in getattr(known_paths()[path].suites().get(name), "layouts",
                                            {}).values()), default=0)
        needed = STEP_BUFFERS * graph_size * widest
        if needed > max_elements():
            raise UsageError(f"--graph-size {graph_size} needs about {needed:,} elements per "
                             f"step at K={widest}, past the limit of {max_elements():,} "
                             "(DIFFCHECK_MAX_ELEMENTS raises it)")
    cases: list[Case | Scenario] = []
    for name in suites:
        for path in paths:
            builder = known_paths()[path].suites().get(name)
            if builder is None:
                continue
            own = known_paths()[path].fill if fill is None else fill  # each contract's own
            built = (builder(run_seed, own, graph_size) if builder.scenarios
                     else builder(run_seed, own))
            for target in built:
                for case in target.steps if isinstance(target, Scenario) else [target]:
                    problems = case_problems(case)
                    if problems:  # a generator bug, not a user error
                        raise RuntimeError(f"generated case {case.case_id} is malformed: "
                                           f"{problems[0]}")
                cases.append(target)
    return cases


def _matches(target: Case | Scenario, patterns: list[str]) -> bool:
    """A scenario matches through its own id or name, or any of its steps'."""
    names = [target.case_id, target.name]
    if isinstance(target, Scenario):
        names += [n for step in target.steps for n in (step.case_id, step.name)]
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


@dataclass
class Selection:
    cases: list[Case | Scenario]
    impls: list[Implementation]
    modes: list[Mode]
    #: (index, count) of a CI shard: only the jobs whose key hashes to this shard run
    shard: tuple[int, int] = (1, 1)

    def _all_jobs(self) -> list[Job]:
        """Implementation by implementation: a worker that one implementation left unfit (a
        thread still running) is replaced once, not before every job of another. A case too
        large for a worker to keep (production-domain's gigabytes) runs last, for every
        implementation in a row, so that a worker builds it once, not once for each."""
        large = {id(case) for case in self.cases if elements(case) > CASE_ELEMENTS_KEPT}
        jobs = [Job(case, impl, mode) for impl in self.impls for case in self.cases
                if id(case) not in large and impl.path == case.path
                for mode in self.modes if mode.rows(case)]
        return jobs + [Job(case, impl, mode) for case in self.cases if id(case) in large
                       for impl in self.impls if impl.path == case.path
                       for mode in self.modes if mode.rows(case)]

    def jobs(self) -> list[Job]:
        """Every (target, implementation, mode) with at least one row (replay needs a
        scenario), restricted to this shard."""
        index, count = self.shard
        return [job for job in self._all_jobs()
                if count == 1 or zlib.crc32(job_key(job).encode()) % count == index - 1]

    def rows(self) -> int:
        return sum(len(job.mode.rows(job.case)) for job in self.jobs())


def job_key(job: Job) -> str:
    """Stable across runs and machines, so a shard always gets the same checks."""
    return f"{job.case.path}|{job.case.case_id}|{job.impl.name}|{job.mode.name}"


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` with 1 <= I <= N."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard must be I/N (e.g. 2/4), got '{text}'") from None
    if not 1 <= index <= count:
        raise UsageError(f"--shard {text}: need 1 <= I <= N")
    return index, count


def select(
    path: str,
    impl_names: list[str],
    suites: list[str],
    case_files: list[str],
    case_patterns: list[str],
    modes: list[Mode],
    run_seed: int,
    fill: int | None,
    max_cases: int | None,
    graph_size: int | None = None,
    shard: tuple[int, int] = (1, 1),
    gpu: bool = False,
) -> Selection:
    """Resolve every name (raising one clear line for an unknown one) and filter the cases;
    ``gpu``: the default selection adds the GPU-sized domain partitions."""
    paths = [spec.name for spec in select_paths(path)]
    impls = [find(name, path) for name in impl_names] if impl_names else defaults(paths)
    outside = [i.name for i in impls if i.path not in paths]
    if outside:
        raise UsageError(f"--impl {outside[0]} does not follow --path {path}; "
                         f"pass --path {outside[0].partition(':')[0]} or --path all")
    if not suites and not case_files:
        suites = list(DEFAULT_SUITES) + (list(GPU_DEFAULT_SUITES) if gpu else [])
    cases = build_suites(paths, suites, run_seed, fill, graph_size)
    for file in case_files:
        case = load_any(file)
        if case.path in paths:
            cases.append(case)
    if case_patterns:
        cases = [c for c in cases if _matches(c, case_patterns)]
    if max_cases is not None:
        if max_cases < 1:
            raise UsageError(f"--max-cases must be at least 1, got {max_cases}")
        cases = cases[:max_cases]
    selection = Selection(cases, impls, modes, shard)
    if not selection._all_jobs():  # an empty shard of a real selection is fine
        raise NothingSelectedError(
            f"nothing to run: {len(cases)} cases x {len(impls)} implementations x "
            f"{len(modes)} modes selected (check --path, --impl, --suite, --cases and --case; "
            "--mode replay needs a scenario suite such as replay or glm52)")
    return selection
