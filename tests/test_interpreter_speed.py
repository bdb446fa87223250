"""The interpreter's fast paths (diffcheck.interpreter_speed): the same answers, triton's own
functions back afterwards, and a jit helper's call no longer patching triton.language again."""

import pytest
import torch
import triton
import triton.language as tl
from triton.runtime import interpreter

from diffcheck.interpreter_speed import faster_interpreter


@triton.jit
def _scaled(x, factor):
    return x * factor + 1


@triton.jit
def _helper_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(src_ptr + offs, mask=offs < n, other=0)
    y = _scaled(_scaled(x, 3), 2)  # two helper calls per program
    tl.store(dst_ptr + offs, y.to(tl.int16).to(tl.int32), mask=offs < n)


def _run(src: torch.Tensor) -> torch.Tensor:
    dst = torch.full_like(src, -7)
    _helper_kernel[(triton.cdiv(src.numel(), 16),)](src, dst, src.numel(), BLOCK=16)
    return dst


def test_same_answers_and_triton_restored():
    src = torch.arange(-40, 37, dtype=torch.int32) * 997
    plain = _run(src)
    originals = (interpreter._get_np_dtype, interpreter._patch_lang)
    with faster_interpreter():
        assert interpreter._get_np_dtype is not originals[0]
        fast = _run(src)
    assert (interpreter._get_np_dtype, interpreter._patch_lang) == originals
    assert torch.equal(plain, fast)
    assert torch.equal(plain, ((src * 3 + 1) * 2 + 1).to(torch.int16).to(torch.int32))


def test_helpers_do_not_patch_again(monkeypatch):
    calls = []
    original = interpreter._patch_lang

    def counted(fn):
        calls.append(fn.__name__)
        return original(fn)

    monkeypatch.setattr(interpreter, "_patch_lang", counted)
    src = torch.arange(40, dtype=torch.int32)
    _run(src)
    plain = len(calls)
    calls.clear()
    with faster_interpreter():
        _run(src)
        _run(src)  # the second launch patches again (the first one's patch was undone)
    programs = 3  # 40 elements in tiles of 16
    assert plain == 1 + 2 * programs  # the launch, then two helper calls per program
    assert calls == ["_helper_kernel", "_helper_kernel"]


def test_a_triton_whose_patch_is_never_undone_patches_every_time(monkeypatch):
    """Triton 3.4 and 3.5 patch triton.language for good (``_patch_lang`` returns nothing to
    restore, and their launch restores nothing): every call patches, as without diffcheck."""
    real, scopes, calls = interpreter._patch_lang, [], []

    def old_style(fn):
        calls.append(fn.__name__)
        scopes.append(real(fn))
        return None

    monkeypatch.setattr(interpreter, "_patch_lang", old_style)
    try:
        with faster_interpreter():
            assert interpreter._patch_lang is not old_style
            for _ in range(3):
                assert interpreter._patch_lang(_helper_kernel.fn) is None
    finally:
        for scope in reversed(scopes):  # what triton 3.6 undoes itself
            scope.restore()
    assert calls == ["_helper_kernel"] * 3


def _fields(value) -> dict:
    return {k: str(v) for k, v in vars(value).items()}


def test_tensors_and_block_types_of_one_shape_share_their_fields_and_triton_is_restored():
    core = tl.core
    inits = (core.tensor.__init__, core.block_type.__init__)
    block = core.block_type(tl.int32, [core.constexpr(4), 8])
    plain = [_fields(core.tensor(None, block)), _fields(block),
             _fields(core.tensor(None, tl.int64))]
    pointers = _fields(core.block_type(tl.pointer_type(tl.float16), [4, 8]))
    with faster_interpreter():
        assert (core.tensor.__init__, core.block_type.__init__) != inits
        for _ in range(2):  # the first builds, the second shares
            shared_block = core.block_type(tl.int32, [core.constexpr(4), 8])
            shared = [_fields(core.tensor(None, shared_block)), _fields(shared_block),
                      _fields(core.tensor(None, tl.int64))]
            assert shared == plain
        for _ in range(2):
            assert _fields(core.block_type(tl.pointer_type(tl.float16), [4, 8])) == pointers
        with pytest.raises(ValueError, match="power of 2"):
            core.block_type(tl.int32, [3])  # still checked
        with pytest.raises(AssertionError):  # refused as without diffcheck, shared or not
            core.block_type(tl.int32, (4, 8))
    assert (core.tensor.__init__, core.block_type.__init__) == inits


def test_a_triton_whose_constructors_set_other_fields_builds_every_time(monkeypatch):
    core = tl.core
    real = core.tensor.__init__

    def with_more(self, handle, type):
        real(self, handle, type)
        self.extra = id(self)  # a field the sharing does not know: never shared

    monkeypatch.setattr(core.tensor, "__init__", with_more)
    block = core.block_type(tl.int32, [16])
    with faster_interpreter():
        made = [core.tensor(None, block) for _ in range(3)]
    assert [m.extra for m in made] == [id(m) for m in made]
