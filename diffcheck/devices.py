"""Every GPU of the host: which devices a run spreads its worker processes over (``--devices``),
and how a worker is pinned to one.

A worker is pinned before it touches CUDA, through ``CUDA_VISIBLE_DEVICES``: it then sees its
GPU alone, as ``cuda:0``, so every tensor it makes and every kernel it launches land there
whatever the kernel's launcher assumes about the current device. Device numbers are those this
process sees (under its own ``CUDA_VISIBLE_DEVICES``, device 1 is the second GPU listed
there). On the CPU, ``--devices N`` starts N workers that stand for devices (the dealing and
merging are the same; tests use them).
"""

from __future__ import annotations

import os

import torch

from diffcheck.errors import UsageError

#: the variable a GPU process is pinned through (ROCm's torch honours it too)
VISIBLE = "CUDA_VISIBLE_DEVICES"


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _available(device: torch.device) -> int:
    """How many devices a run on ``device`` may spread over: the GPUs this process sees, or
    the CPU's cores (workers standing for devices)."""
    return cpu_cores() if device.type == "cpu" else torch.cuda.device_count()


def parse_devices(text: str | None, device: torch.device) -> tuple[str, ...]:
    """``--devices``: ``all``, ``N`` (the first N) or a list such as ``0,2,5``; () when not
    given (one device, as before). The numbers are checked against the devices there are."""
    if text is None or not text.strip():
        return ()
    count = _available(device)
    word = text.strip()
    if word == "all":
        return tuple(str(i) for i in range(count))
    if word.isdigit() and "," not in word and int(word) > 0 and not word.startswith("0"):
        wanted = int(word)
        if wanted > count:
            raise UsageError(f"--devices {wanted}: only {count} "
                             f"{'GPUs are' if device.type != 'cpu' else 'cores are'} visible")
        return tuple(str(i) for i in range(wanted))
    chosen: list[str] = []
    for part in word.split(","):
        part = part.strip()
        if not part.isdigit():
            raise UsageError(f"--devices takes all, a count or a list such as 0,2,5; got "
                             f"{text!r}")
        if int(part) >= count:
            raise UsageError(f"--devices: device {part} is not there ({count} visible: 0 to "
                             f"{count - 1})")
        if str(int(part)) in chosen:
            raise UsageError(f"--devices: device {part} is listed twice")
        chosen.append(str(int(part)))
    return tuple(chosen)


def pinned_environment(environment: dict[str, str], device: torch.device,
                       slot: str) -> dict[str, str]:
    """``environment`` for a worker that sees only device ``slot`` (as this process numbers
    its devices): on a GPU the variable lists the physical device this process knows as
    ``slot``; on the CPU nothing changes."""
    if device.type == "cpu":
        return environment
    listed = [p.strip() for p in environment.get(VISIBLE, "").split(",") if p.strip()]
    physical = listed[int(slot)] if VISIBLE in environment and int(slot) < len(listed) else slot
    return {**environment, VISIBLE: physical}

