"""The interpreter sandbox patches triton only while a call runs, for the versions it knows."""

import pytest
import torch
import triton
from conftest import suite_cases
from triton.runtime import interpreter

from diffcheck.buffers import stage
from diffcheck.errors import DeviceError
from diffcheck.oob import extents
from diffcheck.sandbox import Sandbox

PATCHED = ("create_masked_load", "create_masked_store", "create_atomic_rmw", "create_atomic_cas")


def originals():
    patched = {name: interpreter.InterpreterBuilder.__dict__[name] for name in PATCHED}
    return {**patched, "run": interpreter.InterpretedFunction.__dict__["run"]}


def staged_case():
    case = next(c for c in suite_cases("decode", "edge") if c.name == "decode-odd-minus-one")
    return case, stage(case.inputs, case.columns, case.k * 4, torch.device("cpu"))


def test_patch_is_removed_after_the_call_even_when_it_raises():
    before = originals()
    _, staged = staged_case()
    with pytest.raises(RuntimeError), Sandbox(extents(staged)):
        assert originals() != before
        raise RuntimeError("kernel failed")
    assert originals() == before


def test_out_of_bounds_load_is_recorded_and_yields_the_tag():
    from diffcheck.kernels.decode import decode_unguarded

    case, staged = staged_case()
    t = staged.tensors()
    with Sandbox(extents(staged), tag=lambda name, offset: 4242) as sandbox:
        decode_unguarded(*t.values(), NUM_TOPK_TOKENS=case.k, out=staged.out.view)
    (access,) = sandbox.accesses
    assert (access.kind, access.buffer, access.offset, access.program) == (
        "read", "kv_indices", -1, (0, 0, 0))
    assert int(staged.out.view[0]) == 4242  # request 0, column 0 holds the neutralised load


def test_unknown_triton_version_is_refused(monkeypatch):
    monkeypatch.setattr(triton, "__version__", "3.10.0")
    with pytest.raises(DeviceError, match="supports triton 3.4 to 3.9, found 3.10.0"):
        Sandbox([])


def test_an_interpreter_without_the_hooks_is_refused_with_the_reason(monkeypatch):
    from triton.runtime import interpreter

    monkeypatch.delattr(interpreter.InterpreterBuilder, "create_atomic_cas")
    with pytest.raises(DeviceError, match="has no InterpreterBuilder.create_atomic_cas"):
        Sandbox([])


def test_a_mask_built_from_a_block_and_a_scalar_runs_as_on_a_gpu():
    """triton 3.7+'s interpreter keeps `block & scalar` as int32 and its store refused it
    ("mask has unsupported dtype"); compilers accept it, so diffcheck runs it too."""
    import triton.language as tl

    from diffcheck import backend

    @triton.jit
    def masked(x_ptr, n, BLOCK: tl.constexpr):
        cols = tl.arange(0, BLOCK)
        mask = (cols < 5) & (n > 2)
        value = tl.load(x_ptr + cols, mask=mask, other=7)
        tl.store(x_ptr + cols, value + cols, mask=mask)

    x = torch.zeros(8, dtype=torch.int32)
    with backend.interpreter_as_on_gpu(torch.device("cpu")), Sandbox([]) as sandbox:
        sandbox.admit("x_ptr", x)
        masked[(1,)](x, 3, BLOCK=8)
    assert x.tolist() == [0, 1, 2, 3, 4, 0, 0, 0] and not sandbox.accesses


def test_an_element_is_outside_exactly_when_no_single_extent_holds_it_whole():
    """Nested, overlapping, touching and empty extents; addresses before, between, straddling
    and after them, and wild negative ones (an address within an element of 2**64)."""
    import numpy as np

    from diffcheck.sandbox import Extent

    rng = np.random.default_rng(5)
    for trial in range(200):
        spans = [(int(s), int(n)) for s, n in zip(rng.integers(0, 256, rng.integers(0, 7)),
                                                   rng.integers(0, 64, 7), strict=False)]
        sandbox = Sandbox([Extent(f"t{i}", s, n) for i, (s, n) in enumerate(spans)])
        itemsize = int(rng.choice([1, 2, 4, 8]))
        addresses = np.concatenate([rng.integers(-16, 340, 64), np.arange(-8, 0)]).astype(
            np.int64)
        found = sandbox.outside(addresses, itemsize)
        for address, out in zip(addresses.tolist(), found.tolist(), strict=True):
            whole = any(s <= address and address + itemsize <= s + n for s, n in spans)
            assert out == (not whole), (trial, spans, address, itemsize)
