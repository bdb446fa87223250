"""Row statuses, most severe first (DESIGN.md, "Statuses")."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    FAULT = "fault"  # device error or crash
    TIMEOUT = "timeout"  # the case ran past its time limit
    ERROR = "error"  # the implementation raised
    OOB_WRITE = "oob_write"  # wrote outside every tensor it was given
    INPUT_WRITE = "input_write"  # changed an input buffer: inputs are read-only
    SIDE_EFFECT = "side_effect"  # changed the process: RNG, stream, thread, directory, ...
    OOB_READ = "oob_read"  # read outside every tensor it was given
    STRAY_WRITE = "stray_write"  # wrote inside `out` but outside every region
    NONDETERMINISTIC = "nondeterministic"  # identical inputs, different outputs (a race)
    MISMATCH = "mismatch"  # well-formed case, output differs from the reference
    DIVERGENCE = "divergence"  # graph replay differs from eager on the same inputs
    STALE_SENSITIVE = "stale_sensitive"  # malformed case, safe, output differs from intended
    REFUSED = "refused"  # malformed case: the implementation raised before launching anything
    PASS = "pass"

    @property
    def severity(self) -> int:
        """Larger is worse; ``pass`` is 0."""
        return len(ORDER) - 1 - ORDER.index(self)

    def __str__(self) -> str:
        return self.value


ORDER: tuple[Status, ...] = tuple(Status)

#: what fails a run unless --fail-on says otherwise: everything from divergence up (a
#: replay that does not reproduce the eager result is what graphs get wrong); only
#: stale_sensitive (safe, but not tolerant of stale metadata) and refused (a clear exception
#: on malformed input, what a careful launcher does) do not
DEFAULT_FAIL_ON: frozenset[Status] = frozenset(
    s for s in ORDER if s.severity >= Status.DIVERGENCE.severity
)


def worst(statuses: list[Status]) -> Status:
    """The most severe status of a row's findings (``pass`` when there are none)."""
    return max(statuses, key=lambda s: s.severity, default=Status.PASS)


def parse_statuses(text: str) -> frozenset[Status]:
    """Parse ``--fail-on`` (``mismatch,stray_write``); raises ValueError naming the bad one."""
    chosen = set()
    for word in filter(None, (w.strip() for w in text.split(","))):
        try:
            chosen.add(Status(word))
        except ValueError:
            known = ", ".join(s.value for s in ORDER)
            raise ValueError(f"unknown status '{word}'; known: {known}") from None
    return frozenset(chosen)


def parse_fail_on(text: str) -> frozenset[Status]:
    """--fail-on: the statuses that fail a run (default: divergence and everything worse)."""
    from diffcheck.errors import UsageError

    if not text:
        return DEFAULT_FAIL_ON
    try:
        chosen = parse_statuses(text)
    except ValueError as e:
        raise UsageError(f"--fail-on: {e}") from None
    if not chosen:
        raise UsageError(f"--fail-on {text!r} names no status; list statuses such as "
                         "mismatch,oob_read")
    return chosen
