"""Graph capture and replay: real CUDA graphs, and an emulator for the Triton interpreter.

Both backends share one protocol: ``capture(call)`` records one implementation call on static
buffers, ``replay()`` re-issues exactly what was recorded. While capturing, a host read of
device data (``.item()``, ``.tolist()``, ``.cpu()``, ``.numpy()``, ``bool(t)``, printing a
tensor, an op whose output shape depends on data) raises HostReadDuringCapture naming the
operation, as a GPU refuses it.

The emulator (CPU) records, while the wrapper's Python runs once:
- ``torch.cuda.is_current_stream_capturing()`` answers True, as on a GPU (a launcher that
  validates its input on the host only outside capture does so here too).
- every Triton launch: the kernel, its grid as evaluated then, its bound arguments (tensors by
  identity, scalars and constexprs by value). Kernels do not run during capture, as on a GPU.
- every torch operation the wrapper runs (through a TorchDispatchMode). They run at capture too
  (the wrapper's Python needs their results); tensors they allocate stay alive with the graph,
  like a graph's private pool. Replay re-runs the recorded operations and launches in order:
  in-place and ``out=`` operations on the same tensors, functional ones copied into the tensor
  they produced at capture; views are not re-run (they still alias the same memory).
Replay never runs the wrapper's Python again: scalars, grids and constexprs stay frozen.

Limits of the emulator (what a real graph does that it does not model): no streams, events or
asynchrony (everything runs in order on the host); memory of a real graph pool can be reused
between graphs, the emulator never reuses it; random-number ops replay with new random values
rather than a captured generator offset; operations the wrapper runs outside torch and Triton
(numpy, ctypes) are neither recorded nor refused; a torch op whose result the wrapper reads on
the host is refused even when a GPU would allow it (for example an op on a CPU tensor the
wrapper made itself).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import sys
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class HostReadDuringCapture(RuntimeError):
    """The implementation read device data on the host while its call was being captured."""


#: Tensor methods that read device data on the host (a synchronisation a graph cannot hold)
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__",
              "__repr__", "__str__", "__format__")
#: aten ops that read data on the host or size their output by data
HOST_READ_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2",
                 "unique_consecutive", "equal", "is_nonzero", "repeat_interleave", "item")


#: aten ops that bring Python data to the device (a pageable host-to-device copy on a GPU)
HOST_COPY_OPS = ("lift_fresh", "lift_fresh_copy")


@contextlib.contextmanager
def refuse_host_reads() -> Iterator[None]:
    """Make every host read of a tensor raise HostReadDuringCapture naming the operation."""
    saved = {name: torch.Tensor.__dict__.get(name) for name in HOST_READS}

    def refuse(name: str):
        shown = {"__bool__": "bool(tensor)", "__int__": "int(tensor)",
                 "__float__": "float(tensor)", "__index__": "using a tensor as an index",
                 "__repr__": "printing a tensor", "__str__": "printing a tensor",
                 "__format__": "formatting a tensor"}.get(name, f".{name}()")

        def method(self, *args, **kwargs):
            raise HostReadDuringCapture(
                f"{shown} reads device data on the host during graph capture; a graph cannot "
                "hold a host synchronisation (compute it on the device or before capture)")

        return method

    for name in HOST_READS:
        setattr(torch.Tensor, name, refuse(name))
    try:
        yield
    finally:
        for name, method in saved.items():
            if method is None:  # inherited (object.__str__): remove the patch only
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)


@contextlib.contextmanager
def capturing_answers(answer: bool) -> Iterator[None]:
    """``torch.cuda.is_current_stream_capturing()`` answers ``answer``, under whatever name a
    launcher imported it (the function reads a module global, patched here): a CPU build of
    torch raises otherwise."""
    from torch.cuda import graphs

    saved = graphs._cuda_isCurrentStreamCapturing
    graphs._cuda_isCurrentStreamCapturing = lambda: answer
    try:
        yield
    finally:
        graphs._cuda_isCurrentStreamCapturing = saved


class Graph:
    """One captured call; ``replay`` re-issues it (and waits for it unless ``sync=False``)."""

    def capture(self, call: Callable[[], object]) -> object:
        raise NotImplementedError

    def replay(self, sync: bool = True) -> None:
        raise NotImplementedError


class CudaGraph(Graph):
    """A real ``torch.cuda.CUDAGraph``, captured on a side stream with a private memory pool."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.graph = torch.cuda.CUDAGraph()
        self.pool = torch.cuda.graph_pool_handle()

    def capture(self, call: Callable[[], object]) -> object:
        torch.cuda.synchronize(self.device)
        with refuse_host_reads(), torch.cuda.graph(self.graph, pool=self.pool):
            result = call()
        torch.cuda.synchronize(self.device)
        return result

    def replay(self, sync: bool = True) -> None:
        self.graph.replay()
        if sync:
            torch.cuda.synchronize(self.device)


@dataclass
class Launch:
    """One Triton launch as recorded: replayed with the same objects and the frozen grid."""

    kernel: object
    args: tuple
    kwargs: dict
    grid: tuple[int, ...]


@dataclass
class TorchOp:
    """One torch operation as recorded; ``result`` is what it produced at capture."""

    func: object
    args: tuple
    kwargs: dict
    result: object
    #: re-run on replay: in place, out=, or functional (then copied into ``result``)
    how: str


def _frozen_grid(kernel, grid, args: tuple, kwargs: dict) -> tuple[int, ...]:
    """The grid as the launch evaluated it: a callable grid gets the bound arguments (the
    kernel's own: launch options an autotuner adds, num_warps and the like, are not)."""
    if callable(grid):
        signature = inspect.signature(kernel.fn)
        bound = signature.bind_partial(*args, **{name: value for name, value in kwargs.items()
                                                 if name in signature.parameters})
        bound.apply_defaults()
        grid = grid(dict(bound.arguments))
    return tuple(int(g) for g in grid)


def _boolean_mask_index(name: str, args: tuple) -> bool:
    """Indexing with a boolean mask sizes its output by the data (a nonzero underneath)."""
    if name not in ("index", "index_put", "index_put_", "_index_put_impl_") or len(args) < 2:
        return False
    indices = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


class _Recorder(TorchDispatchMode):
    """Records each aten op run while capturing; refuses the ones that read on the host."""

    def __init__(self, work: list, made: set[int]) -> None:
        super().__init__()
        self.work = work
        #: storages the ops allocated (the graph's private pool)
        self.made = made

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in HOST_COPY_OPS:
            raise HostReadDuringCapture(
                "torch.tensor(data) copies host data to the device during graph capture; CUDA "
                "refuses a copy from pageable memory (create it before capture, or on the "
                "device with torch.full)")
        if name in HOST_READ_OPS or _boolean_mask_index(name, args):
            raise HostReadDuringCapture(
                f"torch.{name} reads device data on the host (or sizes its output by it) during "
                "graph capture; a graph cannot hold a host synchronisation")
        result = func(*args, **kwargs)
        schema = func._schema
        if schema.is_mutable:
            how = "mutating"
        elif any(r.alias_info is not None for r in schema.returns):
            how = "view"
        else:
            how = "functional"
        if how == "functional":  # a fresh allocation (a view or an in-place op's is not)
            for produced in (result if isinstance(result, (tuple, list)) else (result,)):
                if isinstance(produced, torch.Tensor):
                    self.made.add(_storage(produced))
        if how != "view" and not name.startswith("empty"):
            self.work.append(TorchOp(func, args, kwargs, result, how))
        return result


def _held_by_graphs() -> tuple[dict[int, torch.Tensor], dict[int, int], dict[int, set[int]]]:
    """Every tensor the live graphs hold (and each view's base), by id; how many references
    the graphs hold to each; the ids over each storage. (A function of its own: no loop
    variable of it outlives it, holding a reference of its own.)"""
    objects: dict[int, torch.Tensor] = {}
    references: dict[int, int] = {}
    by_storage: dict[int, set[int]] = {}
    for graph in list(_LIVE):
        for t in graph._held():
            objects[id(t)] = t
            references[id(t)] = references.get(id(t), 0) + 1
            by_storage.setdefault(_storage(t), set()).add(id(t))
    for key in list(objects):
        base = objects[key]._base
        if base is not None and id(base) not in objects:
            objects[id(base)] = base
            by_storage.setdefault(_storage(base), set()).add(id(base))
    return objects, references, by_storage


def _referred(tensor: torch.Tensor, ours: dict) -> bool:
    """Something besides ``ours`` (and this frame) refers to ``tensor``."""
    return any(r is not ours and not inspect.isframe(r) for r in gc.get_referrers(tensor))


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The whole memory under ``tensor`` (its storage), as bytes."""
    return torch.empty(0, dtype=torch.uint8, device=tensor.device).set_(tensor.untyped_storage())


def _changed(memory: torch.Tensor, size: int) -> int:
    """Elements of ``size`` bytes of ``memory`` no longer all FREED_POISON."""
    whole = memory[: memory.numel() // size * size].view(-1, size)
    return int((whole != FREED_POISON).any(dim=1).sum())


#: a byte no kernel writes by chance: memory freed since capture holds it at replay
FREED_POISON = 0xA5


@dataclass
class Freed:
    """A tensor a replay used that its launcher made before capture and no longer holds: on a
    GPU its memory is free, and whatever is allocated there next is what the replay reads
    and overwrites."""

    what: str
    #: elements the replay wrote into it
    written: int = 0


#: emulated graphs alive (what holds a tensor besides its launcher)
_LIVE: weakref.WeakSet = weakref.WeakSet()


@dataclass(eq=False)
class EmulatedGraph(Graph):
    """Capture by recording (Triton launches and torch ops); replay re-runs the record."""

    work: list = field(default_factory=list)
    #: storages allocated during capture (the graph's own pool)
    made: set = field(default_factory=set)
    #: after each replay: the tensors it used that were freed since capture
    freed: list = field(default_factory=list)
    #: poison what only graphs still hold before each replay (diffcheck's judged runs; a
    #: graph of diffcheck's own, such as bench's, is left as it is)
    check_freed: bool = False

    def __post_init__(self) -> None:
        _LIVE.add(self)

    def _held(self) -> Iterator[torch.Tensor]:
        """Every tensor the record holds, once per reference (launch arguments, op arguments
        and results)."""
        for item in self.work:
            values = (*item.args, *item.kwargs.values())
            if isinstance(item, TorchOp):
                values += (item.result,)
            for value in values:
                for t in (value if isinstance(value, (tuple, list)) else (value,)):
                    if isinstance(t, torch.Tensor):
                        yield t

    def foreign(self, owned: set[int]) -> bool:
        """Some launch argument is neither one of ``owned`` (storages: diffcheck's buffers)
        nor allocated during capture: a tensor its launcher keeps, which could be freed."""
        return any(isinstance(v, torch.Tensor) and _storage(v) not in owned and
                   _storage(v) not in self.made
                   for launch in self.launches()
                   for v in (*launch.args, *launch.kwargs.values()))

    def orphans(self) -> list[tuple[str, torch.Tensor]]:
        """Launch arguments made before capture that only graphs still hold: their launcher
        dropped them, so on a GPU their memory is free. A storage is orphaned when every
        tensor over it is one the live graphs hold (or a view's base), and nobody else holds
        those tensors: its use count and each tensor's reference count are all the graphs'."""
        objects, references, by_storage = _held_by_graphs()
        control = torch.empty(0)
        objects[0] = control
        baseline = sys.getrefcount(objects[0]) - 1  # as held here, less the name `control`

        # measured before anything below takes a reference of its own; a view's base that
        # no record holds may be kept alive by the view alone (its count then says nothing):
        # whoever else holds it is found among the referrers
        elsewhere = {key for key in objects if key in references and
                     sys.getrefcount(objects[key]) - baseline > references[key]}
        bases = [key for key in objects if key and key not in references]
        found, seen = [], set()
        for launch in self.launches():
            names = inspect.signature(launch.kernel.fn).parameters
            for name, value in (*zip(names, launch.args, strict=False),
                                *launch.kwargs.items()):
                if not isinstance(value, torch.Tensor) or value.device.type == "meta":
                    continue
                ptr = _storage(value)
                if ptr in self.made or ptr in seen or ptr == 0:
                    continue
                seen.add(ptr)
                ours = by_storage.get(ptr, set())
                impls = torch._C._storage_Use_Count(value.untyped_storage()._cdata) - 1
                if impls > len(ours) or ours & elsewhere or any(
                        _referred(objects[key], objects) for key in ours if key in bases):
                    continue
                kernel = getattr(launch.kernel.fn, "__name__", "a kernel")
                found.append((f"argument {name} of {kernel} (a "
                              f"{str(value.dtype).replace('torch.', '')} tensor made before "
                              "capture, no longer held by its launcher)", value))
        return found

    def capture(self, call: Callable[[], object]) -> object:
        from triton.runtime.interpreter import InterpretedFunction

        original = InterpretedFunction.run
        work = self.work

        def record(kernel, *args, grid, warmup, **kwargs):
            if not warmup:
                work.append(Launch(kernel, args, kwargs, _frozen_grid(kernel, grid, args, kwargs)))

        InterpretedFunction.run = record
        try:
            with refuse_host_reads(), _Recorder(work, self.made), capturing_answers(True):
                result = call()
        finally:
            InterpretedFunction.run = original
        return result


    def replay(self, sync: bool = True) -> None:
        """Re-run the record. A tensor freed since capture is filled with FREED_POISON first
        (what reusing its memory leaves there), and what the replay wrote into it counted."""
        from triton.runtime.interpreter import InterpretedFunction

        orphans = [(what, _bytes(tensor), tensor.element_size())
                   for what, tensor in (self.orphans() if self.check_freed else ())]
        for _, memory, _ in orphans:
            memory.fill_(FREED_POISON)
        self._rerun(InterpretedFunction)
        self.freed = [Freed(what, _changed(memory, size)) for what, memory, size in orphans]

    def _rerun(self, InterpretedFunction) -> None:  # noqa: N803 - the class it launches with
        for item in self.work:
            if isinstance(item, Launch):
                InterpretedFunction.run(item.kernel, *item.args, grid=item.grid, warmup=False,
                                        **item.kwargs)
            elif item.how == "mutating":
                item.func(*item.args, **item.kwargs)
            else:
                fresh = item.func(*item.args, **item.kwargs)
                _copy_into(item.result, fresh)

    def launches(self) -> list[Launch]:
        return [w for w in self.work if isinstance(w, Launch)]


def _copy_into(target: object, fresh: object) -> None:
    if isinstance(target, torch.Tensor):
        target.copy_(fresh)
    elif isinstance(target, (tuple, list)):
        for t, f in zip(target, fresh, strict=True):
            _copy_into(t, f)


class PoisonedFreeMemory:
    """The CUDA caching allocator's free blocks (of the default pool), taken and filled with
    FREED_POISON, so that a replay using memory freed since capture reads poison there and
    its writes show (``written``). Held until dropped; at most ``most`` bytes."""

    def __init__(self, device: torch.device, most: int = 1 << 30) -> None:
        self.blocks: list[torch.Tensor] = []
        taken = 0
        index = device.index if device.index is not None else torch.cuda.current_device()
        for segment in torch.cuda.memory_snapshot():
            if segment.get("device", index) != index or \
                    tuple(segment.get("segment_pool_id", (0, 0))) != (0, 0):
                continue
            for block in segment.get("blocks", ()):
                size = int(block.get("size", 0))
                if block.get("state") != "inactive" or size < 512 or taken + size > most:
                    continue
                memory = torch.empty(size, dtype=torch.uint8, device=device)
                memory.fill_(FREED_POISON)
                self.blocks.append(memory)
                taken += size

    def written(self) -> list[tuple[str, int]]:
        """(address, bytes changed) of each poisoned block a replay wrote into."""
        if not self.blocks:
            return []
        changed = []
        for block in self.blocks:  # one block's comparison alive at a time
            changed.append((block != FREED_POISON).sum())
        changed = torch.stack(changed).tolist()
        return [(f"{self.blocks[i].data_ptr():#x}, {self.blocks[i].numel()} bytes", n)
                for i, n in enumerate(changed) if n]


def new_graph(device: torch.device, check_freed: bool = False) -> Graph:
    """A graph for ``device``; ``check_freed``: the emulator poisons, before each replay, what
    only graphs still hold (a judged run)."""
    return CudaGraph(device) if device.type == "cuda" else EmulatedGraph(
        check_freed=check_freed)
