"""From command-line choices to the list of jobs: which cases, implementations and modes."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from diffcheck.case import Case, case_problems, load_case
from diffcheck.errors import NothingSelectedError, UnknownNameError, UsageError
from diffcheck.impls import Implementation, defaults, find
from diffcheck.modes import Mode
from diffcheck.paths import PATHS, select_paths
from diffcheck.runner import Job


def suite_names() -> list[str]:
    names: list[str] = []
    for spec in PATHS.values():
        names += [n for n in spec.suites() if n not in names]
    return names


def build_suites(paths: list[str], suites: list[str], run_seed: int, fill: int) -> list[Case]:
    """Generate the named suites' cases for the selected paths (deterministic by seed)."""
    known = suite_names()
    for name in suites:
        if name not in known:
            raise UnknownNameError(f"unknown suite '{name}'; known: {', '.join(known)}")
    cases = []
    for name in suites:
        for path in paths:
            builder = PATHS[path].suites().get(name)
            for case in builder(run_seed, fill) if builder else []:
                problems = case_problems(case)
                if problems:  # a generator bug, not a user error
                    raise RuntimeError(f"generated case {case.case_id} is malformed: {problems[0]}")
                cases.append(case)
    return cases


@dataclass
class Selection:
    cases: list[Case]
    impls: list[Implementation]
    modes: list[Mode]

    def jobs(self) -> list[Job]:
        return [Job(case, impl, mode) for case in self.cases for impl in self.impls
                if impl.path == case.path for mode in self.modes]


def select(
    path: str,
    impl_names: list[str],
    suites: list[str],
    case_files: list[str],
    case_patterns: list[str],
    modes: list[Mode],
    run_seed: int,
    fill: int,
    max_cases: int | None,
) -> Selection:
    """Resolve every name (raising one clear line for an unknown one) and filter the cases."""
    paths = [spec.name for spec in select_paths(path)]
    impls = [find(name) for name in impl_names] if impl_names else defaults(paths)
    outside = [i.name for i in impls if i.path not in paths]
    if outside:
        raise UsageError(f"--impl {outside[0]} does not follow --path {path}; "
                         f"pass --path {outside[0].partition(':')[0]} or --path all")
    if not suites and not case_files:
        suites = ["smoke"]
    cases = build_suites(paths, suites, run_seed, fill)
    for file in case_files:
        case = load_case(file)
        if case.path in paths:
            cases.append(case)
    if case_patterns:
        cases = [c for c in cases
                 if any(fnmatch.fnmatchcase(c.case_id, p) or fnmatch.fnmatchcase(c.name, p)
                        for p in case_patterns)]
    if max_cases is not None:
        if max_cases < 1:
            raise UsageError(f"--max-cases must be at least 1, got {max_cases}")
        cases = cases[:max_cases]
    selection = Selection(cases, impls, modes)
    if not selection.jobs():
        raise NothingSelectedError(
            f"nothing to run: {len(cases)} cases x {len(impls)} implementations selected "
            "(check --path, --impl, --suite, --cases and --case)")
    return selection
