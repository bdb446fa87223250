"""Small kernels for tests/test_instrument.py: each accesses memory one particular way (a jit
function it calls, a mask given by position, an atomic, a block pointer) so the rewrite of
each kind of access is seen to check it."""

import triton
import triton.language as tl


@triton.jit
def _load_at(p, i, n):
    return tl.load(p + i, mask=i < n, other=0)


@triton.jit
def copy_through_callee(src, dst, n, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    """dst[i] = src[i + SHIFT] for i < n, the load in a jit function it calls (its bound
    checks i + SHIFT < n + SHIFT: SHIFT past the end when SHIFT > 0)."""
    offs = tl.arange(0, BLOCK)
    v = _load_at(src, offs + SHIFT, n + SHIFT)
    tl.store(dst + offs, v, offs < n)


@triton.jit
def store_shifted(dst, n, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    """dst[i + SHIFT] = i for i < n: SHIFT < 0 writes before the start."""
    offs = tl.arange(0, BLOCK)
    tl.store(dst + offs + SHIFT, offs, mask=offs < n)


@triton.jit
def scalar_peek(src, dst, AT: tl.constexpr):
    """A scalar load without a mask: dst[0] = src[AT]."""
    tl.store(dst, tl.load(src + AT))


@triton.jit
def add_atomically(dst, n, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.atomic_add(dst + offs + SHIFT, 1, mask=offs < n)


@triton.jit
def swap_atomically(dst, AT: tl.constexpr):
    tl.atomic_cas(dst + AT, 0, 7)


@triton.jit
def write_input(src, dst, n, BLOCK: tl.constexpr):
    """Copies src to dst, and writes src[0] back as it was (an input written)."""
    offs = tl.arange(0, BLOCK)
    v = tl.load(src + offs, mask=offs < n)
    tl.store(src, tl.load(src))
    tl.store(dst + offs, v, mask=offs < n)


@triton.jit
def copy_by_block_pointer(src, dst, n, BLOCK: tl.constexpr):
    p = tl.make_block_ptr(src, shape=(n,), strides=(1,), offsets=(0,), block_shape=(BLOCK,),
                          order=(0,))
    v = tl.load(p, boundary_check=(0,))
    offs = tl.arange(0, BLOCK)
    tl.store(dst + offs, v, mask=offs < n)


@triton.jit
def copy_plain(src, dst, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(dst + offs, tl.load(src + offs, mask=offs < n), mask=offs < n)


@triton.jit
def copy_by_descriptor(src, dst, n, BLOCK: tl.constexpr):
    """Never launched in the tests (descriptors need a GPU): its rewrite is refused."""
    desc = tl.make_tensor_descriptor(src, shape=[n], strides=[1], block_shape=[BLOCK])
    v = desc.load([0])
    offs = tl.arange(0, BLOCK)
    tl.store(dst + offs, v, mask=offs < n)


@triton.jit
def _load_masked(p, mask=None, other=None):
    return tl.load(p, mask=mask, other=other)


@triton.jit
def copy_through_default_mask(src, dst, n, BLOCK: tl.constexpr):
    """A helper whose mask defaults to None, called without one (and with one)."""
    offs = tl.arange(0, BLOCK)
    first = _load_masked(src)
    rest = _load_masked(src + offs, offs < n, 0)
    tl.store(dst + offs, rest + first * 0, mask=offs < n)


@triton.jit
def compact_by_counter(src, dst, counter, n):
    """Each program appends its value at a slot an atomic hands out (a compaction)."""
    pid = tl.program_id(0)
    tl.store(dst + tl.atomic_add(counter, 1), tl.load(src + pid))


@triton.jit
def _peek(p, i):
    return tl.load(p + i)


@triton.jit
def copy_through_function_argument(src, dst, n, FN: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    v = FN(src, offs)
    tl.store(dst + offs, v, mask=offs < n)


@triton.jit
def _own_id():
    return tl.program_id(0)


@triton.jit
def last_writer(dst, n):
    """Every program writes its id into dst[0] and dst[1 + its id]: dst[0] is the id of the
    program that ran last (a race the order of the programs decides)."""
    pid = tl.program_id(axis=0)
    tl.store(dst + 0, pid)
    tl.store(dst + 1 + _own_id(), pid, mask=pid < n)
