"""What the job in flight is at, told at once to whoever runs it: a worker process sends each
note to its parent over its pipe, so a job whose worker dies or runs out of time can still be
named by its last note (the device mutant that was replaying, under ``fuzz --fast``).

A leaf: the code that runs a job calls ``mutant``; the runtime that hosts the job listens.
"""

from __future__ import annotations

from collections.abc import Callable

_listener: Callable[[int], None] | None = None


def listen(listener: Callable[[int], None] | None) -> None:
    """Send every later note to ``listener`` (None: nobody listens)."""
    global _listener
    _listener = listener


def mutant(index: int) -> None:
    """Device mutant ``index`` of the job's case is about to run."""
    if _listener is not None:
        _listener(index)
