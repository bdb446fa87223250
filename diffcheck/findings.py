"""Findings: what a check found, as data (kinds, counts, locations, examples), and the one
place that renders them as text for people.

A leaf of the model: the report, the console, JUnit and the markdown summary all take the
numbers and locations from findings, and their text from ``describe``; nobody re-parses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from diffcheck.status import Status

#: examples kept per finding for --details (the report keeps counts of all of them)
EXAMPLES = 32


@dataclass(frozen=True)
class Example:
    """One element or access behind a finding: a row of the --details CSV."""

    buffer: str
    #: flat element index in the buffer (negative or >= its size when out of bounds)
    offset: int
    location: str
    expected: int | None = None
    actual: int | None = None


class FoundBy(str, Enum):
    """What saw a finding: it names the check in the report's ``*_found_by`` columns."""

    NOTHING = ""
    INTERPRETER = "interpreter"  # the interpreter sandbox saw the address (CPU)
    INSTRUMENTED = "instrumented"  # the kernel's own bounds checks (a GPU's compiled code)
    REDZONE_TAG = "redzone-tag"  # a tag from a margin reached the output
    REDZONE_DIFF = "redzone-diff"  # the constant and the tagged filling gave other outputs
    REDZONE_PLAUSIBLE = "redzone-plausible"  # a plausible margin value changed the output
    REDZONE_WRITE = "redzone-write"  # a margin changed
    STAGED_COPY = "staged-copy"  # an input changed against its staged copy
    RERUNS = "reruns"  # identical runs, different outputs
    SECOND_LOOK = "second-look"  # the output changed after the call returned
    PROCESS_STATE = "process-state"  # the process changed (RNG, directory, threads...)
    FREED_MEMORY = "freed-memory"  # a replay wrote memory freed since capture

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Finding:
    """One kind of difference in one buffer: how many elements, and the first of them."""

    kind: Status
    buffer: str
    count: int
    #: flat element index in the buffer (negative or >= its size for out-of-bounds elements)
    index: int
    location: str
    expected: int | None = None
    actual: int | None = None
    #: how it was found (a plain string from an outside Bounds checker compares alike)
    found_by: FoundBy | str = FoundBy.NOTHING
    #: the first few elements or accesses, for --details
    examples: tuple[Example, ...] = ()
    #: which call or run showed it, when not the row's own first call ("warm-up call",
    #: "run 2 (tags filling, programs reversed)"); empty for the row's first call
    when: str = ""


@dataclass(frozen=True)
class Comparison:
    checked: int
    findings: tuple[Finding, ...]
    #: observations that are not findings (e.g. a check that was inconclusive), for the detail
    notes: tuple[str, ...] = ()

    def of(self, kind: Status) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind), None)


def describe(finding: Finding, checked: int) -> str:
    """One line for a person, in the style of torch.testing.assert_close."""
    text = _describe(finding, checked)
    return f"{text} ({finding.when})" if finding.when else text


def _describe(finding: Finding, checked: int) -> str:
    if finding.kind in (Status.MISMATCH, Status.STALE_SENSITIVE):
        share = f" ({100 * finding.count / checked:.1f}%)" if checked else ""
        return (f"Mismatched elements: {finding.count} / {checked}{share}, first at "
                f"{finding.location}: expected {finding.expected}, got {finding.actual}")
    if finding.kind == Status.STRAY_WRITE:
        return (f"Stray writes: {finding.count} elements of out outside every region, first at "
                f"{finding.location} (now {finding.actual})")
    if finding.kind == Status.OOB_WRITE:
        now = f", now {finding.actual}" if finding.actual is not None else ""
        return (f"Out-of-bounds write: {finding.location}, {finding.count} elements{now}, "
                f"found by {finding.found_by}")
    if finding.kind == Status.INPUT_WRITE and finding.found_by in (FoundBy.INTERPRETER,
                                                                   FoundBy.INSTRUMENTED):
        return (f"Input written: {finding.location}, {finding.count} lanes (inputs are "
                "read-only, even when put back before the call returns), found by "
                f"{finding.found_by}")
    if finding.kind == Status.INPUT_WRITE:
        return (f"Input written: {finding.count} elements of {finding.buffer} changed, first "
                f"{finding.location}: was {finding.expected}, now {finding.actual} (inputs "
                "are read-only)")
    if finding.kind == Status.SIDE_EFFECT:
        return f"Side effect: the call {finding.location} (put back before the next call)"
    if finding.kind == Status.OOB_READ:
        return (f"Out-of-bounds read: {finding.location}, {finding.count} lanes or elements, "
                f"found by {finding.found_by}")
    if finding.kind == Status.NONDETERMINISTIC and finding.found_by == FoundBy.SECOND_LOOK:
        return (f"Output changed after the call returned: {finding.count} elements, first at "
                f"{finding.location}: {finding.expected} then {finding.actual} (a writer still "
                "running: a thread, another stream)")
    if finding.kind == Status.NONDETERMINISTIC and finding.found_by == FoundBy.INTERPRETER:
        return (f"Racing programs: {finding.location}, {finding.count} elements with no "
                "atomic (a GPU runs the programs of a launch at once: the value depends on "
                f"their timing, a lost update or a last writer), found by {finding.found_by}")
    if finding.kind == Status.NONDETERMINISTIC:
        return (f"Not deterministic: {finding.count} elements differ between runs on identical "
                f"inputs, first at {finding.location}: {finding.expected} then "
                f"{finding.actual} (racing writes, or state kept between calls)")
    if finding.kind == Status.DIVERGENCE:
        return (f"Replay differs from eager on the same inputs: {finding.count} elements, first "
                f"at {finding.location}: eager {finding.expected}, replay {finding.actual}")
    return f"{finding.kind}: {finding.location}"
