"""How a run is set up: its device, id, seed, fillings, isolation and limits, the runs each
job makes (fillings and program orders), and the per-process caches of loaded
implementations, uploads and references.

Its own module so that the runner, the report (which writes a row's reproduce command from
these settings) and the fast screen all read it without importing one another.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from diffcheck import backend, tuning
from diffcheck.buffers import CONSTANT, PLAUSIBLE_A, PLAUSIBLE_B, TAGS, Filling
from diffcheck.case import Case
from diffcheck.defaults import TIMEOUT
from diffcheck.errors import UsageError
from diffcheck.impls import Implementation


@dataclass(frozen=True)
class RunPlan:
    """One run of a job's mode: the red-zone filling and the interpreter's program order."""

    filling: Filling
    order: str = "launched"

    def label(self, settings: RunSettings) -> str:
        """How findings name the run; the order where diffcheck sets it (the interpreter,
        or instrumented copies, whose program ids it reverses)."""
        shown = backend.interpreted(settings.device) or bool(settings.instrument)
        order = f", programs {self.order}" if shown else ""
        return f"{self.filling} filling{order}"


#: the runs every job makes (--fillings N makes the first N)
RUNS = (RunPlan(CONSTANT), RunPlan(TAGS, "reversed"), RunPlan(PLAUSIBLE_A), RunPlan(PLAUSIBLE_B))
#: how many of RUNS are judged one by one against the reference; the plausible ones are only
#: compared with each other (a kernel's answer on plausible margins has no reference)
JUDGED_RUNS = 2
FILLING_CHOICES = (1, 2, 4)


def default_fillings(device: torch.device, interpreter_check: bool) -> int:
    """4 where reads are seen only through the output (a GPU, or no interpreter sandbox): the
    plausible fillings find reads whose constant or tagged values a kernel's own checks
    reject; 2 under the sandbox, which sees every address anyway."""
    return 2 if backend.interpreted(device) and interpreter_check else 4


def default_instrument(device: torch.device) -> bool:
    """Instrumented kernels where they are compiled (a GPU); the interpreter sandbox sees
    every address on the CPU already."""
    return not backend.interpreted(device)
#: runs made only when the first two outputs differ in a way no tag explains: each filling
#: again, in the other program order, then the first run as it was
RERUNS = (RunPlan(CONSTANT, "reversed"), RunPlan(TAGS), RunPlan(CONSTANT))


def new_run_id() -> str:
    """A run's id: random, and never read back as a number (``run-`` then 8 hex digits; a
    bare hex string such as ``1234e567`` would parse as a float)."""
    return f"run-{uuid.uuid4().hex[:8]}"


#: cases whose buffers stay uploaded on the device (see RunSettings.on_device), and the bytes
#: that earlier cases' uploads may hold beside the newest (a GPU-sized case is gigabytes)
UPLOADS_KEPT = 4
UPLOAD_BYTES_KEPT = 1 << 30


@dataclass
class RunSettings:
    device: torch.device
    run_id: str
    run_seed: int
    #: --invalid-fill when given explicitly: overrides the fill stored in case files
    fill_override: int | None = None
    #: bounds-check every interpreter load and store (CPU only)
    interpreter_check: bool = True
    #: red-zone fillings to run each case under (1: constant only; 2: constant and tags; 4:
    #: and the two plausible fillings; 0: the device's default, see default_fillings)
    fillings: int = 0
    #: seconds one job may take (all its fillings) before it ends as `timeout`; 0: no limit
    timeout: float = TIMEOUT
    #: where jobs run: "none" (this process) or "process" (a worker that may die)
    isolation: str = "none"
    #: worker processes side by side (isolation "process")
    workers: int = 1
    #: modules that registered paths at run time (a worker imports them to know the paths)
    plugins: tuple[str, ...] = ()
    #: launch instrumented copies of the kernels, which check their own every load and store
    #: (diffcheck.instrument); None: on where kernels are compiled (a GPU), off under the
    #: interpreter
    instrument: bool | None = None
    #: configs of an autotuned kernel each row runs under: every one (0) or the first N
    configs: int = tuning.ALL_CONFIGS
    #: the devices the run's workers are spread over, one worker each (--devices; as this
    #: process numbers them); () for one device
    devices: tuple[str, ...] = ()
    #: in a worker pinned to one of them: which (the report's device column names it)
    pinned: str = ""
    _loaded: dict[str, Callable] = field(default_factory=dict)
    _references: dict[tuple, dict[str, tuple[torch.Tensor, torch.Tensor]]] = field(
        default_factory=dict
    )
    _uploaded: dict[tuple[int, bool], tuple[Case, dict[str, torch.Tensor]]] = field(
        default_factory=dict
    )
    #: the last run's stagings, their arenas kept until the next run has staged its own
    #: (runner.execute): two runs in a row never get the same addresses
    _staged_before: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fillings = self.fillings or default_fillings(self.device, self.interpreter_check)
        if self.instrument is None:
            self.instrument = default_instrument(self.device)
        if self.instrument and self.interpreter_check and backend.interpreted(self.device):
            raise UsageError("--instrument on the CPU needs --no-interpreter-check: the "
                             "interpreter sandbox already checks every load and store there")

    def implementation(self, impl: Implementation) -> Callable:
        if impl.name not in self._loaded:
            self._loaded[impl.name] = impl.load()
        return self._loaded[impl.name]

    def forget_references(self) -> None:
        """Drop the computed references (a benchmark times computing them again)."""
        self._references.clear()

    def on_device(self, case: Case, intended: bool = False) -> dict[str, torch.Tensor]:
        """The case's whole buffers (or its intended batch's) on the run's device.

        Uploaded once and kept for the last few cases: a case's jobs run one after another,
        and each stages it twice or more (fillings, reruns) besides its reference.
        """
        intended = intended and case.intended is not None  # else it is the inputs: one upload
        key = (id(case), intended)
        kept = self._uploaded.get(key)
        if kept is None or kept[0] is not case:
            source = case.intended if intended else case.inputs
            self._uploaded.pop(key, None)
            # earlier cases' uploads go first (before uploading the new); the same case's
            # other one (its inputs and its intended batch) stays
            others = [k for k, (kept_case, _) in self._uploaded.items() if kept_case is not case]
            while others and (len(self._uploaded) >= UPLOADS_KEPT or _bytes(
                    self._uploaded.values()) + _bytes([(case, source)]) > UPLOAD_BYTES_KEPT):
                self._uploaded.pop(others.pop(0))
            kept = (case, {n: t.to(self.device) for n, t in source.items()})
            self._uploaded[key] = kept
        return kept[1]


    def config(self) -> dict:
        """The plain settings, to start a worker with the same ones."""
        return {f: getattr(self, f) for f in (
            "device", "run_id", "run_seed", "fill_override", "interpreter_check", "instrument",
            "configs", "fillings", "devices", "pinned",
            "timeout", "isolation", "workers", "plugins")}


def _bytes(uploads) -> int:
    """Bytes of (case, tensors) uploads."""
    return sum(t.numel() * t.element_size() for _, tensors in uploads for t in tensors.values())
