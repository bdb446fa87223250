"""Choosing the device, and the Triton interpreter set-up for machines without a GPU.

``TRITON_INTERPRET`` is read when ``@triton.jit`` decorates a kernel, so it must be set before
any kernel module is imported; implementations are therefore loaded only after ``prepare``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator

import torch

from diffcheck.errors import DeviceError

DEVICES = ("auto", "cpu", "cuda")


def resolve(name: str) -> torch.device:
    """``auto`` picks CUDA (or ROCm through torch.cuda) when present, else the CPU."""
    if name not in DEVICES:
        raise DeviceError(f"unknown device '{name}'; known: {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda but torch sees no CUDA/ROCm device; use --device cpu "
                          "to run kernels through the Triton interpreter")
    return torch.device(name)


def version(text: str) -> tuple[int, int]:
    """(major, minor) of a version string such as ``3.7.1+rocm6.4`` or ``2.4.6``."""
    major, minor = (text.split("+")[0].split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def interpreted(device: torch.device) -> bool:
    return device.type == "cpu"


def prepare(device: torch.device) -> None:
    """Make Triton kernels runnable on ``device``; call before loading any implementation."""
    if not interpreted(device):
        return
    os.environ["TRITON_INTERPRET"] = "1"
    import numpy

    try:
        import triton
    except ImportError as e:
        raise DeviceError("triton is not installed: the CPU runs kernels through Triton's "
                          "interpreter; pip install 'triton>=3.4,<3.10' (or "
                          "diffcheck[interpreter]); GPU builds of torch bring their own") from e

    if version(numpy.__version__) >= (2, 3) and version(triton.__version__) < (3, 7):
        raise DeviceError(f"numpy {numpy.__version__} breaks the interpreter of triton "
                          f"{triton.__version__} (\"only 0-dimensional arrays can be "
                          "converted\"); install 'numpy<2.3' or triton >= 3.7")
    from diffcheck.impls import builtin

    modules = {impl.target.partition(":")[0] for impl in builtin().values()}
    for name in sorted(m for m in modules if m in sys.modules):
        kernel = next((v for k, v in vars(sys.modules[name]).items() if k.startswith("_")
                       and k.endswith("_kernel")), None)
        if kernel is not None and type(kernel).__name__ != "InterpretedFunction":
            raise DeviceError(f"{name} was imported before TRITON_INTERPRET=1 was set; run the "
                              "CPU check in a fresh process or set TRITON_INTERPRET=1 first")


def compiled_kernels(fn: object) -> list[str]:
    """Triton kernels in ``fn``'s module that were built for a GPU (the module was imported
    before TRITON_INTERPRET=1 was set): called on the CPU they fail with "0 active
    drivers"."""
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    return sorted(name for name, value in vars(module or object()).items()
                  if type(value).__name__ == "JITFunction")


@contextlib.contextmanager
def interpreter_as_on_gpu(device: torch.device) -> Iterator[None]:
    """Integer arithmetic wraps in the interpreter as it does on a GPU.

    Triton 3.6's interpreter checks every int32 add for overflow and raises (a GPU does so only
    in debug builds): a kernel adding a red-zone tag to an offset would fail on CPU and wrap on
    a GPU. Turning the check off for the call also makes the interpreter about a third faster.
    Restored afterwards, so other code sees triton's own setting.

    ``torch.cuda.is_current_stream_capturing()`` answers False (a CPU build of torch raises):
    a launcher that asks, as engines' do before validating on the host, runs as on a GPU (the
    graph emulator answers True while it captures).
    """
    if not interpreted(device):
        yield
        return
    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    saved = builder.options
    builder.options = dataclasses.replace(saved, sanitize_overflow=False)
    cls = interpreter.InterpreterBuilder
    masked = {name: cls.__dict__[name] for name in _MASKED}
    for name, index in _MASKED.items():
        setattr(cls, name, _bool_mask(masked[name], index, interpreter.TensorHandle))
    from diffcheck.graphs import capturing_answers
    from diffcheck.interpreter_speed import faster_interpreter

    try:
        with capturing_answers(False), faster_interpreter():
            yield
    finally:
        builder.options = saved
        for name, fn in masked.items():
            setattr(cls, name, fn)


#: interpreter builder methods that take a mask, and the mask's position among the arguments
_MASKED = {"create_masked_load": 1, "create_masked_store": 2, "create_atomic_rmw": 3}


def _bool_mask(method, index: int, handle_type):
    """``method`` with its mask made boolean. Triton 3.7+'s interpreter keeps a mask built
    as ``block & scalar`` as int32 and its store rejects it ("mask has unsupported dtype"),
    while every compiler and older interpreter takes it; a GPU would run the kernel."""
    import numpy as np

    def call(builder, *args):
        mask = args[index]
        if mask is not None and getattr(mask.data, "dtype", None) not in (None, np.bool_):
            args = (*args[:index], handle_type(mask.data.astype(bool), mask.dtype),
                    *args[index + 1:])
        return method(builder, *args)
    return call


#: orders in which the interpreter runs a grid's programs (a GPU runs them in no fixed order)
ORDERS = ("launched", "reversed")


@contextlib.contextmanager
def program_order(device: torch.device, order: str) -> Iterator[None]:
    """On the interpreter, run every grid's programs in ``order``: as launched or reversed.

    Two programs that write one element race on a GPU, while the interpreter always lets the
    same one win; a case run once each way makes such writes disagree on the CPU too.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown program order {order!r}; known: {', '.join(ORDERS)}")
    if not interpreted(device) or order == "launched":
        yield
        return
    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    set_index = type(builder).set_grid_idx

    def reversed_index(x: int, y: int, z: int) -> None:
        nx, ny, nz = builder.grid_dim
        set_index(builder, nx - 1 - x, ny - 1 - y, nz - 1 - z)

    builder.set_grid_idx = reversed_index
    try:
        yield
    finally:
        del builder.set_grid_idx


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe(device: torch.device, pinned: str = "") -> str:
    """The device column of the report; ``pinned``: the device (of several, --devices) the
    worker that ran the row was pinned to."""
    where = f" (device {pinned})" if pinned else ""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}{where}"
    return f"cpu:triton-interpreter{where}"
