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
        names = self.spec.names
        bound = dict(zip(names, args, strict=False))
        bound.update({n: kwargs[n] for n in names if n in kwargs})
        missing = [n for n in names if n not in bound]
        if missing:
            raise TypeError(f"recording a {self.spec.name} call needs {', '.join(missing)}")
        inputs, columns = {}, {}
        for name in names:
            if bound[name].dtype != torch.int32:
                raise TypeError(f"{name} is {str(bound[name].dtype).replace('torch.', '')}; a "
                                f"{self.spec.name} case is int32 (record the int32 buffer the "
                                "kernel gets)")
            inputs[name], cols = _whole_buffer(bound[name])
            if cols is not None:
                columns[name] = cols
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
        name = f"{self.prefix}-{self.calls:06d}"
        told = "".join(f", {n} {v}" for n, v in scalars.items())
        case = Case(self.spec.name, name, k, fill, 0,
                    f"recorded call {self.calls}: K={k} (from {k_keyword}=), fill {fill}{told}",
                    inputs, columns, scalars=scalars)
        path = save_case(case, self.directory / f"{name}.npz")
        self.saved.append(path)
        log.info("diffcheck recorded call %d as %s: %s", self.calls, path, case.description)
        return path

    def wrap(self, fn: Callable) -> Callable:
        """``fn`` with every call counted and the selected ones recorded first."""
        signature = inspect.signature(fn)

        tensors = len(self.spec.tensors)

        @functools.wraps(fn)
        def recorded(*args, **kwargs):
            try:  # the engine's own names may differ: tensors are the first arguments
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                values = list(bound.arguments.values())
                given = {n: v for n, v in list(bound.arguments.items())[tensors:]}
                self.record(*values[:tensors], **given)
            except Exception as e:  # recording must never change what the engine gets
                warnings.warn(f"diffcheck could not record call {self.calls}: {e}",
                              stacklevel=2)
            return fn(*args, **kwargs)

        return recorded
