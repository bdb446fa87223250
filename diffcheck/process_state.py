"""What a kernel call must leave as it found it: the process state around every call.

A launcher that reseeds the RNG, switches the current stream or device, changes the default
dtype or grad mode, the working directory or the environment, or leaves a thread running
changes every call made after it in the process: in a serving engine, the engine's own. Each
change is a finding (``side_effect``) naming what changed, and the state is put back before
the next call so the rows after it stay meaningful. A thread cannot be stopped from outside:
it is reported, and a worker process that holds one is replaced before another
implementation runs in it (diffcheck.executors).
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass

import numpy as np
import torch

#: environment variables torch and Triton set themselves on first use of their caches and
#: toolchains (a capture can be that first use): not the kernel's doing
LIBRARY_ENVIRONMENT = ("TORCHINDUCTOR_", "TRITON_CACHE_DIR", "TRITON_PTXAS_PATH",
                       "TRITON_LIBDEVICE_PATH", "TRITON_HOME", "KMP_DUPLICATE_LIB_OK",
                       "CUBLAS_WORKSPACE_CONFIG", "CUDA_HOME")


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(LIBRARY_ENVIRONMENT)}


@dataclass
class ProcessState:
    """The parts of the process a kernel call can change for everyone after it."""

    cwd: str
    environ: dict[str, str]
    default_dtype: torch.dtype
    grad_enabled: bool
    #: the live threads themselves (an ident is reused once its thread ends)
    threads: frozenset[threading.Thread]
    cpu_rng: torch.Tensor
    python_rng: object
    numpy_rng: object
    cuda_device: int | None = None
    cuda_stream: object = None
    cuda_rng: torch.Tensor | None = None


def snapshot(device: torch.device) -> ProcessState:
    state = ProcessState(
        cwd=_cwd(), environ=_environment(), default_dtype=torch.get_default_dtype(),
        grad_enabled=torch.is_grad_enabled(),
        threads=frozenset(t for t in threading.enumerate() if t.is_alive()),
        cpu_rng=torch.get_rng_state(), python_rng=random.getstate(),
        numpy_rng=np.random.get_state(legacy=False),
    )
    if device.type == "cuda":
        state.cuda_device = torch.cuda.current_device()
        state.cuda_stream = torch.cuda.current_stream()
        state.cuda_rng = torch.cuda.get_rng_state(state.cuda_device)
    return state


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the directory was removed under us
        return ""


def changes(before: ProcessState, after: ProcessState) -> list[str]:
    """What differs, one phrase each, in words a kernel engineer can act on."""
    found = []
    if after.cwd != before.cwd:
        found.append(f"changed the working directory to {after.cwd or '(a removed folder)'}")
    changed = sorted(k for k in before.environ.keys() | after.environ.keys()
                     if before.environ.get(k) != after.environ.get(k))
    if changed:
        found.append(f"changed the environment ({', '.join(changed[:4])}"
                     f"{', ...' if len(changed) > 4 else ''})")
    if after.default_dtype != before.default_dtype:
        found.append(f"set the default dtype to {str(after.default_dtype).replace('torch.', '')}")
    if after.grad_enabled != before.grad_enabled:
        found.append(f"{'enabled' if after.grad_enabled else 'disabled'} autograd globally")
    started = after.threads - before.threads
    if started:
        names = [t.name for t in started]
        found.append(f"left {len(started)} thread{'s' if len(started) > 1 else ''} running "
                     f"({', '.join(names[:3])})")
    if not torch.equal(after.cpu_rng, before.cpu_rng):
        found.append("changed the torch CPU RNG state (reseeded or drew random numbers)")
    if after.python_rng != before.python_rng:
        found.append("changed Python's random state")
    if not _same_numpy_rng(after.numpy_rng, before.numpy_rng):
        found.append("changed numpy's global random state")
    if after.cuda_device != before.cuda_device:
        found.append(f"switched the current CUDA device to {after.cuda_device}")
    if after.cuda_stream != before.cuda_stream:
        found.append("switched the current CUDA stream (and left it switched)")
    if after.cuda_rng is not None and before.cuda_rng is not None and \
            not torch.equal(after.cuda_rng, before.cuda_rng):
        found.append("changed the CUDA RNG state (reseeded or drew random numbers)")
    return found


def _same_numpy_rng(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_numpy_rng(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def started_since(before: ProcessState) -> list[threading.Thread]:
    """Threads alive now that were not when ``before`` was taken."""
    return [t for t in threading.enumerate() if t.is_alive() and t not in before.threads]


def restore(state: ProcessState) -> None:
    """Put back what can be put back (a thread cannot be; it stays reported)."""
    if state.cwd and _cwd() != state.cwd:
        os.chdir(state.cwd)
    now = _environment()
    if now != state.environ:
        for key in now.keys() - state.environ.keys():
            del os.environ[key]
        os.environ.update(state.environ)
    torch.set_default_dtype(state.default_dtype)
    torch.set_grad_enabled(state.grad_enabled)
    torch.set_rng_state(state.cpu_rng)
    random.setstate(state.python_rng)
    np.random.set_state(state.numpy_rng)
    if state.cuda_device is not None:
        torch.cuda.set_device(state.cuda_device)
        torch.cuda.set_stream(state.cuda_stream)
        torch.cuda.set_rng_state(state.cuda_rng, state.cuda_device)
