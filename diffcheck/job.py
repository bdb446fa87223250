"""A job: what to run, a case (or a replay scenario) with an implementation in a mode."""

from __future__ import annotations

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
