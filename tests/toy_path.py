"""A fourth path, written the way an outside plug-in would be: everything about it in this one
module, registered at run time. test_toy_path.py proves that nothing else needs an edit.

toy: ``(slot_of, positions, TABLE_SCALE=1, NUM_TOPK_TOKENS=K, out=None) -> out``:
``out[t*K + j] = slot_of[positions[t, j]] * TABLE_SCALE`` if 0 <= positions[t, j] <
len(slot_of), else the fill. Result: every element of the [T, K] output.
"""

from __future__ import annotations

import numpy as np
import torch

from diffcheck.fixtures.layouts import Layout, suite_builder
from diffcheck.fixtures.replay import ScenarioLayout, scenario_suite
from diffcheck.impls import Implementation
from diffcheck.paths import PathSpec, Scalar, Tensor, register, unregister


def toy_reference(t, k, fill, scalars, out_size):
    table, rows = t["slot_of"], t["positions"][:, :k].to(torch.int64)
    valid = (rows >= 0) & (rows < table.numel())
    values = torch.where(valid, table.to(torch.int64)[rows.clamp(0, max(table.numel() - 1, 0))]
                         * scalars["scale"], fill).to(torch.int32).reshape(-1)
    return {"out": (values, torch.ones_like(values, dtype=torch.bool))}


def toy_violations(t, k, scalars):
    return [] if t["positions"].shape[1] >= k else ["positions has fewer than K columns"]


def toy_kernel(slot_of, positions, TABLE_SCALE=1, NUM_TOPK_TOKENS=2048, out=None, fill=0):
    """A correct toy kernel (torch ops only)."""
    rows = positions[:, :NUM_TOPK_TOKENS].to(torch.int64)
    valid = (rows >= 0) & (rows < slot_of.numel())
    values = torch.where(valid, slot_of.to(torch.int64)[rows.clamp(0, slot_of.numel() - 1)]
                         * TABLE_SCALE, fill).to(torch.int32)
    if out is None:
        return values
    out.copy_(values.reshape(out.shape))
    return out


def toy_kernel_no_bound(slot_of, positions, TABLE_SCALE=1, NUM_TOPK_TOKENS=2048, out=None,
                        fill=0):
    """Broken: forgets the upper bound (reads past slot_of through as_strided)."""
    rows = positions[:, :NUM_TOPK_TOKENS].to(torch.int64)
    wide = torch.as_strided(slot_of, (slot_of.numel() + 64,), (1,))
    values = torch.where(rows >= 0, wide[rows.clamp(0, slot_of.numel() + 63)].to(torch.int64)
                         * TABLE_SCALE, fill).to(torch.int32)
    out.copy_(values.reshape(out.shape))
    return out


def _batch(rows: int, table: int, scale_odd: bool = False):
    def build(rng: np.random.Generator, k: int):
        positions = rng.integers(-2, table + 3, size=(rows, k), dtype=np.int32)
        return {"slot_of": rng.integers(1, 1 << 20, size=table, dtype=np.int32),
                "positions": positions}, {}

    return build


def _steps(rng, k, graph):
    arrays = [_batch(graph, 40)(rng, k)[0] for _ in range(3)]
    return [(f"step-{i}", a, None, graph) for i, a in enumerate(arrays)]


SMOKE = [Layout("toy-small", "a few rows", 8, _batch(4, 20), scalars={"scale": 3}),
         Layout("toy-other-fill", "the other fill", 8, _batch(3, 9), fill_swapped=True)]
SUITES = {
    "smoke": suite_builder("toy", "smoke", SMOKE),
    "smoke-2048": suite_builder("toy", "smoke-2048", [Layout("toy-2048", "K=2048", 2048,
                                                             _batch(2, 50))]),
    "stale": suite_builder("toy", "stale", [Layout("toy-stale", "a stale one", 8,
                                                   _batch(3, 12), lambda r, a, k: a)]),
    "replay": scenario_suite("toy", "replay", [ScenarioLayout("toy-steps", "three steps", 8,
                                                              4, _steps)]),
}

PATH = PathSpec(
    name="toy",
    summary="a toy path registered at run time",
    tensors=(Tensor("slot_of", role="slots", doc="int32 [N]"),
             Tensor("positions", ndim=2, role="positions", doc="int32 [T, K]")),
    scalars=(Scalar("scale", ("TABLE_SCALE",), 1, minimum=1, doc="a multiplier"),),
    reference=toy_reference,
    violations=toy_violations,
    counts=lambda t: (t["slot_of"].numel(), t["positions"].shape[0]),
    suites=lambda: SUITES,
    out_layout="rows",
    row_label="row",
    implementations=(
        Implementation("toy:torch", "toy_path:toy_kernel", True, "a correct toy kernel"),
        Implementation("toy:no-bound", "toy_path:toy_kernel_no_bound", False,
                       "broken: no upper bound"),
    ),
    doc=__doc__,
)


def install() -> None:
    register(PATH, __name__)


def remove() -> None:
    unregister(PATH.name)


# Registered on import, as a plug-in module does (a worker process imports it by name).
install()
