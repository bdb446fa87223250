"""What Triton's kernel wrappers decide during a call: launches, autotune configs, heuristics.

Engines' kernels are ``@triton.autotune``d and ``@triton.heuristics``-specialised. A bug that
lives in one config, or on one side of a heuristic, passes whatever the first call happened to
pick. So while diffcheck runs, every ``Autotuner`` and ``Heuristics`` a call reaches is seen:

- **Autotune.** A row runs once per config (``--configs``): every autotuner reached is pinned
  to its i-th config among those its ``prune_configs_by`` keeps for the call (its last when
  it has fewer). The autotuner still tunes as it would (its
  benchmark runs are part of the call and judged: writes into inputs, outputs left
  accumulated), then its pick is overridden by the pinned config. Triton's own benchmarker is
  replaced by one timed call (the pick is pinned, so timings do not matter; on the CPU there
  is no driver to time with); so is a ``do_bench`` the kernel brings (bounded time).
  Tuning happens on the first call of each key, which diffcheck makes eagerly before any
  capture, as engines do.
- **Heuristics.** The values each heuristic took are recorded per call, for the row and the
  run's summary (which values were reached, and which a boolean heuristic never took).
- **Launches.** Every launch (``JITFunction.run``, which ``kernel[grid](...)`` reaches) is
  counted: an implementation that raises before
  its first launch refused its input (diffcheck.status REFUSED on a malformed case).

The patches are installed once per process and cost a counter when nothing is tuned.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

#: --configs: every config (0), or the first N
ALL_CONFIGS = 0


@dataclass
class Choices:
    """What the calls of one job reached: autotuners (by id, in order) and heuristic values."""

    autotuners: dict[int, object] = field(default_factory=dict)
    #: (kernel, heuristic) -> the values it took, in the order first seen
    heuristics: dict[tuple[str, str], list] = field(default_factory=dict)
    #: (autotuner id, pinned index) -> the config it ran (pruned configs left out)
    used: dict[tuple[int, int], object] = field(default_factory=dict)

    def configs(self) -> int:
        """How many configs the most-tuned autotuner has (1 without autotuning); under the
        interpreter, configs that differ only in launch options (num_warps, num_stages, ...,
        which it ignores) count once."""
        return max((len(_distinct(t.configs)) for t in self.autotuners.values()), default=1)

    def config_text(self, index: int) -> str:
        """Which config each autotuner ran under when pinned to ``index``."""
        parts = []
        for key, t in self.autotuners.items():
            configs = _distinct(t.configs)
            config = self.used.get((key, index), configs[min(index, len(configs) - 1)])
            parts.append(f"{_name(t)}: {_config(config)}")
        return "; ".join(parts)

    def heuristics_taken(self) -> dict[str, tuple[str, ...]]:
        """``kernel.NAME`` -> the values each heuristic took in the calls, in order."""
        return {f"{kernel}.{name}": tuple(str(v) for v in values)
                for (kernel, name), values in self.heuristics.items()}

    def absorb(self, other: Choices) -> None:
        self.autotuners.update(other.autotuners)
        self.used.update(other.used)
        gather(self.heuristics, other.heuristics)


def gather(into: dict, taken: dict) -> None:
    """Add each heuristic's values in ``taken`` to ``into`` (name -> values), each value
    once, in the order first seen."""
    for key, values in taken.items():
        kept = into.setdefault(key, [])
        kept += [v for v in values if v not in kept]


class _Tracker:
    """Process-wide state behind the patches."""

    def __init__(self) -> None:
        self.launches = 0
        #: times an autotuner tuned (benchmarked its configs) for a new key
        self.tunings = 0
        self.pin: int | None = None
        self.choices = Choices()


TRACKER = _Tracker()
_installed = False


def _name(kernel: object) -> str:
    fn = kernel
    while hasattr(fn, "fn"):
        fn = fn.fn
    return getattr(fn, "__name__", type(kernel).__name__)


def _config(config: object) -> str:
    """``BLOCK_N=128, num_warps=4, num_stages=2``: the config's constants, then its launch
    options that are set."""
    parts = [f"{k}={v}" for k, v in getattr(config, "kwargs", {}).items()]
    for option in ("num_warps", "num_stages", "num_ctas", "maxnreg"):
        value = getattr(config, option, None)
        if value is not None and not (option == "num_ctas" and value == 1):
            parts.append(f"{option}={value}")
    return ", ".join(parts)


def _interpreted() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _distinct(configs: list) -> list:
    """The configs that can behave differently here: all of them on a GPU; under the
    interpreter, one per set of constants (it ignores every launch option)."""
    if not _interpreted():
        return list(configs)
    kept: dict[str, object] = {}
    for config in configs:
        kept.setdefault(repr(sorted(getattr(config, "kwargs", {}).items())), config)
    return list(kept.values())


def _pick(tuner, args: tuple, kwargs: dict, index: int):
    """The ``index``-th config among those the autotuner would consider for these arguments
    (its ``prune_configs_by`` applied: a config it prunes for them never runs them)."""
    configs = tuner.configs
    saved = getattr(tuner, "nargs", None)
    tuner.nargs = dict(zip(tuner.arg_names, args, strict=False))
    try:
        configs = list(tuner.prune_configs(kwargs)) or configs
    except Exception:  # noqa: BLE001 - its own run raises the same, as the call's error
        pass
    finally:
        tuner.nargs = saved
    configs = _distinct(configs)
    return configs[min(index, len(configs) - 1)]


def _capturing() -> bool:
    import torch

    try:
        return bool(torch.cuda.is_current_stream_capturing())
    except Exception:  # noqa: BLE001 - a CPU build of torch outside the graph emulator
        return False


class _PinnedPick(dict):
    """An autotuner's cache whose every lookup answers the pinned config (what it tuned is
    still stored, so a later key tunes as it would)."""

    def __init__(self, cache: dict, config: object) -> None:
        super().__init__(cache)
        self.real, self.config = cache, config

    def __setitem__(self, key, value) -> None:
        self.real[key] = value
        super().__setitem__(key, value)

    def __getitem__(self, key):
        return self.config


def _one_timed_call(kernel_call, quantiles=None, **_):
    """Stands in for Triton's benchmarker: one call (its writes are what is judged)."""
    start = time.perf_counter()
    kernel_call()
    elapsed = (time.perf_counter() - start) * 1e3
    return [elapsed] * len(quantiles) if quantiles else elapsed


def install() -> None:
    """Patch Triton's ``run`` of jit functions, ``Autotuner.run`` and ``Heuristics.run``
    (once)."""
    global _installed
    if _installed:
        return
    from triton.runtime.autotuner import Autotuner, Heuristics
    tune = Autotuner.run

    def tuned(self, *args, **kwargs):
        if TRACKER.pin is None:  # outside diffcheck's runs: the autotuner as it is
            return tune(self, *args, **kwargs)
        TRACKER.choices.autotuners[id(self)] = self
        if len(self.configs) <= 1:
            return tune(self, *args, **kwargs)
        saved_cache = self.cache
        had_bench = "do_bench" in self.__dict__
        saved_bench = self.__dict__.get("do_bench")
        self.__dict__["do_bench"] = _one_timed_call
        config = _pick(self, args, kwargs, TRACKER.pin)
        TRACKER.choices.used[(id(self), TRACKER.pin)] = config
        self.cache = _PinnedPick(saved_cache, config)
        known = len(saved_cache)
        try:
            result = tune(self, *args, **kwargs)
        finally:
            TRACKER.tunings += len(saved_cache) > known
            self.cache = saved_cache
            if had_bench:
                self.__dict__["do_bench"] = saved_bench
            else:
                self.__dict__.pop("do_bench", None)
        if len(saved_cache) > known and _capturing():
            raise RuntimeError(
                f"{_name(self)} autotuned during graph capture (a key no earlier call had): "
                "its benchmark runs cannot be captured (a GPU refuses the synchronisation); "
                "tune before capture, with a warm-up call of the same key")
        return result

    def specialised(self, *args, **kwargs):
        named = dict(zip(self.arg_names, args, strict=False))
        for name, heuristic in self.values.items():
            kwargs[name] = heuristic({**named, **kwargs})
            taken = TRACKER.choices.heuristics.setdefault((_name(self), name), [])
            if kwargs[name] not in taken:
                taken.append(kwargs[name])
        return self.fn.run(*args, **kwargs)

    for cls in _launchers():  # kernel[grid](...), an autotuner's and instrument's launches
        cls.run = _counting(cls.run)
    Autotuner.run = tuned
    Heuristics.run = specialised
    _installed = True


def _launchers() -> list[type]:
    """The classes whose ``run`` launches a kernel (``kernel.run(...)`` called directly)."""
    from triton.runtime.jit import JITFunction

    classes: list[type] = [JITFunction]
    try:
        from triton.runtime.interpreter import InterpretedFunction

        classes.append(InterpretedFunction)
    except ImportError:
        pass
    return classes


def _counting(run):
    def launched(self, *args, **kwargs):
        if not kwargs.get("warmup"):
            TRACKER.launches += 1
        return run(self, *args, **kwargs)

    return launched


@contextlib.contextmanager
def pinned(index: int | None) -> Iterator[None]:
    """Every autotuner reached runs its ``index``-th config (None: as it tunes)."""
    install()
    saved, TRACKER.pin = TRACKER.pin, index
    try:
        yield
    finally:
        TRACKER.pin = saved


@contextlib.contextmanager
def recording(kept: bool = True) -> Iterator[Choices]:
    """The autotuners and heuristic values the calls inside reach, also added to the
    enclosing recording unless not ``kept`` (diffcheck's own calls between capture and
    replay, whose choices are not the rows')."""
    install()
    outer, TRACKER.choices = TRACKER.choices, Choices()
    try:
        yield TRACKER.choices
    finally:
        mine, TRACKER.choices = TRACKER.choices, outer
        if kept:
            outer.absorb(mine)


def tunings() -> int:
    """Times an autotuner benchmarked its configs so far in this process."""
    return TRACKER.tunings


def launches() -> int:
    """Triton launches so far in this process."""
    return TRACKER.launches


def heuristics_text(taken: dict[str, tuple[str, ...]]) -> str:
    """The report's ``heuristics`` column: ``kernel.NAME=value|value, ...``."""
    return ", ".join(f"{name}={'|'.join(values)}" for name, values in taken.items())


def reached_lines(heuristics: dict[str, list[str]], rows: list) -> list[str]:
    """The run's summary of what the kernels chose: each heuristic's values over every row
    (``heuristics``, gathered from the outcomes; a boolean one that never took one side says
    so: no case reached that side), and the configs whose verdicts failed rows."""
    lines = []
    if heuristics:
        parts = []
        for name, taken in heuristics.items():
            text = f"{name} took {', '.join(taken)}"
            if set(taken) < {"True", "False"}:
                other = ({"True", "False"} - set(taken)).pop()
                text += f" (never {other}: no case reached that side)"
            parts.append(text)
        lines.append(f"heuristics: {'; '.join(parts)}")
    tuned = [row for row in rows if row.configs]
    if tuned:
        failing = {}
        for row in tuned:
            if row.config and row.status not in ("pass", "stale_sensitive", "refused"):
                failing[row.config] = failing.get(row.config, 0) + 1
        most = max(row.configs for row in tuned)
        line = f"autotune: {len(tuned)} rows ran under up to {most} configs each"
        if failing:
            line += "; rows failing under " + "; ".join(
                f"config {config} ({n})" for config, n in failing.items())
        lines.append(line)
    return lines
