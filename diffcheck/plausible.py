"""Reads that only plausible red zones show, and which margin they read.

On a GPU a read is seen only through the output. A kernel that checks what it reads (request
id below R, position inside the context) turns the constant and the tagged margins alike into
its fill, so an over-read of a per-token or per-request buffer leaves no trace. The plausible
fillings (diffcheck.buffers) hold values that pass such checks, different in A and B: when
the outputs of A and B differ, the kernel read a margin. Which one is found by probes: filling
A with one buffer's margins as in B; a buffer whose margins alone change the output was read
there (then each side alone says before or after). When no single buffer does, every buffer
is named as a candidate: the finding never names one buffer wrongly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffcheck.buffers import PLAUSIBLE_A, PLAUSIBLE_B, Filling
from diffcheck.compare import RegionLocator, nondeterministic
from diffcheck.findings import EXAMPLES, Example, Finding, FoundBy
from diffcheck.modes import Step
from diffcheck.status import Status

#: probe(filling, again) -> row i's step under a filling (None when it did not run that far);
#: ``again`` asks for a second, separate run of the same filling
Probe = Callable[[Filling, bool], "Step | None"]
FOUND_BY = FoundBy.REDZONE_PLAUSIBLE


def _writes(step: Step) -> frozenset:
    """The out-of-bounds and input writes a step's calls made, by kind, buffer and count."""
    return frozenset((f.kind, f.buffer, f.count) for f in step.findings
                     if f.kind in (Status.OOB_WRITE, Status.INPUT_WRITE))


def same(x: Step, y: Step) -> bool:
    """Two steps left the same output, extra outputs and writes."""
    if not torch.equal(x.out, y.out) or _writes(x) != _writes(y):
        return False
    return x.extras.keys() == y.extras.keys() and all(
        torch.equal(x.extras[n], y.extras[n]) for n in x.extras)


def _difference(a: Step, other: Step, locate: RegionLocator
                ) -> tuple[int, str, tuple[Example, ...]]:
    """(count, where in words, examples) of how ``other`` differs from
    ``a``: output elements, else an extra output's, else the writes only one of them made."""
    first, again = a.out.reshape(-1), other.out.reshape(-1)
    hits = torch.nonzero(first != again).flatten()
    if hits.numel():
        examples = tuple(Example("out", at, locate(at), int(first[at]), int(again[at]))
                         for at in hits[:EXAMPLES].tolist())
        return int(hits.numel()), f"first at {examples[0].location}", examples
    for name, values in a.extras.items():
        theirs = other.extras.get(name)
        if theirs is None or theirs.shape != values.shape:
            return 1, f"the call returned {name} of another shape", ()
        hits = torch.nonzero(values.reshape(-1) != theirs.reshape(-1)).flatten()
        if hits.numel():
            at = int(hits[0])
            return (int(hits.numel()), f"first at {name}[{at}]",
                    (Example(name, at, f"{name}[{at}]", int(values.reshape(-1)[at]),
                             int(theirs.reshape(-1)[at])),))
    extra = sorted(_writes(other) ^ _writes(a), key=str)
    if not extra:
        return 1, "the call returned other extra outputs", ()
    kind, buffer, count = extra[0]
    return count, f"the call then made a {kind.value} into {buffer}", ()


def _steady(probe: Probe, filling: Filling, locate: RegionLocator
            ) -> tuple[Step | None, Finding | None]:
    """A probe run twice: its step when both runs agree; else the nondeterminism they show
    (a race must never name a buffer)."""
    first = probe(filling, False)
    again = probe(filling, True) if first is not None else None
    if first is None or again is None:
        return None, None
    if same(first, again):
        return first, None
    race = nondeterministic(first.out, again.out, locate, f"{filling} filling, run twice",
                            "reruns")
    return None, race or Finding(Status.NONDETERMINISTIC, "out", 1, 0,
                                 f"{filling} filling, run twice: extra outputs or writes differ",
                                 found_by=FoundBy.RERUNS)


def _label(staged, name: str, sides: list[str]) -> tuple[str, int]:
    """In words, which margin of ``name`` was read (and the neighbour a far read may have
    come from), and an element index standing for it."""
    buffers = staged.all()
    ids = [b.name for b in buffers]
    at = ids.index(name)
    span = buffers[at].span
    if sides == ["before"]:
        words, index, near = f"{name}: a read before its start", -1, at - 1
    elif sides == ["after"]:
        words, index, near = f"{name}: a read past its end", span, at + 1
    else:
        words, index, near = f"{name}: reads of its margins (before and after)", span, -1
    if 0 <= near < len(buffers):
        side = "past the end of" if near < at else "before the start of"
        words += f", or a far read {side} {ids[near]}"
    return words, index


def judge(a: Step, b: Step, locate: RegionLocator, probe: Probe, when: str) -> list[Finding]:
    """Findings of the plausible runs ``a`` (filling A) and ``b`` (filling B) of one row.

    Identical: nothing. Any run that does not repeat itself (A, B, each probe run twice, A
    once more at the end): the kernel is not deterministic, and nothing is named. Otherwise
    one out-of-bounds read per buffer whose margins alone change the output, or one naming
    every candidate when none does alone.
    """
    if same(a, b):
        return []
    for filling, first in ((PLAUSIBLE_A, a), (PLAUSIBLE_B, b)):
        again = probe(filling, False)
        if again is None:
            return []
        if not same(first, again):
            race = nondeterministic(first.out, again.out, locate,
                                    f"{filling} filling, run twice", "reruns")
            return [race] if race else []
    staged = a.staged
    names = [buf.name for buf in staged.all()]
    findings = []
    for name in names:
        flipped, race = _steady(probe, PLAUSIBLE_A.with_b(name), locate)
        if race is not None:
            return [race]
        if flipped is None or same(a, flipped):
            continue
        sides = []
        for side in ("before", "after"):
            one, race = _steady(probe, PLAUSIBLE_A.with_b(f"{name}.{side}"),
                                 locate)
            if race is not None:
                return [race]
            if one is not None and not same(a, one):
                sides.append(side)
        words, index = _label(staged, name, sides)
        count, where, examples = _difference(a, flipped, locate)
        findings.append(Finding(
            Status.OOB_READ, name, count, index,
            f"{words} (its margin's plausible values changed the output, {where})",
            examples[0].expected if examples else None,
            examples[0].actual if examples else None,
            found_by=FOUND_BY, examples=examples, when=when))
    last = probe(PLAUSIBLE_A, True)
    if last is not None and not same(a, last):
        race = nondeterministic(a.out, last.out, locate, "plausible-a filling, once more after "
                                "the probes", "reruns")
        return [race] if race else []
    if findings:
        return findings
    count, where, examples = _difference(a, b, locate)
    return [Finding(Status.OOB_READ, "?", count, 0,
                    f"output depends on the margins of {', '.join(names)} together (plausible "
                    f"fillings A and B differ, {where}; no one buffer's margins alone change it)",
                    found_by=FOUND_BY, examples=examples, when=when)]
