"""`diffcheck fuzz --devices`: one search per device, side by side.

Each search is a `diffcheck fuzz` process of its own, pinned to its device before it touches
CUDA (diffcheck.devices), with seed ``--seed + i`` for the i-th device listed, and the same
regression folder: every file there is written whole or not at all (casefile._write), and each
search keeps its provisional shrinking file under a name of its own. Their lines reach this
process's output prefixed with their device; their progress comes as data (a small JSON file
each rewrites, named by DIFFCHECK_FUZZ_PROGRESS), summed here into one line. The first search
that finds a failure stops the others (they end as interrupted, keeping what they shrank so
far), unless ``--keep-going``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from diffcheck.errors import ExitCode

#: the variable naming the file a search writes its progress to (see write_progress)
PROGRESS_FILE = "DIFFCHECK_FUZZ_PROGRESS"
#: the variable naming the device a search was pinned to (its shrinking file's name)
PINNED = "DIFFCHECK_PINNED"
#: seconds between summed progress lines
SUMMED_EVERY = 5.0


def write_progress(checks: int, elapsed: float, shrinking: bool) -> None:
    """A search's progress as data, for the process that started it (when one did)."""
    target = os.environ.get(PROGRESS_FILE)
    if not target:
        return
    partial = f"{target}.part"
    with open(partial, "w") as f:
        json.dump({"checks": checks, "elapsed": elapsed, "shrinking": shrinking}, f)
    os.replace(partial, target)


def pinned_slot() -> str:
    """The device this search was pinned to by fuzz --devices, or ""."""
    return os.environ.get(PINNED, "")


def _arguments(options, seed: int) -> list[str]:
    """The fuzz command line for one search: every option as given, the seed its own."""
    words = []
    for field in fields(options):
        value = seed if field.name == "seed" else getattr(options, field.name)
        flag = "--" + field.name.replace("_", "-")
        if field.name in ("devices", "keep_going") or value is None:
            continue
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        else:
            words += [flag, str(value)]
    return words


def _forward(stream, prefix: str, to: Callable[[str], None]) -> None:
    for line in stream:
        to(f"{prefix}{line.rstrip()}")


def run_on_devices(options, slots: tuple[str, ...], device, say: Callable[[str], None],
                   show: Callable[[str], None]) -> ExitCode:
    """One search per device of ``slots``; the exit code is the worst that matters: a failure
    found (1), else a search's own error (3, 4), else interrupted (2), else 0."""
    from diffcheck.devices import pinned_environment

    folder = Path(tempfile.mkdtemp(prefix="diffcheck-fuzz-"))
    searches: list[tuple[str, subprocess.Popen, list[threading.Thread]]] = []
    say(f"fuzz: {len(slots)} searches, one per device ({','.join(slots)}), seeds "
        f"{options.seed} to {options.seed + len(slots) - 1}")
    for i, slot in enumerate(slots):
        env = {**pinned_environment(dict(os.environ), device, slot),
               PROGRESS_FILE: str(folder / f"{slot}.json"), PINNED: slot}
        child = subprocess.Popen([sys.executable, "-m", "diffcheck", "fuzz",
                                  *_arguments(options, options.seed + i)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        prefix = f"[device {slot}] "
        threads = [threading.Thread(target=_forward, args=(child.stdout, prefix, show)),
                   threading.Thread(target=_forward, args=(child.stderr, prefix, say))]
        for thread in threads:
            thread.start()
        searches.append((slot, child, threads))
    codes: dict[str, int] = {}
    stopping = False
    shown = time.perf_counter()
    try:
        while len(codes) < len(searches):
            for slot, child, _ in searches:
                if slot not in codes and child.poll() is not None:
                    codes[slot] = child.returncode
                    if child.returncode == ExitCode.FAILURES and not options.keep_going \
                            and not stopping:
                        stopping = True
                        say(f"fuzz: device {slot} found a failure; stopping the other searches")
                        _interrupt(s for s in searches if s[0] not in codes)
            if time.perf_counter() - shown >= SUMMED_EVERY and len(codes) < len(searches):
                shown = time.perf_counter()
                say(_summed(folder, slots))
            time.sleep(0.2)
    except KeyboardInterrupt:
        _interrupt(s for s in searches if s[0] not in codes)
        for slot, child, _ in searches:
            codes.setdefault(slot, child.wait())
    for _, _, threads in searches:
        for thread in threads:
            thread.join()
    shutil.rmtree(folder, ignore_errors=True)
    return _worst(list(codes.values()), stopped=stopping)


def _interrupt(searches) -> None:
    """Ctrl-C for each search still running: it ends as interrupted, keeping what it has."""
    for _, child, _ in searches:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)


def _summed(folder: Path, slots: tuple[str, ...]) -> str:
    """One line of every search's progress together."""
    checks, rates = 0, 0.0
    for slot in slots:
        try:
            seen = json.loads((folder / f"{slot}.json").read_text())
        except (OSError, ValueError):
            continue
        checks += seen["checks"]
        rates += seen["checks"] / max(seen["elapsed"], 1e-9)
    return f"fuzz: {len(slots)} devices together: {checks:,} checks ({rates:,.1f} checks/s)"


def _worst(codes: list[int], stopped: bool) -> ExitCode:
    if ExitCode.FAILURES in codes:
        return ExitCode.FAILURES
    for code in (ExitCode.INTERNAL, ExitCode.USAGE):
        if code in codes:
            return ExitCode(code)
    if any(c != 0 for c in codes) and not stopped:
        return ExitCode.INTERRUPTED
    return ExitCode.OK
