"""The registry of implementations: names -> callables, and whether each is expected safe.

Built-in kernels take ``fill`` as one extra keyword; an outside implementation takes it only if
its signature has ``fill`` (or ``**kwargs``), and is otherwise judged against the run's fill.
Outside implementations are ``package.module:function`` or ``path/to/file.py:function``;
targets are imported lazily (after backend.prepare).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from diffcheck.errors import ImplementationLoadError, UnknownNameError, UsageError
from diffcheck.paths import PATHS


@dataclass(frozen=True)
class Implementation:
    """One callable with a path's call signature."""

    name: str
    target: str
    safe: bool
    summary: str
    accepts_fill: bool = True

    def __post_init__(self) -> None:
        path, _, variant = self.name.partition(":")
        if path not in PATHS or not variant:
            raise ValueError(f"Implementation {self.name!r}: expected '<path>:<variant>' with a "
                             f"known path ({', '.join(PATHS)})")
        if ":" not in self.target:
            raise ValueError(f"Implementation {self.name!r}: target {self.target!r} is not "
                             "'module:function'")

    @property
    def path(self) -> str:
        return self.name.partition(":")[0]

    def load(self) -> Callable:
        """Import the target (``module:function`` or ``path/to/file.py:function``)."""
        where, _, attr = self.target.rpartition(":")
        try:
            module = _import_file(where) if where.endswith(".py") else \
                importlib.import_module(where)
        except ImplementationLoadError:
            raise
        except Exception as e:
            raise ImplementationLoadError(f"implementation '{self.name}': {where} does not "
                                          f"import ({type(e).__name__}: {e})") from None
        fn = module
        for part in attr.split("."):
            fn = getattr(fn, part, None)
        if not callable(fn):
            raise ImplementationLoadError(f"implementation '{self.name}': {where} has no "
                                          f"callable '{attr}'")
        return fn


def _import_file(file: str):
    """Import a kernel file by path (its folder joins sys.path so its own imports work)."""
    path = Path(file).resolve()
    if not path.is_file():
        raise ImplementationLoadError(f"implementation file {file} does not exist")
    name = "diffcheck_outside_" + "".join(c if c.isalnum() else "_" for c in str(path))
    if name in sys.modules:
        return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def outside(target: str, path: str) -> Implementation:
    """An implementation outside the registry: ``module:function`` or ``file.py:function``."""
    if path not in PATHS:
        raise UsageError(f"--impl {target} is not a registered name, so diffcheck needs the "
                         f"contract it follows: add --path {' or --path '.join(PATHS)}")
    where, _, attr = target.rpartition(":")
    if not where or not attr:
        raise UnknownNameError(f"unknown implementation '{target}'; give a registered name "
                               "(see `diffcheck list`), module:function or file.py:function")
    probe = Implementation(f"{path}:{target}", target, False, f"outside: {target}")
    fn = probe.load()
    accepts_fill = check_signature(fn, path, probe.name)
    return Implementation(probe.name, target, False, f"outside: {target}", accepts_fill)


def check_signature(fn: Callable, path: str, name: str) -> bool:
    """Fail unless ``fn`` takes the path's call; return whether it also takes ``fill=``."""
    spec = PATHS[path]
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False  # a builtin or C callable: trust it
    call = [object()] * len(spec.tensors)
    try:
        signature.bind(*call, **spec.scalars(2048), out=None)
    except TypeError as e:
        raise ImplementationLoadError(
            f"implementation '{name}' does not fit the {path} call "
            f"({', '.join(spec.tensors)}, {', '.join(spec.scalars(2048))}, out=): {e}; "
            f"its signature is {signature}") from None
    params = signature.parameters.values()
    return any(p.name == "fill" or p.kind is p.VAR_KEYWORD for p in params)


BUILTIN: dict[str, Implementation] = {
    impl.name: impl
    for impl in (
        Implementation("decode:guarded", "kernels.decode:decode_guarded", True,
                       "bounds every load and store; walks qo_indptr's rows, clamped to R"),
        Implementation("decode:pid", "kernels.decode:decode_pid", True,
                       "row from the program id; never reads qo_indptr"),
        Implementation("decode:unguarded", "kernels.decode:decode_unguarded", False,
                       "a fixture for the checker: the kernel that faulted under graph replay"),
        Implementation("decode:reference", "refimpl.decode:decode_reference_impl", True,
                       "the pure-torch reference run as an implementation"),
        Implementation("mtp:guarded", "kernels.mtp:mtp_guarded", True,
                       "bounds the request id, every position, gather and store"),
        Implementation("mtp:unguarded", "kernels.mtp:mtp_unguarded", False,
                       "a fixture for the checker: trusts token_to_seq_idxs and positions"),
        Implementation("mtp:reference", "refimpl.mtp:mtp_reference_impl", True,
                       "the pure-torch reference run as an implementation"),
    )
}


def find(name: str, path: str = "all") -> Implementation:
    """A registered name, or an outside ``module:function`` / ``file.py:function`` (which
    needs ``path``: the contract it follows)."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name.partition(":")[0] in PATHS and name.count(":") == 1 and ".py" not in name:
        known = ", ".join(sorted(BUILTIN))
        raise UnknownNameError(f"unknown implementation '{name}'; known: {known}")
    if ":" not in name:
        known = ", ".join(sorted(BUILTIN))
        raise UnknownNameError(f"unknown implementation '{name}'; known: {known} (or give "
                               "module:function or file.py:function with --path)")
    return outside(name, path)


def defaults(paths: list[str]) -> list[Implementation]:
    """The implementations registered as safe, for the selected paths."""
    return [impl for impl in BUILTIN.values() if impl.safe and impl.path in paths]
