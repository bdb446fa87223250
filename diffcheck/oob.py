"""Out-of-bounds reads and writes: from the interpreter sandbox and from red-zone fillings."""

from __future__ import annotations

import weakref

import torch

from diffcheck import tags
from diffcheck.buffers import Buffer, Staged
from diffcheck.compare import RegionLocator, out_of_bounds_label
from diffcheck.findings import EXAMPLES, Example, Finding, FoundBy
from diffcheck.sandbox import Access, Extent
from diffcheck.status import Status

#: element distance beyond which an out-of-bounds address is reported as wild
WILD = 1 << 20


def extents(staged: Staged) -> list[Extent]:
    """The bytes each staged tensor may touch: its whole buffer, margins excluded; every
    buffer but the output is read-only."""
    return [Extent(buf.name, buf.alloc.data_ptr() + buf.margin * buf.alloc.element_size(),
                   buf.span * buf.alloc.element_size(), buf.alloc.element_size(),
                   read_only=buf is not staged.out, owner=weakref.ref(buf.alloc),
                   judged=buf is staged.out)
            for buf in staged.all()]


def _at(access: Access) -> str:
    """Where in the kernel's source, when the checker knows it (instrumented kernels)."""
    return f" ({access.where})" if access.where else ""


def from_sandbox(accesses: list[Access]) -> list[Finding]:
    """One finding per kind (read, write): total lanes, the first access as its location
    (from the interpreter sandbox or the instrumented kernel's own checks)."""
    findings = []
    stores = [a for a in accesses if a.kind == "input-write"]
    if stores:
        first = stores[0]
        examples = tuple(Example(a.buffer, a.offset, f"{a.buffer}[{a.offset}], a Triton store "
                                 f"into an input, program {a.program[0]}, {a.lanes} lanes{_at(a)}")
                         for a in stores[:EXAMPLES])
        findings.append(Finding(Status.INPUT_WRITE, first.buffer, sum(a.lanes for a in stores),
                                first.offset, f"a Triton store into {first.buffer}"
                                f"[{first.offset}], program {first.program[0]}{_at(first)}",
                                found_by=first.found_by, examples=examples))
    races = [a for a in accesses if a.kind == "race"]
    if races:
        first = races[0]
        examples = tuple(Example(a.buffer, a.offset, f"{a.buffer}[{a.offset}], {a.where}, "
                                 f"{a.lanes} elements") for a in races[:EXAMPLES])
        findings.append(Finding(Status.NONDETERMINISTIC, first.buffer,
                                sum(a.lanes for a in races), first.offset,
                                f"{first.buffer}[{first.offset}], changed by both "
                                f"{first.where} of one launch",
                                found_by=first.found_by, examples=examples))
    for kind, status in (("read", Status.OOB_READ), ("write", Status.OOB_WRITE)):
        of_kind = [a for a in accesses if a.kind == kind]
        if not of_kind:
            continue
        first = of_kind[0]
        label = out_of_bounds_label(first.buffer, first.offset, first.size)
        if not -WILD < first.offset < first.size + WILD:
            # Far from every tensor: the sandbox names the nearest one, not the pointer's base.
            label += ", a wild address; nearest tensor named"
        examples = tuple(
            Example(a.buffer, a.offset, f"{out_of_bounds_label(a.buffer, a.offset, a.size)}, "
                    f"program {a.program[0]}, {a.lanes} lanes{_at(a)}")
            for a in of_kind[:EXAMPLES])
        findings.append(Finding(status, first.buffer, sum(a.lanes for a in of_kind), first.offset,
                                f"{label}, program {first.program[0]}{_at(first)}",
                                found_by=first.found_by,
                                examples=examples))
    return findings


def tag_label(buffers: list[Buffer], buffer_id: int, offset: int) -> str:
    """Where a tag read from the red zone of ``buffers[buffer_id]`` at ``offset`` came from.

    Buffers sit margin to margin in one allocation, so a tag in a margin that touches a
    neighbour's margin may also be a read far past (or before) that neighbour; both
    candidates are named, the nearer first, so the label is never wrong.
    """
    buf = buffers[buffer_id]
    label = out_of_bounds_label(buf.name, offset, buf.span)
    if offset < 0 and buffer_id > 0:
        other = buffers[buffer_id - 1]
        far = other.span + other.margin + buf.margin + offset
    elif offset >= buf.span and buffer_id + 1 < len(buffers):
        other = buffers[buffer_id + 1]
        far = offset - buf.span - buf.margin - other.margin
    else:
        return label
    return f"{label}, or {out_of_bounds_label(other.name, far, other.span)} (a far read)"


def _margin_tags(values: torch.Tensor, buffers: list[Buffer]) -> torch.Tensor:
    """Which values are tags that a margin actually held: a known buffer id and an offset
    inside that buffer's margin. Anything else that merely looks like a tag (uninitialised
    memory of a kernel's own allocation, say) names no read."""
    ids, offsets = tags.decode_tensor(values)
    ok = torch.zeros_like(values, dtype=torch.bool)
    for i, buf in enumerate(buffers[: tags.MAX_BUFFERS]):
        before = (offsets < 0) & (offsets >= -buf.margin)
        after = (offsets >= buf.span) & (offsets < buf.span + buf.margin)
        ok |= (ids == i) & (before | after)
    return tags.is_tag(values) & ok


def from_fillings(
    a: torch.Tensor, b: torch.Tensor, buffers: list[Buffer], locate: RegionLocator,
    trust_tags: bool = True,
) -> tuple[Finding | None, bool]:
    """Compare the outputs ``a`` (constant filling) and ``b`` (tag filling) of one call.

    ``buffers`` are the staged buffers in tag-id order. Returns the read they show (None when
    they agree) and whether tags explain every difference.

    Inputs inside the tensors are identical, so a difference came from a read outside them,
    or from a kernel that is not deterministic (the caller tells which). A tag in the tagged
    output names the read exactly; otherwise the difference is reported at the first output
    element it reached. An output the kernel allocated itself (``trust_tags`` False) may hold
    old red zones where it was never written, so there a tag names nothing.
    """
    a, b = a.reshape(-1), b.reshape(-1)
    differs = a != b
    if not bool(differs.any()):
        return None, True
    hits = torch.nonzero(differs).flatten()
    first = int(hits[0])
    tagged = _margin_tags(b[hits], buffers)
    if not trust_tags:
        tagged = torch.zeros_like(tagged)
    examples = []
    for at in hits[tagged][:EXAMPLES].tolist():
        buffer_id, offset = tags.decode(int(b[at]))
        label = tag_label(buffers, buffer_id, offset)
        examples.append(Example(buffers[buffer_id].name, offset,
                                f"{label}, reached out at {locate(at)}",
                                int(a[at]), int(b[at])))
    explained = bool(tagged.all())
    if examples:
        first_tag = examples[0]
        return Finding(Status.OOB_READ, first_tag.buffer, int(hits.numel()), first_tag.offset,
                       first_tag.location, found_by=FoundBy.REDZONE_TAG,
                       examples=tuple(examples)), explained
    examples = [Example("out", at, f"output depends on red-zone contents at {locate(at)}",
                        int(a[at]), int(b[at])) for at in hits[:EXAMPLES].tolist()]
    return Finding(Status.OOB_READ, "?", int(hits.numel()), first,
                   f"output depends on red-zone contents, first at {locate(first)}",
                   found_by=FoundBy.REDZONE_DIFF, examples=tuple(examples)), False
