"""Recording cases from a live engine, where it launches its kernel.

    from diffcheck.record import CaseRecorder

    recorder = CaseRecorder("decode", "recorded/", every=100, limit=20)
    convert = recorder.wrap(triton_convert_req_index_to_global_index)
    ...
    out = convert(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                  NUM_TOPK_TOKENS=2048, out=workspace)

The wrapper saves the exact buffers of every ``every``-th call (before the call runs) as a
case file, up to ``limit`` files, then calls the kernel unchanged and returns its result.
Saving copies the tensors to the host, a synchronisation: record outside graph capture (the
eager calls of an engine, or a debug run). Replay the files with ``diffcheck compare
--cases recorded/*.npz``; ``diffcheck show FILE`` prints what one holds.
"""

from __future__ import annotations

import functools
import inspect
import logging
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from diffcheck.case import Case
from diffcheck.casefile import save_case
from diffcheck.paths import get_path

log = logging.getLogger("diffcheck.record")


def _whole_buffer(t: torch.Tensor) -> tuple[torch.Tensor, int | None]:
    """A column view ``buf[:, :K]`` of a wider row-major buffer is saved whole, with K, so the
    replay sees the same strides; anything else is saved as its contiguous values."""
    if t.dim() == 2 and t.stride(1) == 1 and t.stride(0) > t.shape[1] and t.shape[0] > 0:
        rows, width = t.shape[0], t.stride(0)
        available = t.untyped_storage().nbytes() // t.element_size() - t.storage_offset()
        if available >= rows * width:
            whole = torch.as_strided(t, (rows, width), (width, 1))
            return whole.detach().cpu().clone(), t.shape[1]
    return t.detach().cpu().contiguous().clone(), None


class CaseRecorder:
    """Saves the arguments of selected calls of a kernel as diffcheck case files.

    ``names`` maps diffcheck's names to the engine's where they differ: the K keyword
    (``{"NUM_TOPK_TOKENS": "topk"}``), a scalar (``{"page_size": "block_size"}``) or the fill.
    K must come from the call (never a guess); an input that is not int32 is refused (a cast
    would record another call than the one the kernel got).
    """

    def __init__(self, path: str, directory: str | Path, every: int = 1, limit: int = 100,
                 prefix: str = "recorded", fill: int = 0,
                 names: Mapping[str, str] | None = None) -> None:
        self.spec = get_path(path)
        if every < 1 or limit < 0:
            raise ValueError("every must be >= 1 and limit >= 0")
        self.directory, self.every, self.limit = Path(directory), every, limit
        self.prefix, self.fill = prefix, fill
        self.names = dict(names or {})
        self.calls = 0
        self.saved: list[Path] = []

    def _keyword(self, name: str, keywords: tuple[str, ...], given: Mapping) -> str | None:
        """The keyword of the call that holds ``name`` (the engine's own, else the
        contract's)."""
        if name in self.names:
            return self.names[name]
        return next((kw for kw in keywords if kw in given), None)

    def record(self, *args, **kwargs) -> Path | None:
        """Count one call; save it when it is an ``every``-th one and the limit allows."""
        self.calls += 1
        if (self.calls - 1) % self.every or len(self.saved) >= self.limit:
            return None
        case = self.case_of(f"{self.prefix}-{self.calls:06d}", args, kwargs,
                            f"recorded call {self.calls}")
        path = save_case(case, self.directory / f"{case.name}.npz")
        self.saved.append(path)
        log.info("diffcheck recorded call %d as %s: %s", self.calls, path, case.description)
        return path

    def case_of(self, name: str, args: tuple, kwargs: Mapping, what: str) -> Case:
        """The case a call's arguments stand for (their contents now, copied to the host)."""
        names = self.spec.names
        bound = dict(zip(names, args, strict=False))
        bound.update({n: kwargs[n] for n in names if n in kwargs})
        missing = [n for n in names if n not in bound]
        if missing:
            raise TypeError(f"recording a {self.spec.name} call needs {', '.join(missing)}")
        inputs, columns = {}, {}
        for tensor in names:
            if bound[tensor].dtype != torch.int32:
                raise TypeError(f"{tensor} is {str(bound[tensor].dtype).replace('torch.', '')}; "
                                f"a {self.spec.name} case is int32 (record the int32 buffer the "
                                "kernel gets)")
            inputs[tensor], cols = _whole_buffer(bound[tensor])
            if cols is not None:
                columns[tensor] = cols
        k_keyword = self._keyword("NUM_TOPK_TOKENS", (self.spec.k_keyword,), kwargs)
        if k_keyword not in kwargs:
            raise TypeError(f"the call has no {k_keyword or self.spec.k_keyword}= to take K "
                            f"from; pass names={{'NUM_TOPK_TOKENS': '<your keyword>'}}")
        k = int(kwargs[k_keyword])
        fill_keyword = self._keyword("fill", ("fill",), kwargs)
        fill = int(kwargs[fill_keyword]) if fill_keyword in kwargs else self.fill
        scalars = {}
        for scalar in self.spec.scalars:
            keyword = self._keyword(scalar.name, scalar.keywords, kwargs)
            if keyword in kwargs and kwargs[keyword] is not None:
                scalars[scalar.name] = int(kwargs[keyword])
        told = "".join(f", {n} {v}" for n, v in scalars.items())
        return Case(self.spec.name, name, k, fill, 0,
                    f"{what}: K={k} (from {k_keyword}=), fill {fill}{told}",
                    inputs, columns, scalars=scalars)

    def wrap(self, fn: Callable) -> Callable:
        """``fn`` with every call counted and the selected ones recorded first."""
        signature = inspect.signature(fn)

        tensors = len(self.spec.tensors)

        @functools.wraps(fn)
        def recorded(*args, **kwargs):
            try:  # the engine's own names may differ: tensors are the first arguments
                values, given = _split(signature, tensors, args, kwargs)
                self.record(*values, **given)
            except Exception as e:  # recording must never change what the engine gets
                warnings.warn(f"diffcheck could not record call {self.calls}: {e}",
                              stacklevel=2)
            return fn(*args, **kwargs)

        return recorded


def _split(signature: inspect.Signature, tensors: int, args: tuple,
           kwargs: Mapping) -> tuple[tuple, dict]:
    """A call's arguments as (the path's tensors by position, everything else by keyword,
    defaults included): the engine's own names may differ, tensors come first."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    items = list(bound.arguments.items())
    return tuple(v for _, v in items[:tensors]), dict(items[tensors:])


class ScenarioRecorder:
    """Records a live graph's steps as one replay scenario file.

        recorder = ScenarioRecorder("decode", "recorded/steps.npz")
        convert = recorder.wrap(kernel)      # the engine's warm-up and capture call it
        ...                                  # warm up (eager), capture the graph
        for batch in batches:
            copy_into_static_buffers(batch)
            recorder.replay()                # what the graph is about to see
            graph.replay()
        recorder.save()

    The first call outside a capture (the engine's warm-up, on the static buffers) is the
    capture step; each ``replay()`` copies what those same buffers hold then. The scenario
    replays with ``diffcheck compare --cases FILE --mode replay``. ``names`` and ``fill``
    are CaseRecorder's; ``limit`` bounds the steps kept (host copies: a debug run).
    """

    def __init__(self, path: str, file: str | Path, limit: int = 64, fill: int = 0,
                 names: Mapping[str, str] | None = None) -> None:
        self.cases = CaseRecorder(path, Path(file).parent, fill=fill, names=names)
        self.file, self.limit = Path(file), limit
        self.call: tuple[tuple, dict] | None = None
        self.steps: list[Case] = []

    def wrap(self, fn: Callable) -> Callable:
        """``fn`` with its first call's buffers remembered (and copied when not capturing)."""
        signature = inspect.signature(fn)
        tensors = len(self.cases.spec.tensors)

        @functools.wraps(fn)
        def recorded(*args, **kwargs):
            try:
                if self.call is None:
                    self.call = _split(signature, tensors, args, kwargs)
                if not self.steps and not _capturing():
                    self._snapshot("capture")
            except Exception as e:  # recording must never change what the engine gets
                warnings.warn(f"diffcheck could not record the call: {e}", stacklevel=2)
            return fn(*args, **kwargs)

        return recorded

    def replay(self, name: str = "") -> None:
        """Copy what the remembered buffers hold now: the next step the graph replays."""
        if self.call is None:
            raise RuntimeError("no call recorded yet: call the wrapped kernel (warm-up or "
                               "capture) before the first replay")
        if not self.steps:
            raise RuntimeError("the first call was made during a capture only: call the "
                               "wrapped kernel once outside it (the engine's warm-up) first")
        if len(self.steps) >= self.limit:
            return
        try:
            self._snapshot(name or f"step-{len(self.steps)}")
        except Exception as e:  # recording must never stop the engine's replay
            warnings.warn(f"diffcheck could not record replay {len(self.steps)}: {e}",
                          stacklevel=2)

    def _snapshot(self, name: str) -> None:
        args, kwargs = self.call
        self.steps.append(self.cases.case_of(f"{self.file.stem}/{name}", args, kwargs,
                                             f"recorded step {len(self.steps)}"))

    def save(self) -> Path:
        """Write the steps as one scenario file; returns its path."""
        from diffcheck.case import Scenario
        from diffcheck.casefile import save_scenario

        if len(self.steps) < 2:
            raise RuntimeError(f"{len(self.steps)} step recorded: a scenario needs the capture "
                               "step and at least one replay")
        spec = self.cases.spec
        size = spec.counts(self.steps[0].kernel_inputs())[1]
        scenario = Scenario(spec.name, self.file.stem, "recorded",
                            f"{len(self.steps) - 1} replays recorded from a live graph",
                            self.steps, [max(size, 1)] * len(self.steps))
        for step in self.steps:
            step.suite = "recorded"
        path = save_scenario(scenario, self.file)
        log.info("diffcheck recorded %d steps as %s", len(self.steps), path)
        return path


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
