"""The registry of kernel paths: one PathSpec line per contract of DESIGN.md.

Runner, modes, buffers and reports iterate this registry and never import a path by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from diffcheck.errors import UnknownNameError


@dataclass(frozen=True)
class PathSpec:
    """One kernel path: its call signature, its oracle and where its fixtures live."""

    name: str
    #: tensor arguments in call order (DESIGN.md signature)
    tensors: tuple[str, ...]
    #: scalar keyword arguments of the call, given K
    scalars: Callable[[int], dict[str, int]]
    #: "module:function" of the reference: same arguments plus fill -> (expected, mask)
    reference: str
    #: "module:function" listing contract violations of a batch (empty: well-formed)
    violations: str
    #: module defining SUITES for this path
    fixtures: str
    #: the [T, K] top-k tensor, the indptr naming the output regions, and the one naming requests
    topk: str
    regions: str
    requests: str
    #: what one output row is, for locations in messages ("request 3, column 2047")
    row_label: str
    #: tensors that are 2-D; all others are 1-D
    matrices: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        named = set(self.tensors)
        for role in ("topk", "regions", "requests"):
            if getattr(self, role) not in named:
                raise ValueError(
                    f"PathSpec {self.name!r}: {role} {getattr(self, role)!r} is not a tensor"
                )
        if not set(self.matrices) <= named or len(named) != len(self.tensors):
            raise ValueError(f"PathSpec {self.name!r}: matrices or tensors are inconsistent")
        for target in (self.reference, self.violations):
            if ":" not in target:
                raise ValueError(f"PathSpec {self.name!r}: {target!r} is not 'module:function'")

    def ndim(self, name: str) -> int:
        return 2 if name in self.matrices else 1

    def counts(self, tensors: dict[str, torch.Tensor]) -> tuple[int, int]:
        """(requests, output rows) of a batch."""
        return tensors[self.requests].numel() - 1, tensors[self.regions].numel() - 1

    def workspace_size(self, tensors: dict[str, torch.Tensor], k: int) -> int:
        """The output workspace a serving engine allocates: one K-row per output row."""
        return max(self.counts(tensors)[1], 0) * k

    def call_args(self, tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [tensors[name] for name in self.tensors]

    def load(self, target: str) -> Callable:
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def reference_fn(self) -> Callable:
        return self.load(self.reference)

    def violations_of(self, tensors: dict[str, torch.Tensor], k: int) -> list[str]:
        return self.load(self.violations)(tensors, k)

    def suites(self) -> dict:
        return importlib.import_module(self.fixtures).SUITES


PATHS: dict[str, PathSpec] = {
    spec.name: spec
    for spec in (
        PathSpec(
            "decode",
            tensors=("qo_indptr", "kv_indptr", "page_kv_indptr", "kv_indices", "token_indices"),
            scalars=lambda k: {"BLOCK_SIZE": 1, "NUM_TOPK_TOKENS": k},
            reference="refimpl.decode:decode_reference",
            violations="refimpl.decode:decode_violations",
            fixtures="fixtures.decode",
            topk="token_indices",
            regions="page_kv_indptr",
            requests="kv_indptr",
            row_label="request",
            matrices=("token_indices",),
        ),
        PathSpec(
            "mtp",
            tensors=(
                "sparse_kv_indptr", "token_to_seq_idxs", "topk_indices", "kv_indices", "kv_indptr"
            ),
            scalars=lambda k: {"NUM_TOPK_TOKENS": k},
            reference="refimpl.mtp:mtp_reference",
            violations="refimpl.mtp:mtp_violations",
            fixtures="fixtures.mtp",
            topk="topk_indices",
            regions="sparse_kv_indptr",
            requests="kv_indptr",
            row_label="token",
            matrices=("topk_indices",),
        ),
    )
}


def get_path(name: str) -> PathSpec:
    try:
        return PATHS[name]
    except KeyError:
        raise UnknownNameError(f"unknown path '{name}'; known: {', '.join(PATHS)}") from None


def select_paths(name: str) -> list[PathSpec]:
    """``all`` or one path name."""
    return list(PATHS.values()) if name == "all" else [get_path(name)]
