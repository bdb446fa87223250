"""Exact comparison of a staged output against the reference: findings as data.

Nothing here renders text for people except ``describe``; the report and the console take the
numbers and locations from the findings.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch

from diffcheck.buffers import POISON, Buffer, Staged
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
    #: how an out-of-bounds access was found: interpreter, redzone-tag, redzone-diff,
    #: redzone-write
    found_by: str = ""
    #: the first few elements or accesses, for --details
    examples: tuple[Example, ...] = ()


@dataclass(frozen=True)
class Comparison:
    checked: int
    findings: tuple[Finding, ...]
    #: observations that are not findings (e.g. a check that was inconclusive), for the detail
    notes: tuple[str, ...] = ()

    def of(self, kind: Status) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind), None)


class RegionLocator:
    """Turns a flat output index into "request 3, column 2047" using the intended regions."""

    def __init__(self, region_indptr: torch.Tensor, row_label: str) -> None:
        bounds = region_indptr.cpu().tolist()
        self.starts, self.ends, self.label = bounds[:-1], bounds[1:], row_label

    def __call__(self, index: int) -> str:
        row = bisect.bisect_right(self.starts, index) - 1
        if 0 <= row < len(self.starts) and index < self.ends[row]:
            return f"{self.label} {row}, column {index - self.starts[row]}"
        return f"element {index}, outside every region"


def out_of_bounds_label(buffer: str, offset: int, size: int) -> str:
    """``kv_indices[-1]`` is one element before the start; ``out[+1]`` the first past the end."""
    if offset < 0:
        return f"{buffer}[{offset}] ({-offset * 4} bytes before its start)"
    past = offset - size + 1
    return f"{buffer}[+{past}] (element {past} past its end)"


def _found(mask: torch.Tensor) -> tuple[int, list[int]]:
    """How many elements are true, and the flat indices of the first EXAMPLES of them."""
    hits = torch.nonzero(mask.reshape(-1)).flatten()
    return hits.numel(), hits[:EXAMPLES].tolist()


def margin_writes(buf: Buffer) -> Finding | None:
    """Writes into the margins of one allocation: out-of-bounds writes."""
    now = torch.cat([buf.before(), buf.after()])
    count, hits = _found(now != buf.pristine)
    if not count:
        return None
    examples = []
    for i in hits:
        offset = i - buf.margin if i < buf.margin else buf.span + i - buf.margin
        examples.append(Example(buf.name, offset, out_of_bounds_label(buf.name, offset, buf.span),
                                int(buf.pristine[i]), int(now[i])))
    first = examples[0]
    return Finding(Status.OOB_WRITE, buf.name, count, first.offset, first.location,
                   None, first.actual, found_by="redzone-write", examples=tuple(examples))


def margins_changed(staged: Staged, restore: bool = False) -> list[Finding]:
    """Out-of-bounds writes into the margins of every staged buffer; ``restore`` resets them
    (between the steps of a replay, so each step is judged on its own writes)."""
    # All margins have one size: one comparison and one host synchronisation for all buffers;
    # only a changed one is looked at closely.
    counts = (staged.margins_now() != staged.margins_staged()).sum(dim=1).tolist()
    changed = dict(zip(staged.names(), counts, strict=True))
    findings = []
    for buf in (staged.out, *staged.buffers.values()):  # out first: the usual culprit
        finding = margin_writes(buf) if changed[buf.name] else None
        if finding is not None:
            findings.append(finding)
            if restore:
                buf.alloc[: buf.margin] = buf.pristine[: buf.margin]
                buf.alloc[buf.margin + buf.span :] = buf.pristine[buf.margin :]
    return findings


def compare_output(
    out: torch.Tensor,
    expected: torch.Tensor,
    mask: torch.Tensor,
    locate: RegionLocator,
    well_formed: bool,
    margins: list[Finding] = (),
) -> Comparison:
    """Compare every region element exactly; anything changed outside the regions is found."""
    out = out.reshape(-1)
    findings = []
    differs = (out != expected) & mask
    stray = (out != POISON) & ~mask
    # One host synchronisation for the counts; positions only where something differs.
    checked, n_differs, n_stray = torch.stack([mask.sum(), differs.sum(), stray.sum()]).tolist()
    if n_differs:
        count, hits = _found(differs)
        kind = Status.MISMATCH if well_formed else Status.STALE_SENSITIVE
        examples = tuple(Example("out", i, locate(i), int(expected[i]), int(out[i]))
                         for i in hits)
        first = hits[0]
        findings.append(Finding(kind, "out", count, first, locate(first),
                                int(expected[first]), int(out[first]), examples=examples))
    if n_stray:
        count, hits = _found(stray)
        examples = tuple(Example("out", i, locate(i), POISON, int(out[i])) for i in hits)
        first = hits[0]
        findings.append(Finding(Status.STRAY_WRITE, "out", count, first, locate(first),
                                POISON, int(out[first]), examples=examples))
    return Comparison(int(checked), tuple(findings) + tuple(margins))


def diverged(replayed: torch.Tensor, eager: torch.Tensor, locate: RegionLocator) -> Finding | None:
    """The replayed output differs from an eager call on the same inputs."""
    replayed, eager = replayed.reshape(-1), eager.reshape(-1)
    count, hits = _found(replayed != eager)
    if not count:
        return None
    examples = tuple(Example("out", i, locate(i), int(eager[i]), int(replayed[i])) for i in hits)
    first = examples[0]
    return Finding(Status.DIVERGENCE, "out", count, first.offset, first.location,
                   first.expected, first.actual, examples=examples)


def describe(finding: Finding, checked: int) -> str:
    """One line for a person, in the style of torch.testing.assert_close."""
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
    if finding.kind == Status.OOB_READ:
        return (f"Out-of-bounds read: {finding.location}, {finding.count} lanes or elements, "
                f"found by {finding.found_by}")
    if finding.kind == Status.DIVERGENCE:
        return (f"Replay differs from eager on the same inputs: {finding.count} elements, first "
                f"at {finding.location}: eager {finding.expected}, replay {finding.actual}")
    return f"{finding.kind}: {finding.location}"
