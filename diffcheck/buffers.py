"""Staging a case on the device: every tensor a view into one larger allocation.

Each buffer sits between two margins filled with MARGIN_VALUE, and the output workspace is
poisoned with POISON before a call, so unwritten region elements, writes outside the regions
and writes past the workspace are all visible afterwards. The margin of a buffer is at least
one full row of the widest top-k buffer (up to 2^20 elements), so off-by-a-row and
off-by-a-tile reads stay inside it.

Everything staged but the output is also kept as staged (``Staged.expected``): after every call
one comparison over the allocation finds writes into the margins (out-of-bounds writes) and
into the inputs (kernels must treat their inputs as read-only).

Fillings of the margins: ``constant`` (MARGIN_VALUE everywhere) and ``tags`` (each element
names its buffer and offset, see diffcheck.tags); running a case under both finds out-of-bounds
reads whose values reach the output. A kernel that validates what it reads (a request id below
R, a position inside the context) turns both into its fill, so two *plausible* fillings exist
too (``plausible-a``, ``plausible-b``): small values of the buffer's role that pass such checks
and differ between the two, so a read past a per-token or per-request buffer changes what the
kernel writes. ``Filling("plausible-a", {"kv_indptr.after", "out"})`` is filling A with those
margins (a buffer name alone: both of its margins) filled as in B; the runner uses such probes
to name the margin read.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from diffcheck import tags

#: what the output workspace holds before a call (never a slot, never a fill value)
POISON = -0x2A2A2A2B
#: what the margins around every buffer hold (no real slot reaches 2^30)
MARGIN_VALUE = 0x5EADBEEF
MIN_MARGIN = 1024
#: the widest margin: a top-k buffer whose rows start past 2^31 elements is gigabytes wide,
#: and a margin that wide around every buffer took a GPU host's memory (the worker was
#: killed); reads further out are the instrumented kernels' and the sandbox's to see
MAX_MARGIN = 1 << 20


@dataclass
class Buffer:
    """One allocation: ``margin`` elements, the tensor's own span, ``margin`` elements."""

    name: str
    alloc: torch.Tensor
    margin: int
    span: int
    view: torch.Tensor
    #: the margins as staged (before, then after), to find writes into them; shared between
    #: stagings, so never written
    pristine: torch.Tensor | None = None
    #: the whole buffer's shape (a strided view's is wider than the view)
    shape: tuple[int, ...] = ()

    def before(self) -> torch.Tensor:
        return self.alloc[: self.margin]

    def after(self) -> torch.Tensor:
        return self.alloc[self.margin + self.span :]


def _meta(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor of ``tensor``'s shape, strides and dtype that holds no memory; one per layout,
    kept (holding nothing, it is never written, and every staging of a case's shape releases
    into the same ones: each made anew was a torch call on the host of every check)."""
    key = (tuple(tensor.shape), tensor.stride(), tensor.dtype)
    made = _METAS.get(key)
    if made is None:
        if len(_METAS) >= _METAS_KEPT:
            _METAS.pop(next(iter(_METAS)))
        made = _METAS[key] = torch.empty_strided(tensor.shape, tensor.stride(),
                                                 dtype=tensor.dtype, device="meta")
    return made


_METAS: dict[tuple, torch.Tensor] = {}
_METAS_KEPT = 512


@dataclass
class Staged:
    """The views handed to an implementation, and the allocation that holds them."""

    buffers: dict[str, Buffer]
    out: Buffer
    arena: torch.Tensor
    layout: ArenaLayout
    #: the allocation as staged (inputs and margins; a replay step's load updates it)
    expected: torch.Tensor
    #: the step whose output copy the output buffer should still equal (diffcheck.modes)
    watched: object = None
    #: extra outputs the last call returned (valid counts), by name
    extras: dict = field(default_factory=dict)
    #: the kernel returns its output (copied in), instead of writing the staged workspace:
    #: outside the regions it holds whatever the kernel's own allocation held
    returned: bool = False
    #: the tensor the last call returned (when ``returned``): a writer still running after
    #: the call writes there, not into the staged copy, so the second look copies it again
    returned_tensor: torch.Tensor | None = None

    def all(self) -> list[Buffer]:
        return [*self.buffers.values(), self.out]

    def release(self, arena: bool = True) -> None:
        """Let the allocation go once its run is over: the judge reads only the buffers'
        layout (names, margins, spans, shapes), and a case of gigabytes must not stay staged
        once per filling. The tensors become meta tensors of the same shapes: reading data
        from them afterwards raises instead of reading freed memory. ``arena`` False lets
        only the kept copy go (see runner.execute: why the arena lives one run longer)."""
        self.expected = _meta(self.expected)
        if arena:
            self.arena = _meta(self.arena)
            for buf in self.all():
                buf.alloc, buf.view = _meta(buf.alloc), _meta(buf.view)

    def names(self) -> list[str]:
        """Buffer names by tag id."""
        return [buf.name for buf in self.all()]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: buf.view for name, buf in self.buffers.items()}

    def poison_out(self) -> None:
        quietly(self.out.view).fill_(POISON)

    def margins_now(self) -> torch.Tensor:
        """Every buffer's margins as they are, one row per buffer of ``all()`` (before, after)."""
        return self.arena[self.layout.margin_index].view(len(self.layout.spans), -1)

    def margins_staged(self) -> torch.Tensor:
        """What ``margins_now`` held when staged."""
        return self.layout.margins

    def load(self, inputs: dict[str, torch.Tensor]) -> None:
        """Copy a replay step's whole buffers into the static ones (same shapes required)."""
        for name, source in inputs.items():
            buf = self.buffers[name]
            if source.numel() != buf.span:
                raise ValueError(f"replay step's {name} has {source.numel()} elements, the "
                                 f"captured buffer {buf.span}; steps of one graph size need "
                                 "the graph's shapes")
            quietly(buf.alloc[buf.margin : buf.margin + buf.span]).copy_(source.reshape(-1))
            start = self.layout.starts[self.names().index(name)] + buf.margin
            self.expected[start : start + buf.span].copy_(source.reshape(-1))

    def out_span(self) -> tuple[int, int]:
        """Where the output workspace itself lies in the allocation: [start, end)."""
        start = self.layout.starts[-1] + self.out.margin
        return start, start + self.out.span

    def restore(self) -> None:
        """Put the staged inputs and margins back (the output is left as it is)."""
        start, end = self.out_span()
        quietly(self.arena[:start]).copy_(self.expected[:start])
        quietly(self.arena[end:]).copy_(self.expected[end:])


def quietly(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` to write into without bumping torch's version counter (``_version``, which
    every view of an arena shares): diffcheck's own writes between calls (a replay step's
    metadata, the poisoned output, restored inputs) reach the kernel's buffers as an engine's
    own kernels or a graph replay write persistent metadata, unseen by the counter. A launcher
    that keeps what it derived from its inputs until their ``_version`` changes is then
    judged on the stale values it would use in serving."""
    return tensor.data


def _edges(name: str, role: str, tensors: list[torch.Tensor]) -> tuple[str, str, int, int]:
    """(name, role, first, last) for a plausible filling; first and last only where the
    role's margins follow them (one host read of two elements per tensor). ``tensors``: the
    buffer as staged, then what later replay steps load into it (the smallest first and the
    largest last, so a row past the end stays non-empty under B for every step)."""
    tensors = [t for t in tensors if t.numel()]
    if role not in EDGE_ROLES or not tensors:
        return name, role, 0, 0
    edges = [_first_and_last(t) for t in tensors]
    return name, role, int(min(e[0] for e in edges)), int(max(e[1] for e in edges))


def _first_and_last(tensor: torch.Tensor) -> tuple[int, int]:
    """A tensor's first and last element, read once per tensor and version (a case's upload
    stays on the device for all its checks; each read is a device sync)."""
    kept = _EDGES.get(id(tensor))
    if kept is not None and kept[0]() is tensor and kept[1] == tensor._version:
        return kept[2]
    flat = tensor.reshape(-1)
    first, last = torch.stack([flat[0], flat[-1]]).tolist()
    if len(_EDGES) >= _EDGES_KEPT:
        _EDGES.pop(next(iter(_EDGES)))
    _EDGES[id(tensor)] = (weakref.ref(tensor), tensor._version, (first, last))
    return first, last


#: id -> (the tensor, weakly; its version; its first and last element)
_EDGES: dict[int, tuple] = {}
_EDGES_KEPT = 256


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def margin_for(tensors: dict[str, torch.Tensor]) -> int:
    """One row of the widest top-k buffer, within [MIN_MARGIN, MAX_MARGIN]."""
    widest = max((t.shape[-1] for t in tensors.values() if t.dim() == 2), default=0)
    return max(MIN_MARGIN, min(widest, MAX_MARGIN))


FILLINGS = ("constant", "tags", "plausible-a", "plausible-b")


@dataclass(frozen=True)
class Filling:
    """What a staging's margins hold: one of FILLINGS, and for ``plausible-a`` the margins
    filled as in B instead (the probes that name which margin a kernel read). Its text (in
    labels and details) is ``plausible-a:kv_indptr.after,out``."""

    base: str = "constant"
    #: margins filled as in B: a buffer's name (both margins) or ``name.before``/``name.after``
    flipped: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.base not in FILLINGS or (self.flipped and self.base != "plausible-a"):
            raise ValueError(f"unknown filling {self}; known: {', '.join(FILLINGS)}, or "
                             "plausible-a with margins flipped to B")

    @property
    def plausible(self) -> bool:
        return self.base.startswith("plausible")

    def with_b(self, margin: str) -> Filling:
        """This filling with one more margin (``name`` or ``name.side``) filled as in B."""
        return Filling(self.base, self.flipped | {margin})

    def __str__(self) -> str:
        return f"{self.base}:{','.join(sorted(self.flipped))}" if self.flipped else self.base


CONSTANT, TAGS, PLAUSIBLE_A, PLAUSIBLE_B = (Filling(name) for name in FILLINGS)
#: roles whose plausible margins follow the buffer's own first and last values (offsets,
#: lengths); every other role's margins hold small ids, positions or slots
EDGE_ROLES = ("indptr", "lengths", "counts")


def plausible_values(role: str, side: str, variant: str, first: int, last: int) -> int:
    """The value a margin holds under a plausible filling (``variant`` "a" or "b").

    A: what a valid neighbour would hold (id or position 0, slot or page 1; an indptr's own
    first or last offset, so rows past the end are empty). B: a different valid-looking value
    (id or position 1, slot or page 2; an indptr one offset further out, so the row just past
    the end has one entry). Slots are never 0 or -1, the contracts' fills, so a slot read
    through a margin always shows.
    """
    b = variant == "b"
    if role == "indptr":
        edge = first if side == "before" else last
        return edge + (0 if not b else (-1 if side == "before" else 1))
    if role in EDGE_ROLES:
        return (first if side == "before" else last) + int(b)
    if role in ("slots", "table"):
        return 1 + int(b)
    return int(b)


def _flipped(flips: frozenset[str], name: str, side: str) -> bool:
    return name in flips or f"{name}.{side}" in flips


@dataclass(frozen=True)
class ArenaLayout:
    """Where each buffer sits in a staging's single allocation, and its margins' contents.

    Built once per (device, filling, spans, margin) and shared: staging is on the hot path of
    every check, and none of this depends on the values staged.
    """

    margin: int
    spans: tuple[int, ...]
    #: first element of each buffer's allocation (its before-margin)
    starts: tuple[int, ...]
    #: [buffers, 2 * margin]: each buffer's margins (before, then after) as staged
    margins: torch.Tensor
    #: the allocation's elements that are margins, in ``margins`` order
    margin_index: torch.Tensor
    #: the pieces that, concatenated with the sources, make the allocation
    pieces: tuple[torch.Tensor, ...]
    poison: torch.Tensor


_ARENAS: dict[tuple, ArenaLayout] = {}
_ARENAS_KEPT = 32


def arena_layout(device: torch.device, filling: Filling, spans: tuple[int, ...],
                 margin: int, plausible: tuple[tuple[str, str, int, int], ...] = ()
                 ) -> ArenaLayout:
    """The (cached) layout of buffers with ``spans`` elements, the last one ``out``.

    ``plausible`` (plausible fillings only): each buffer's (name, role, first value, last
    value), in ``spans`` order.
    """
    base, flips = filling.base, filling.flipped
    key = (str(device), filling, spans, margin, plausible)
    found = _ARENAS.get(key)
    if found is not None:
        return found
    rows, starts, index, at = [], [], [], 0
    for buffer_id, span in enumerate(spans):
        if base == "tags":
            offsets = torch.cat([torch.arange(-margin, 0), torch.arange(span, span + margin)])
            rows.append(tags.encode_range(buffer_id, offsets))
        elif base.startswith("plausible"):
            name, role, first, last = plausible[buffer_id]
            sides = []
            for side in ("before", "after"):
                variant = "b" if base == "plausible-b" or _flipped(flips, name, side) else "a"
                sides.append(torch.full((margin,), plausible_values(role, side, variant, first,
                                                                    last), dtype=torch.int32))
            rows.append(torch.cat(sides))
        else:
            rows.append(torch.full((2 * margin,), MARGIN_VALUE, dtype=torch.int32))
        starts.append(at)
        index += [torch.arange(at, at + margin), torch.arange(at + margin + span,
                                                             at + 2 * margin + span)]
        at += 2 * margin + span
    margins = torch.stack(rows).to(device)
    pieces = tuple(piece for row in margins for piece in (row[:margin], row[margin:]))
    poison = torch.full((spans[-1],), POISON, dtype=torch.int32, device=device)
    layout = ArenaLayout(margin, spans, tuple(starts), margins, torch.cat(index).to(device),
                         pieces, poison)
    if len(_ARENAS) >= _ARENAS_KEPT:
        _ARENAS.pop(next(iter(_ARENAS)))
    _ARENAS[key] = layout
    return layout


def stage(
    inputs: dict[str, torch.Tensor],
    columns: dict[str, int],
    out_size: int,
    device: torch.device,
    filling: Filling = CONSTANT,
    order: tuple[str, ...] = (),
    roles: tuple[str, ...] = (),
    later: tuple[dict[str, torch.Tensor], ...] = (),
) -> Staged:
    """Stage whole input buffers, apply strided column views, add a poisoned workspace.

    All buffers share one allocation, each between its own margins, built by one
    concatenation. ``order`` fixes the buffer ids that tags carry (the path's tensor order);
    ``out`` comes last. ``roles`` (in ``order``) choose plausible fillings' values, with
    ``later`` (what replay steps will load) for the edges of offset buffers.
    """
    margin = margin_for(inputs)
    names = list(order) or list(inputs)
    sources = [inputs[n] for n in names]
    plausible: tuple = ()
    if filling.plausible:
        plausible = tuple(_edges(name, role, [inputs[name], *(step[name] for step in later
                                                              if name in step)])
                          for name, role in
                          zip(names, roles or ("",) * len(names), strict=True))
        plausible += (("out", "", 0, 0),)
    layout = arena_layout(device, filling, (*(t.numel() for t in sources), out_size), margin,
                          plausible)
    flat = [t.reshape(-1) if t.device == device and t.dtype == torch.int32
            else t.reshape(-1).to(device, torch.int32) for t in sources]
    pieces = []
    for i, source in enumerate((*flat, layout.poison)):
        pieces += [layout.pieces[2 * i], source, layout.pieces[2 * i + 1]]
    arena = torch.cat(pieces)
    buffers = []
    # every buffer's allocation in one call, each view straight from the arena: staging runs
    # on the host of every check, where each torch call is a dispatch
    allocs = arena.split([2 * margin + span for span in layout.spans])
    for i, name in enumerate((*names, "out")):
        span, start, alloc = layout.spans[i], layout.starts[i], allocs[i]
        shape = tuple(sources[i].shape) if i < len(sources) else (span,)
        view = arena.as_strided(shape, _contiguous_strides(shape), start + margin)
        if name in columns:
            view = view[:, : columns[name]]
        buffers.append(Buffer(name, alloc, margin, span, view, pristine=layout.margins[i],
                              shape=tuple(shape)))
    return Staged({b.name: b for b in buffers[:-1]}, buffers[-1], arena, layout, arena.clone())
