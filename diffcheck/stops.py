"""SIGTERM and Ctrl-C stop a run alike, and neither is lost where Python ignores exceptions.

A CI job cancelled or a scheduler's time limit sends SIGTERM: diffcheck keeps every finished
row, marks every report incomplete, saves a fuzz finding and exits 2, as for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

#: the stop the handlers below raised last, and how many they raised: only that one is sent
#: again when swallowed (a kernel's own KeyboardInterrupt in a ``__del__`` is not a stop);
#: ``closing``: the run has ended and its exit status is set (see closing)
_STOPS: dict[str, object] = {"raised": None, "count": 0, "closing": False}


def _stop(signum, frame) -> None:
    """SIGTERM (a CI job cancelled, a scheduler's limit) and Ctrl-C stop a run alike."""
    stop = KeyboardInterrupt("terminated (SIGTERM)") if signum == signal.SIGTERM else \
        KeyboardInterrupt()
    _STOPS["raised"], _STOPS["count"] = stop, _STOPS["count"] + 1
    raise stop


def _stop_again(previous: Callable) -> Callable:
    """An unraisable-exception hook that does not lose a stop. Ctrl-C or SIGTERM raised
    where Python ignores exceptions (a garbage-collector callback, a ``__del__``) would be
    printed and forgotten, and the run would go on to exit 1 or 0; the signal is sent again
    from a moment later, when it lands where it stops the run (unless another stop came
    meanwhile)."""

    def hook(unraisable) -> None:
        stop = unraisable.exc_value
        if stop is None or stop is not _STOPS["raised"]:
            previous(unraisable)
            return
        signum = signal.SIGTERM if "SIGTERM" in str(stop) else signal.SIGINT
        count = _STOPS["count"]

        def again() -> None:
            if _STOPS["count"] == count and not _STOPS["closing"]:  # no stop landed since
                os.kill(os.getpid(), signum)

        timer = threading.Timer(0.01, again)
        timer.daemon = True
        timer.start()
    return hook


@contextlib.contextmanager
def deferred_stops() -> Iterator[None]:
    """Inside, Ctrl-C and SIGTERM wait: what must be whole when the run stops (a finding
    saved under its final name, its provisional file removed) is finished first, then the
    stop is raised. Outside the main thread (where handlers cannot be set) nothing waits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    before = {sig: signal.signal(sig, lambda signum, frame: came.append(signum))
              for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        if came:  # the stop, now (over an error the body raised): the handler put back raises
            os.kill(os.getpid(), came[0])


def install_stop_handlers() -> None:
    """SIGTERM stops a run as Ctrl-C does, and neither is lost where exceptions are ignored."""
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sys.unraisablehook = _stop_again(sys.unraisablehook)


def closing(status: int) -> int:
    """The run has ended with exit ``status``: the status to exit with. A stop raised during
    the run makes a 0 a 2 (one swallowed where Python ignores exceptions must not end as a
    pass). From now on a stop is not sent again: SIGTERM is ignored (Python puts the default
    handler back for its last steps, and a SIGTERM landing there would kill the process
    instead of its status), and Ctrl-C leaves at once with the status (what is left, joining
    processes, may hang)."""
    final = 2 if status == 0 and _STOPS["raised"] is not None else status
    _STOPS["closing"] = True

    def leave(signum, frame) -> None:
        os._exit(final)

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, leave)
    return final
