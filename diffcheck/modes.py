"""Execution modes: how one implementation call is issued on staged buffers.

Every mode shares one protocol (issue the call, synchronise, hand back what the call
returned); later modes (capture, replay) differ only in how the call reaches the device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from diffcheck import backend
from diffcheck.errors import UsageError


class Mode:
    """One way of running an implementation; subclasses override ``execute``."""

    name: ClassVar[str] = ""

    def execute(self, invoke: Callable[[], object], device: torch.device) -> object:
        raise NotImplementedError


class Eager(Mode):
    """One direct call."""

    name = "eager"

    def execute(self, invoke: Callable[[], object], device: torch.device) -> object:
        result = invoke()
        backend.synchronize(device)
        return result


MODES: dict[str, type[Mode]] = {"eager": Eager}
#: modes that the design names and a later issue adds
PLANNED = ("capture", "replay", "graph", "all")


def select(name: str) -> list[Mode]:
    """Modes for ``--mode``; ``graph`` and ``all`` will expand to several."""
    if name in MODES:
        return [MODES[name]()]
    if name in PLANNED:
        raise UsageError(f"--mode {name} is not available in this version yet; available: "
                         f"{', '.join(MODES)}")
    raise UsageError(f"unknown mode '{name}'; known: {', '.join((*MODES, *PLANNED))}")
