"""Exact comparison of a staged output against the reference: findings as data
(diffcheck.findings renders them)."""

from __future__ import annotations

import bisect

import torch

from diffcheck.buffers import POISON, Buffer, Staged
from diffcheck.findings import EXAMPLES, Example, Finding, FoundBy
from diffcheck.status import Status


class RegionLocator:
    """Turns a flat output index into "request 3, column 2047" using the intended regions
    (each output row's [start, end) in the flat output; starts ascending)."""

    def __init__(self, starts: torch.Tensor, ends: torch.Tensor, row_label: str,
                 columns: bool = True) -> None:
        self.starts, self.ends = starts.cpu().tolist(), ends.cpu().tolist()
        self.label, self.columns = row_label, columns

    def __call__(self, index: int) -> str:
        row = bisect.bisect_right(self.starts, index) - 1
        if 0 <= row < len(self.starts) and index < self.ends[row]:
            if not self.columns:
                return f"{self.label} {row}"
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


def element_label(buf: Buffer, offset: int) -> str:
    """``kv_indices[17]``, or ``token_indices[3, 17]`` for a 2-D buffer (its whole width)."""
    if len(buf.shape) == 2 and buf.shape[1] > 0:
        return f"{buf.name}[{offset // buf.shape[1]}, {offset % buf.shape[1]}]"
    return f"{buf.name}[{offset}]"


def writes_outside_out(staged: Staged, when: str = "") -> list[Finding]:
    """Writes since staging anywhere but the output workspace: into a margin (out-of-bounds
    write) or into an input buffer (input write: inputs are read-only).

    One comparison over the whole allocation and one host synchronisation when nothing
    changed (on a CPU, two comparisons and no mask); only a changed buffer is looked at
    closely. The staged values are put back, so
    the next call (a replay step, a rerun, the eager call after a replay) is judged on its own
    writes and sees the inputs it should.
    """
    start, end = staged.out_span()
    arena, expected = staged.arena, staged.expected
    if arena.device.type == "cpu" and torch.equal(arena[:start], expected[:start]) and \
            torch.equal(arena[end:], expected[end:]):
        return []  # the usual answer on a CPU, without a mask of the whole allocation
    changed = arena != expected
    changed[start:end] = False
    if not bool(changed.any()):
        return []
    parts = []
    for i, buf in enumerate(staged.all()):
        base, span, m = staged.layout.starts[i], buf.span, buf.margin
        parts.append((buf, base, changed[base : base + m], changed[base + m : base + m + span],
                      changed[base + m + span : base + 2 * m + span]))
    counts = torch.stack([torch.stack([a.sum(), b.sum(), c.sum()])
                          for _, _, a, b, c in parts]).tolist()
    findings = []
    for (buf, base, before, inside, after), (n_before, n_inside, n_after) in zip(
            parts, counts, strict=True):
        now, was = staged.arena[base : base + 2 * buf.margin + buf.span], \
            staged.expected[base : base + 2 * buf.margin + buf.span]
        if n_before or n_after:
            hits = torch.cat([torch.nonzero(before).flatten(),
                              torch.nonzero(after).flatten() + buf.margin + buf.span])
            examples = []
            for i in hits[:EXAMPLES].tolist():
                offset = i - buf.margin
                examples.append(Example(buf.name, offset,
                                        out_of_bounds_label(buf.name, offset, buf.span),
                                        int(was[i]), int(now[i])))
            first = examples[0]
            findings.append(Finding(Status.OOB_WRITE, buf.name, n_before + n_after,
                                    first.offset, first.location, first.expected, first.actual,
                                    found_by=FoundBy.REDZONE_WRITE, examples=tuple(examples),
                                    when=when))
        if n_inside:
            hits = torch.nonzero(inside).flatten()[:EXAMPLES].tolist()
            examples = tuple(Example(buf.name, i, element_label(buf, i),
                                     int(was[buf.margin + i]), int(now[buf.margin + i]))
                             for i in hits)
            first = examples[0]
            findings.append(Finding(Status.INPUT_WRITE, buf.name, n_inside, first.offset,
                                    first.location, first.expected, first.actual,
                                    found_by=FoundBy.STAGED_COPY, examples=examples, when=when))
    staged.restore()
    # the output's own margins first: the usual culprit
    findings.sort(key=lambda f: (f.kind != Status.OOB_WRITE, f.buffer != "out"))
    return findings


def compare_output(
    out: torch.Tensor,
    expected: torch.Tensor,
    mask: torch.Tensor,
    locate: RegionLocator,
    well_formed: bool,
    when: str = "",
    buffer: str = "out",
) -> tuple[int, list[Finding]]:
    """Compare every region element exactly; anything changed outside the regions is found.
    Returns the number of region elements checked and the findings."""
    out = out.reshape(-1)
    findings = []
    differs = (out != expected) & mask
    stray = (out != POISON) & ~mask
    # One host synchronisation for the counts; positions only where something differs.
    checked, n_differs, n_stray = torch.stack([mask.sum(), differs.sum(), stray.sum()]).tolist()
    if n_differs:
        count, hits = _found(differs)
        kind = Status.MISMATCH if well_formed else Status.STALE_SENSITIVE
        examples = tuple(Example(buffer, i, locate(i), int(expected[i]), int(out[i]))
                         for i in hits)
        first = hits[0]
        findings.append(Finding(kind, buffer, count, first, locate(first),
                                int(expected[first]), int(out[first]), examples=examples,
                                when=when))
    if n_stray:
        count, hits = _found(stray)
        examples = tuple(Example(buffer, i, locate(i), POISON, int(out[i])) for i in hits)
        first = hits[0]
        findings.append(Finding(Status.STRAY_WRITE, buffer, count, first, locate(first),
                                POISON, int(out[first]), examples=examples, when=when))
    return int(checked), findings


def diverged(replayed: torch.Tensor, eager: torch.Tensor, locate: RegionLocator,
             sources: dict[str, torch.Tensor | None] | None = None,
             otherwise: str = "") -> Finding | None:
    """The replayed output differs from an eager call on the same inputs.

    ``sources`` are earlier outputs the graph may have kept (what it computed when captured,
    the previous replay's): the first that holds the replayed values on every differing
    element is named as where the replay's state likely came from; else ``otherwise``.
    """
    replayed, eager = replayed.reshape(-1), eager.reshape(-1)
    differs = replayed != eager
    count, hits = _found(differs)
    if not count:
        return None
    examples = tuple(Example("out", i, locate(i), int(eager[i]), int(replayed[i])) for i in hits)
    first = examples[0]
    likely = otherwise
    for label, earlier in (sources or {}).items():
        earlier = earlier.reshape(-1) if earlier is not None else None
        if earlier is not None and earlier.numel() == replayed.numel() and \
                bool((earlier[differs] == replayed[differs]).all()):
            likely = f"the replay wrote {label}: state frozen into the graph"
            break
    where = f"{first.location}; {likely}" if likely else first.location
    return Finding(Status.DIVERGENCE, "out", count, first.offset, where,
                   first.expected, first.actual, examples=examples)


def nondeterministic(first: torch.Tensor, again: torch.Tensor, locate: RegionLocator,
                     when: str, found_by: FoundBy = FoundBy.RERUNS) -> Finding | None:
    """Two runs on identical inputs (same red zones) whose outputs differ; or, found by
    ``second-look``, one output that changed after its call returned."""
    first, again = first.reshape(-1), again.reshape(-1)
    count, hits = _found(first != again)
    if not count:
        return None
    examples = tuple(Example("out", i, locate(i), int(first[i]), int(again[i])) for i in hits)
    head = examples[0]
    return Finding(Status.NONDETERMINISTIC, "out", count, head.offset, head.location,
                   head.expected, head.actual, found_by=found_by, examples=examples, when=when)
