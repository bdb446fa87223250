"""A job: what to run, a case (or a replay scenario) with an implementation in a mode; and
the fused job that runs an eager and a capture job of one case together."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from diffcheck.case import Case, Scenario

if TYPE_CHECKING:
    from diffcheck.impls import Implementation
    from diffcheck.modes import Mode


@dataclass(frozen=True)
class Job:
    case: Case | Scenario
    impl: Implementation
    mode: Mode


def row_jobs(job: Job) -> list[tuple[Job, Case]]:
    """Each row of the job with the job that reports it: itself, or the part of a fused job
    whose mode the row is."""
    modes, cases = job.mode.row_modes(job.case), job.mode.rows(job.case)
    return [(job if mode is job.mode else dataclasses.replace(job, mode=mode), case)
            for mode, case in zip(modes, cases, strict=True)]


def parts(job: Job) -> list[Job]:
    """The jobs a fused job stands for (itself for any other)."""
    return [dataclasses.replace(job, mode=mode)
            for mode in getattr(job.mode, "parts", ())] or [job]


def in_job_order(job: Job, outcomes: list) -> list:
    """A fused job's rows as its parts would have given them: every eager row, then every
    capture row (a scenario's steps in order within each)."""
    names = [part.mode.name for part in parts(job)]
    if len(names) == 1:
        return outcomes
    return sorted(outcomes, key=lambda o: names.index(o.row.mode)
                  if o.row.mode in names else len(names))


def ended_early(outcomes: list) -> bool:
    """A fault or a time-out ended the job: a fused job's eager rows may then say what only
    its capture did, and it runs again as its parts."""
    return any(o.lost_device() or o.row.status == "timeout" for o in outcomes)


def fused(jobs: list[Job]) -> list[Job]:
    """An eager job followed by the capture job of the same case and implementation becomes
    one EagerThenCapture job (diffcheck.modes): the same rows, a call and a staging fewer."""
    from diffcheck.modes import Capture, Eager, EagerThenCapture

    merged: list[Job] = []
    for job in jobs:
        last = merged[-1] if merged else None
        if (last is not None and type(last.mode) is Eager and type(job.mode) is Capture
                and last.case is job.case and last.impl is job.impl):
            merged[-1] = Job(job.case, job.impl, EagerThenCapture())
        else:
            merged.append(job)
    return merged
