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
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from diffcheck.case import Case, save_case
from diffcheck.paths import get_path


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
    """Saves the arguments of selected calls of a kernel as diffcheck case files."""

    def __init__(self, path: str, directory: str | Path, every: int = 1, limit: int = 100,
                 prefix: str = "recorded", fill: int = 0) -> None:
        self.spec = get_path(path)
        if every < 1 or limit < 0:
            raise ValueError("every must be >= 1 and limit >= 0")
        self.directory, self.every, self.limit = Path(directory), every, limit
        self.prefix, self.fill = prefix, fill
        self.calls = 0
        self.saved: list[Path] = []

    def record(self, *args, **kwargs) -> Path | None:
        """Count one call; save it when it is an ``every``-th one and the limit allows."""
        self.calls += 1
        if (self.calls - 1) % self.every or len(self.saved) >= self.limit:
            return None
        names = self.spec.tensors
        bound = dict(zip(names, args, strict=False))
        bound.update({n: kwargs[n] for n in names if n in kwargs})
        missing = [n for n in names if n not in bound]
        if missing:
            raise TypeError(f"recording a {self.spec.name} call needs {', '.join(missing)}")
        inputs, columns = {}, {}
        for name in names:
            whole, cols = _whole_buffer(bound[name])
            inputs[name] = whole.to(torch.int32) if whole.dtype != torch.int32 else whole
            if cols is not None:
                columns[name] = cols
        k = int(kwargs.get("NUM_TOPK_TOKENS", 2048))
        fill = int(kwargs.get("fill", self.fill))
        name = f"{self.prefix}-{self.calls:06d}"
        case = Case(self.spec.name, name, k, fill, 0, f"recorded call {self.calls}", inputs,
                    columns)
        path = save_case(case, self.directory / f"{name}.npz")
        self.saved.append(path)
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
                scalars = {n: bound.arguments[n] for n in ("NUM_TOPK_TOKENS", "fill")
                           if n in bound.arguments}
                self.record(*values[:tensors], **scalars)
            except Exception as e:  # recording must never change what the engine gets
                warnings.warn(f"diffcheck could not record call {self.calls}: {e}",
                              stacklevel=2)
            return fn(*args, **kwargs)

        return recorded
