"""Staging a case on the device: every tensor a view into a larger allocation.

Each buffer sits between two margins filled with MARGIN_VALUE, and the output workspace is
poisoned with POISON before a call, so unwritten region elements, writes outside the regions
and writes past the workspace are all visible afterwards. The margin of a buffer is at least
one full row of the widest top-k buffer, so off-by-a-row and off-by-a-tile reads stay inside it.

Two fillings of the margins exist: ``constant`` (MARGIN_VALUE everywhere) and ``tags`` (each
element names its buffer and offset, see diffcheck.tags). Running a case under both finds
out-of-bounds reads whose values reach the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffcheck import tags

#: what the output workspace holds before a call (never a slot, never a fill value)
POISON = -0x2A2A2A2B
#: what the margins around every buffer hold (no real slot reaches 2^30)
MARGIN_VALUE = 0x5EADBEEF
MIN_MARGIN = 1024


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

    def before(self) -> torch.Tensor:
        return self.alloc[: self.margin]

    def after(self) -> torch.Tensor:
        return self.alloc[self.margin + self.span :]


@dataclass
class Staged:
    """The views handed to an implementation, and the allocations that hold them."""

    buffers: dict[str, Buffer]
    out: Buffer

    def all(self) -> list[Buffer]:
        return [*self.buffers.values(), self.out]

    def names(self) -> list[str]:
        """Buffer names by tag id."""
        return [buf.name for buf in self.all()]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: buf.view for name, buf in self.buffers.items()}

    def poison_out(self) -> None:
        self.out.view.fill_(POISON)

    def margins_now(self) -> torch.Tensor:
        """Every buffer's margins as they are, one row per buffer of ``all()`` (before, after)."""
        return torch.stack([torch.cat([b.before(), b.after()]) for b in self.all()])

    def margins_staged(self) -> torch.Tensor:
        """What ``margins_now`` held when staged."""
        return torch.stack([b.pristine for b in self.all()])

    def load(self, inputs: dict[str, torch.Tensor]) -> None:
        """Copy a replay step's whole buffers into the static ones (same shapes required)."""
        for name, source in inputs.items():
            buf = self.buffers[name]
            if source.numel() != buf.span:
                raise ValueError(f"replay step's {name} has {source.numel()} elements, the "
                                 f"captured buffer {buf.span}; steps of one graph size need "
                                 "the graph's shapes")
            buf.alloc[buf.margin : buf.margin + buf.span].copy_(source.reshape(-1))


def margin_for(tensors: dict[str, torch.Tensor]) -> int:
    widest = max((t.shape[-1] for t in tensors.values() if t.dim() == 2), default=0)
    return max(MIN_MARGIN, widest)


FILLINGS = ("constant", "tags")


#: margin contents by (device, filling, buffer id, span, margin): built once, never written
_MARGINS: dict[tuple, torch.Tensor] = {}
_MARGINS_KEPT = 64


def margins_for(device: torch.device, filling: str, buffer_id: int, span: int,
                margin: int) -> torch.Tensor:
    """The ``2 * margin`` values around a buffer (before, then after) under ``filling``.

    Cached: staging is on the hot path of every check, and the values depend only on the key.
    """
    if filling not in FILLINGS:
        raise ValueError(f"unknown filling {filling!r}; known: {', '.join(FILLINGS)}")
    key = (str(device), filling, buffer_id if filling == "tags" else 0,
           span if filling == "tags" else 0, margin)
    values = _MARGINS.get(key)
    if values is None:
        if filling == "tags":
            offsets = torch.cat([torch.arange(-margin, 0), torch.arange(span, span + margin)])
            values = tags.encode_range(buffer_id, offsets).to(device)
        else:
            values = torch.full((2 * margin,), MARGIN_VALUE, dtype=torch.int32, device=device)
        if len(_MARGINS) >= _MARGINS_KEPT:
            _MARGINS.pop(next(iter(_MARGINS)))
        _MARGINS[key] = values
    return values


def place(
    name: str, source: torch.Tensor, margin: int, device: torch.device,
    filling: str = "constant", buffer_id: int = 0,
) -> Buffer:
    """Copy ``source`` (whole, contiguous) into the middle of a margin-padded allocation."""
    span = source.numel()
    around = margins_for(device, filling, buffer_id, span, margin)
    alloc = torch.cat([around[:margin], source.reshape(-1).to(device), around[margin:]])
    view = alloc[margin : margin + span].view(source.shape)
    return Buffer(name, alloc, margin, span, view, pristine=around)


def stage(
    inputs: dict[str, torch.Tensor],
    columns: dict[str, int],
    out_size: int,
    device: torch.device,
    filling: str = "constant",
    order: tuple[str, ...] = (),
) -> Staged:
    """Stage whole input buffers, apply strided column views, add a poisoned workspace.

    ``order`` fixes the buffer ids that tags carry (the path's tensor order); ``out`` comes last.
    """
    margin = margin_for(inputs)
    names = list(order) or list(inputs)
    buffers = {}
    for buffer_id, name in enumerate(names):
        buf = place(name, inputs[name].contiguous(), margin, device, filling, buffer_id)
        if name in columns:
            buf.view = buf.view[:, : columns[name]]
        buffers[name] = buf
    out_source = torch.full((out_size,), POISON, dtype=torch.int32, device=device)
    out = place("out", out_source, margin, device, filling, len(names))
    return Staged(buffers, out)
