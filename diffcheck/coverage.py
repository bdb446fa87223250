"""What a run covered of each path's declared domain (diffcheck.domain), per path and mode.

Measured on the cases the rows ran (their tensors, classified), never on suite names: a
stored case, a fuzz draw and a named suite count alike. Rendered as console lines, a
markdown section and a CSV (one row per path x mode x partition); a partition that needs a
GPU's memory is reported apart when the run had no GPU.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from diffcheck.case import Scenario
from diffcheck.domain import domain_of, exercised
from diffcheck.files import replacing
from diffcheck.paths import get_path

#: the CSV's columns, in order
COLUMNS = ("path", "mode", "dimension", "partition", "reached", "needs_gpu", "doc")


@dataclass
class Coverage:
    """Reached partitions ("dimension=partition") by (path, mode)."""

    reached: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    #: the run had a GPU (partitions that need one count as missing, not as GPU-only)
    gpu: bool = False

    def add(self, path: str, mode: str, keys: Iterable[str]) -> None:
        self.reached.setdefault((path, mode), set()).update(keys)

    def paths(self) -> list[str]:
        return list(dict.fromkeys(path for path, _ in self.reached))

    def of_path(self, path: str) -> set[str]:
        return set().union(*(keys for (p, _), keys in self.reached.items() if p == path))

    def missing(self, path: str) -> list[str]:
        """Declared partitions no mode of the run reached (GPU ones only on a GPU run)."""
        domain = domain_of(get_path(path))
        got = self.of_path(path)
        return [key for key in domain.keys(gpu=self.gpu) if key not in got]

    def lines(self) -> list[str]:
        """One line per path: partitions reached in all and per mode, and the ones missed."""
        out = []
        for path in self.paths():
            domain = domain_of(get_path(path))
            declared = domain.keys(gpu=self.gpu)
            got = self.of_path(path)
            modes = ", ".join(f"{mode} {len(keys & set(declared))}"
                              for (p, mode), keys in self.reached.items() if p == path)
            line = (f"coverage: {path} {len(got & set(declared))}/{len(declared)} domain "
                    f"partitions ({modes})")
            missing = self.missing(path)
            if missing:
                shown = ", ".join(missing[:12]) + (", ..." if len(missing) > 12 else "")
                line += f"; never reached: {shown}"
            gpu_only = [k for k in domain.keys() if k not in declared]
            if gpu_only:
                line += f"; {len(gpu_only)} more need a GPU (production-domain)"
            out.append(line)
        return out

    def markdown(self) -> str:
        if not self.reached:
            return ""
        lines = ["### Domain coverage", "", "| path | reached | never reached |",
                 "| --- | --- | --- |"]
        for path in self.paths():
            declared = domain_of(get_path(path)).keys(gpu=self.gpu)
            got = self.of_path(path) & set(declared)
            missing = ", ".join(f"`{k}`" for k in self.missing(path)[:20]) or "none"
            lines.append(f"| {path} | {len(got)}/{len(declared)} | {missing} |")
        return "\n".join(lines) + "\n"

    def write_csv(self, where: Path) -> None:
        """Every (path, mode, partition) with whether the run reached it."""
        with replacing(where) as partial, partial.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(COLUMNS)
            for (path, mode), keys in self.reached.items():
                domain = domain_of(get_path(path))
                for dim in domain.dimensions:
                    for part in dim.partitions:
                        key = f"{dim.name}={part.name}"
                        out.writerow([path, mode, dim.name, part.name, key in keys, part.gpu,
                                      part.doc])


def _modes_keys(spec, job, cache: dict) -> set[str]:
    """What one job reaches: its case with the scalars its implementation is given (one
    that cannot take a scalar runs at its default); eager and capture rows of a scenario run
    its fresh steps one by one (no graph keeps them), so only replay counts its capture
    batches."""
    from diffcheck.calls import contract_of

    target = job.case
    fresh = job.mode.name != "replay" and isinstance(target, Scenario)
    first = target.steps[0] if isinstance(target, Scenario) else target
    scalars = contract_of(spec, job.impl, first, None).scalars
    key = (id(target), fresh, tuple(sorted(scalars.items())))
    if key not in cache:
        cache[key] = exercised(spec, target, fresh=fresh, scalars=scalars)
    return cache[key]


def coverage_of(jobs, rows=None, gpu: bool = False) -> Coverage:
    """Coverage of the jobs (Job: case, impl, mode) whose rows were written (``rows``: the
    report rows; None: every job)."""
    ran = None if rows is None else {(r.path, r.case_id, r.mode) for r in rows}
    coverage, cache = Coverage(gpu=gpu), {}
    for job in jobs:
        target, mode = job.case, job.mode.name
        if ran is not None and not any((target.path, cid, mode) in ran
                                       for cid in _ids(target)):
            continue
        spec = get_path(target.path)
        coverage.add(target.path, mode, _modes_keys(spec, job, cache))
    return coverage


class CoverageOf:
    """The coverage of a run's jobs, computed once when its rows are known."""

    def __init__(self, jobs, gpu: bool) -> None:
        self.jobs, self.gpu = jobs, gpu
        self._done: tuple[int, Coverage] | None = None

    def __call__(self, result) -> Coverage:
        if self._done is None or self._done[0] != len(result.rows):
            self._done = (len(result.rows), coverage_of(self.jobs, result.rows, self.gpu))
        return self._done[1]


def _ids(target) -> list[str]:
    steps = getattr(target, "steps", None)
    return [target.case_id] + ([s.case_id for s in steps] if steps else [])
