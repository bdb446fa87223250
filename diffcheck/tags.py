"""Red-zone tags: values that say which buffer and which element they were read from.

A tag is a positive int32 in [2^30, 2^31): bit 30 set, 3 bits of buffer id, 27 bits of signed
element offset (biased by 2^26). No real slot reaches 2^30 and a kernel that clamps negatives to
0 leaves a tag intact, so an output element holding a tag names the read exactly.
"""

from __future__ import annotations

import torch

TAG_BIT = 1 << 30
_OFFSET_BIAS = 1 << 26
_OFFSET_MASK = (1 << 27) - 1
MAX_BUFFERS = 8


def encode(buffer_id: int, offset: int) -> int:
    if not 0 <= buffer_id < MAX_BUFFERS:
        raise ValueError(f"buffer id {buffer_id} does not fit a tag (at most {MAX_BUFFERS})")
    return TAG_BIT | (buffer_id << 27) | ((offset + _OFFSET_BIAS) & _OFFSET_MASK)


def encode_range(buffer_id: int, offsets: torch.Tensor) -> torch.Tensor:
    """Tags for a run of element offsets of one buffer, as int32."""
    biased = (offsets.to(torch.int64) + _OFFSET_BIAS) & _OFFSET_MASK
    return (TAG_BIT | (buffer_id << 27) | biased).to(torch.int32)


def is_tag(values: torch.Tensor) -> torch.Tensor:
    return values >= TAG_BIT


def decode(value: int) -> tuple[int, int]:
    """(buffer id, signed element offset) of a tag."""
    return (value >> 27) & (MAX_BUFFERS - 1), (value & _OFFSET_MASK) - _OFFSET_BIAS


def decode_tensor(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(buffer ids, signed element offsets) of a tensor of would-be tags."""
    return (values >> 27) & (MAX_BUFFERS - 1), (values & _OFFSET_MASK) - _OFFSET_BIAS
