"""Bounds-checks every load, store and atomic of the Triton interpreter (CPU).

The interpreter performs each masked access as a raw host memory access: a wild index reads
another object or kills the process. Inside ``with Sandbox(extents)``, every active lane's
address is checked against the extents of the tensors the implementation was given before the
access runs. An access outside all of them is recorded (nearest buffer, signed element offset,
lanes, program id) and neutralised: a load yields a tag value, a store or atomic is dropped.

Tensors a wrapper allocates itself (a scratch buffer) are added as extents when a launch
passes them, named after the kernel parameter, so a legitimate scratch is not an
out-of-bounds access but an overrun of it is.

Races: the interpreter runs a launch's programs one after another, where a GPU runs them at
once. An element of a writable buffer that two programs of a launch each change with a plain
store, and whose value is read (a judged output, or an element a program of the launch
loads), is recorded (kind "race"): the last writer, or a lost update of a read-modify-write,
depends on the programs' timing on a GPU, which no program order reproduces. Stores that
leave a value as it was, loads of elements one program changed (the reversed run shows
those where they matter) and a launch that uses atomics (they can order programs) are not
counted.

Limits: an address inside *another* argument's extent passes (the margins diffcheck stages
around every buffer make that rare: a small overrun lands in a margin); non-Triton code
(torch ops inside a wrapper) is not checked. The patch is removed on exit, so other code in
the process sees an untouched triton.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from diffcheck.errors import DeviceError
from diffcheck.findings import FoundBy

#: triton versions whose interpreter internals this module was written against: [low, high)
SUPPORTED = ((3, 4), (3, 10))
#: the interpreter builder's methods the sandbox wraps (present from 3.4 to 3.9)
HOOKS = ("create_masked_load", "create_masked_store", "create_atomic_rmw", "create_atomic_cas")


@dataclass(frozen=True)
class Extent:
    """The bytes a tensor argument may touch."""

    name: str
    start: int
    nbytes: int
    itemsize: int = 4
    #: an input: a store into it is recorded (kind "input-write"), even one undone later
    read_only: bool = False
    #: weak reference to the tensor owning the bytes: once it is gone its memory may hold a
    #: new allocation the kernel may write, so the extent stops being read-only
    owner: Callable[[], object] | None = field(default=None, compare=False, repr=False)
    #: an output diffcheck judges (its every element's final value is read)
    judged: bool = False

    def offset_of(self, address: int) -> int:
        """Signed element offset from the start (negative before it, >= size past its end)."""
        return (address - self.start) // self.itemsize

    @property
    def size(self) -> int:
        return self.nbytes // self.itemsize


@dataclass
class Access:
    """Out-of-bounds lanes of one kind, nearest one buffer, first seen at ``offset``."""

    kind: str  # "read", "write" (out of bounds), "input-write" (into a read-only extent)
    # or "race" (see the module docstring)
    buffer: str
    offset: int
    size: int
    lanes: int
    program: tuple[int, int, int]
    #: what saw it: the interpreter sandbox, or the compiled kernel's own checks
    #: (diffcheck.instrument)
    found_by: FoundBy | str = FoundBy.INTERPRETER
    #: the access in the kernel's source ("kernel line N"), where the checker knows it
    where: str = ""


@dataclass
class Bounds:
    """The extents a call may touch and the accesses seen outside them; the checking itself
    is the interpreter sandbox's (below) or the instrumented kernel's (diffcheck.instrument).
    """

    extents: list[Extent]
    accesses: list[Access] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index()

    def _index(self) -> None:
        self._starts = np.array([e.start for e in self.extents], dtype=np.uint64)
        self._ends = np.array([e.start + e.nbytes for e in self.extents], dtype=np.uint64)
        self._read_only = np.array([e.read_only for e in self.extents], dtype=bool)
        # for outside(): starts in order, and the furthest end of any extent starting there
        # or before (an element is inside some extent iff that end reaches past it)
        order = np.argsort(self._starts, kind="stable")
        self._sorted_starts = self._starts[order]
        self._furthest_ends = np.maximum.accumulate(self._ends[order])

    def admit(self, name: str, tensor) -> Extent | None:
        """Add the bytes a launch argument can address, unless a known extent holds them;
        the extent that holds them (None for an empty or reversed view)."""
        if tensor.numel() == 0 or any(st < 0 for st in tensor.stride()):
            return None
        itemsize = tensor.element_size()
        start = tensor.data_ptr()
        last = sum((n - 1) * st for n, st in zip(tensor.shape, tensor.stride(), strict=True))
        end = start + (last + 1) * itemsize
        held = next((e for e in self.extents if e.start <= start and end <= e.start + e.nbytes),
                    None)
        if held is not None:
            return held
        self.extents.append(Extent(name, start, end - start, itemsize))
        self._index()
        return self.extents[-1]

    def nearest(self, address: int, inputs_only: bool = False) -> Extent:
        def distance(e: Extent) -> int:
            if address < e.start:
                return e.start - address
            return max(0, address - (e.start + e.nbytes) + 1)

        pool = [e for e in self.extents if e.read_only] if inputs_only else self.extents
        return min(pool or self.extents, key=distance)


@dataclass
class Sandbox(Bounds):
    #: value a neutralised load yields: tag(buffer, offset) -> int
    tag: Callable[[str, int], int] = lambda buffer, offset: 0

    def __post_init__(self) -> None:
        import triton
        from triton.runtime import interpreter

        from diffcheck.backend import version

        found = version(triton.__version__)
        if not SUPPORTED[0] <= found < SUPPORTED[1]:
            raise DeviceError(
                f"the interpreter sandbox supports triton {SUPPORTED[0][0]}.{SUPPORTED[0][1]} to "
                f"{SUPPORTED[1][0]}.{SUPPORTED[1][1] - 1}, found {triton.__version__}; install "
                "a triton in that range or pass --no-interpreter-check (reads and writes out of "
                "bounds are then found by red zones only)")
        missing = [f"InterpreterBuilder.{name}" for name in HOOKS
                   if name not in vars(interpreter.InterpreterBuilder)]
        if "run" not in vars(interpreter.InterpretedFunction):
            missing.append("InterpretedFunction.run")
        if missing:
            raise DeviceError(
                f"the interpreter of triton {triton.__version__} has no {', '.join(missing)}; "
                "the sandbox cannot check its loads and stores: pass --no-interpreter-check")
        self._index()
        self._launch_begins()

    # -- checking ---------------------------------------------------------------------------
    def outside(self, addresses: np.ndarray, itemsize: int) -> np.ndarray:
        """True for addresses whose element is not wholly inside any extent."""
        if not len(self._sorted_starts):
            return np.ones(addresses.shape, dtype=bool)
        a = addresses.astype(np.uint64)
        last = np.searchsorted(self._sorted_starts, a, side="right") - 1
        end = a + np.uint64(itemsize)  # wraps past 2**64 for a wild negative address
        inside = (last >= 0) & (self._furthest_ends[np.maximum(last, 0)] >= end) & (end > a)
        return ~inside

    def into_inputs(self, addresses: np.ndarray, itemsize: int) -> np.ndarray:
        """True for addresses that touch a live read-only extent (an input of the call)."""
        if not self._read_only.any():
            return np.zeros(addresses.shape, dtype=bool)
        live = self._read_only & np.array(
            [e.owner is None or e.owner() is not None for e in self.extents], dtype=bool)
        a = addresses.astype(np.uint64)[..., None]
        touches = (a + np.uint64(itemsize) > self._starts) & (a < self._ends) & live
        return touches.any(axis=-1)

    def record(self, kind: str, addresses: np.ndarray, bad: np.ndarray, builder) -> np.ndarray:
        """Record the bad lanes; return the tag value each bad lane's load should yield."""
        flat = addresses.reshape(-1)
        program = tuple(int(i) for i in (builder.grid_idx or (0, 0, 0)))
        tags = np.zeros(flat.shape, dtype=np.int64)
        groups: dict[str, tuple[Extent, list[int]]] = {}
        for i in np.flatnonzero(bad):
            address = int(flat[i])
            extent = self.nearest(address, inputs_only=kind == "input-write")
            groups.setdefault(extent.name, (extent, []))[1].append(address)
            tags[i] = self.tag(extent.name, extent.offset_of(address))
        for name, (extent, addrs) in groups.items():
            self.accesses.append(Access(kind, name, extent.offset_of(addrs[0]), extent.size,
                                        len(addrs), program))
        return tags.reshape(addresses.shape)

    # -- patching ---------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        from triton.runtime import interpreter

        cls = interpreter.InterpreterBuilder
        self._saved = {n: cls.__dict__[n] for n in HOOKS}
        kernel_cls = interpreter.InterpretedFunction
        self._saved_run = kernel_cls.__dict__["run"]
        run, sandbox = self._saved_run, self

        def admitting_run(kernel, *args, **kwargs):
            named = [*zip(kernel.arg_names, args, strict=False), *kwargs.items()]
            for name, value in named:
                if isinstance(value, torch.Tensor):
                    sandbox.admit(name, value)
            sandbox._launch_begins()
            try:
                return run(kernel, *args, **kwargs)
            finally:
                sandbox._launch_ends()

        kernel_cls.run = admitting_run
        for name, hook in self._hooks(interpreter).items():
            setattr(cls, name, hook)
        return self

    def _bad_lanes(self, ptrs, mask) -> np.ndarray:
        """Active lanes whose element lies outside every extent."""
        itemsize = max(ptrs.get_element_ty().primitive_bitwidth // 8, 1)
        active = np.broadcast_to(mask.data, ptrs.data.shape) if mask is not None else True
        return active & self.outside(ptrs.data, itemsize)

    def _note_input_stores(self, builder, ptrs, mask, bad) -> None:
        """Record active, in-bounds lanes that store into an input. The store still runs (as
        on a GPU); a kernel that restores the input before returning is caught too."""
        itemsize = max(ptrs.get_element_ty().primitive_bitwidth // 8, 1)
        active = np.broadcast_to(mask.data, ptrs.data.shape) if mask is not None else True
        hits = active & ~bad & self.into_inputs(ptrs.data, itemsize)
        if hits.any():
            self.record("input-write", ptrs.data, hits, builder)

    # -- races ------------------------------------------------------------------------------
    def _launch_begins(self) -> None:
        #: per access of a writable buffer in this launch: (element addresses, whether a
        #: store changed them (False: a load), program)
        self._touches: list[tuple[np.ndarray, bool, int]] = []
        self._atomics = False
        writable = ~self._read_only
        self._writable = (self._starts[writable], self._ends[writable])

    def _touch(self, builder, ptrs, lanes, changed) -> None:
        """Note the lanes of an in-bounds load (``changed`` False) or store (an array: which
        lanes change the value there) that fall in a writable buffer."""
        starts, ends = self._writable
        if not len(starts):
            return
        data = ptrs.data
        if changed is False and data.size and (  # a load wholly outside them: most are
                not ((starts <= np.uint64(data.max())) & (ends > np.uint64(data.min()))).any()):
            return
        addresses = data.astype(np.uint64)
        lanes = np.broadcast_to(lanes, addresses.shape)
        a = addresses[lanes]
        if not a.size:
            return
        inside = ((a[:, None] >= starts) & (a[:, None] < ends)).any(axis=1)
        if not inside.any():
            return
        a = a[inside]
        if changed is not False:  # a store that leaves a value as it was touches nothing
            a = a[np.broadcast_to(changed, addresses.shape)[lanes][inside]]
            changed = True
        if a.size:
            x, y, z = (int(i) for i in (builder.grid_idx or (0, 0, 0)))
            self._touches.append((a, changed, x | (y << 21) | (z << 42)))

    def _store_touch(self, interpreter, read, builder, ptrs, value, lanes) -> None:
        """Note a store's in-bounds lanes that change the value there (``read``: the
        interpreter's raw masked read, None where it has none: no store is recorded)."""
        lanes = np.broadcast_to(lanes, ptrs.data.shape)
        if read is None or not lanes.any():
            return
        dtype_np = interpreter._get_np_dtype(ptrs.get_element_ty())
        try:
            was = read(ptrs.data, np.ascontiguousarray(lanes),
                       np.zeros(ptrs.data.shape, dtype_np), dtype_np)
        except (TypeError, ValueError):  # another interpreter's raw read: no race claimed
            return
        self._touch(builder, ptrs, lanes, np.broadcast_to(value.data, was.shape) != was)

    def _launch_ends(self) -> None:
        """Record the elements of this launch that two programs each changed with a store
        (the last writer or a lost update decides the value), where the value is read: a
        judged output, or an element a program of the launch loaded. Benign races pass: a
        second store of the same value, a load whose value is thrown away, a scratch word
        written by every program and read by none."""
        touches, self._touches = self._touches, []
        stores = [t for t in touches if t[1]]
        if self._atomics or len({t[2] for t in stores}) < 2:
            return
        addresses = np.concatenate([t[0] for t in stores])
        programs = np.concatenate([np.full(t[0].size, t[2], dtype=np.int64) for t in stores])
        order = np.argsort(addresses, kind="stable")
        a, p = addresses[order], programs[order]
        # an element two programs changed has two neighbours of different programs, sorted
        shared = np.unique(a[1:][(a[1:] == a[:-1]) & (p[1:] != p[:-1])])
        if not shared.size:
            return
        loads = [t[0] for t in touches if not t[1]]
        read = np.isin(shared, np.concatenate(loads)) if loads else np.zeros(shared.size, bool)
        for e in self.extents:
            if e.judged:
                read |= (shared >= np.uint64(e.start)) & (shared < np.uint64(e.start + e.nbytes))
        racy = shared[read]
        if not racy.size:
            return
        first = int(racy[0])
        who = np.unique(p[a == racy[0]])[:2]
        extent = self.nearest(first)
        programs_of = [(int(q) & 0x1FFFFF, (int(q) >> 21) & 0x1FFFFF) for q in who]
        self.accesses.append(Access("race", extent.name, extent.offset_of(first), extent.size,
                                    int(racy.size), (*programs_of[0], 0),
                                    where=f"programs {programs_of[0]} and {programs_of[1]}"))

    def _hooks(self, interpreter) -> dict[str, Callable]:
        """The interpreter's load, store and atomics, each checking its lanes first: a lane
        outside every extent is recorded and masked off (a read gets its tag instead)."""
        sandbox, TensorHandle = self, interpreter.TensorHandle
        load, store = self._saved["create_masked_load"], self._saved["create_masked_store"]
        rmw, cas = self._saved["create_atomic_rmw"], self._saved["create_atomic_cas"]
        #: the interpreter's raw masked read (what a store is about to replace), where known
        read = getattr(getattr(interpreter, "_interpreter", None), "load", None)

        def checked_load(builder, ptrs, mask, other, *rest):
            bad = sandbox._bad_lanes(ptrs, mask)
            sandbox._touch(builder, ptrs, _active(mask) & ~bad, False)
            if not bad.any():
                return load(builder, ptrs, mask, other, *rest)
            tags = sandbox.record("read", ptrs.data, bad, builder)
            dtype_np = interpreter._get_np_dtype(ptrs.get_element_ty())
            base = other.data if other is not None else np.zeros(ptrs.data.shape, dtype_np)
            base = np.where(bad, tags.astype(dtype_np), np.broadcast_to(base, ptrs.data.shape))
            safe_mask = TensorHandle(mask.data & ~bad, mask.dtype)
            return load(builder, ptrs, safe_mask, TensorHandle(base, ptrs.get_element_ty()), *rest)

        def checked_store(builder, ptrs, value, mask, *rest):
            bad = sandbox._bad_lanes(ptrs, mask)
            sandbox._note_input_stores(builder, ptrs, mask, bad)
            if bad.any():
                sandbox.record("write", ptrs.data, bad, builder)
                mask = TensorHandle(mask.data & ~bad, mask.dtype)
            sandbox._store_touch(interpreter, read, builder, ptrs, value, _active(mask) & ~bad)
            return store(builder, ptrs, value, mask, *rest)

        def checked_rmw(builder, op, ptrs, val, mask, *rest):
            sandbox._atomics = True
            bad = sandbox._bad_lanes(ptrs, mask)
            sandbox._note_input_stores(builder, ptrs, mask, bad)
            if bad.any():
                sandbox.record("write", ptrs.data, bad, builder)
                mask = TensorHandle(mask.data & ~bad, mask.dtype)
            return rmw(builder, op, ptrs, val, mask, *rest)

        def checked_cas(builder, ptrs, cmp, val, *rest):
            sandbox._atomics = True
            bad = sandbox._bad_lanes(ptrs, None)
            sandbox._note_input_stores(builder, ptrs, None, bad)
            if bad.any():  # no mask to clear: send the bad lanes to a private scratch word
                sandbox.record("write", ptrs.data, bad, builder)
                sandbox._scratch = np.zeros(ptrs.data.size + 1, dtype=np.int64)
                redirected = np.where(bad, np.uint64(sandbox._scratch.ctypes.data), ptrs.data)
                ptrs = TensorHandle(redirected.astype(ptrs.data.dtype), ptrs.dtype)
            return cas(builder, ptrs, cmp, val, *rest)

        return {"create_masked_load": checked_load, "create_masked_store": checked_store,
                "create_atomic_rmw": checked_rmw, "create_atomic_cas": checked_cas}

    def __exit__(self, *exc) -> None:
        from triton.runtime import interpreter

        for name, fn in self._saved.items():
            setattr(interpreter.InterpreterBuilder, name, fn)
        interpreter.InterpretedFunction.run = self._saved_run


def _active(mask) -> np.ndarray | bool:
    """The lanes a mask lets through (all, without one)."""
    return mask.data if mask is not None else True
