"""Implementations: named callables with a path's call, and whether each is expected safe.

The built-in ones are declared by their path's plug-in (diffcheck.paths); an outside one is
``package.module:function`` or ``path/to/file.py:function`` with ``--path``. Targets are
imported lazily, after backend.prepare (the Triton interpreter must be set up first). Once
loaded, an implementation knows the keywords its signature takes: a scalar, the fill or the
output workspace it has no keyword for is not passed, and it is judged accordingly.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import multiprocessing
import os
import select
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from diffcheck.errors import ImplementationLoadError, UnknownNameError, UsageError


@dataclass(frozen=True)
class Implementation:
    """One callable with a path's call signature."""

    #: "<path>:<variant>"
    name: str
    target: str
    safe: bool
    summary: str
    #: the keywords its signature takes; None: any (``**kwargs``, or no signature to read)
    keywords: frozenset[str] | None = None
    #: the default BLOCK_N its signature declares, when it has one
    block_n: int | None = None
    #: an outside implementation (its target, not its name, reproduces it)
    outside: bool = False

    def __post_init__(self) -> None:
        path, _, variant = self.name.partition(":")
        if not path or not variant:
            raise ValueError(f"Implementation {self.name!r}: expected '<path>:<variant>'")
        if ":" not in self.target:
            raise ValueError(f"Implementation {self.name!r}: target {self.target!r} is not "
                             "'module:function'")

    @property
    def path(self) -> str:
        return self.name.partition(":")[0]

    def accepts(self, keyword: str) -> bool:
        return self.keywords is None or keyword in self.keywords

    @property
    def accepts_fill(self) -> bool:
        return self.accepts("fill")

    def load(self) -> Callable:
        """Import the target (``module:function`` or ``path/to/file.py:function``)."""
        where, _, attr = self.target.rpartition(":")
        if self.outside:
            _probe_import(self.name, where)
        try:
            module = _import_file(where) if where.endswith(".py") else \
                importlib.import_module(where)
        except ImplementationLoadError:
            raise
        except (Exception, SystemExit, KeyboardInterrupt) as e:
            # a module that exits or raises KeyboardInterrupt while importing does not
            # import: it must not end diffcheck's run as if it were diffcheck's own exit
            raise ImplementationLoadError(f"implementation '{self.name}': {where} does not "
                                          f"import ({_why(e)})") from None
        fn = module
        for part in attr.split("."):
            fn = getattr(fn, part, None)
        if not callable(fn):
            raise ImplementationLoadError(f"implementation '{self.name}': {where} has no "
                                          f"callable '{attr}'")
        return fn

    def described(self) -> Implementation:
        """This implementation with the keywords of its loaded signature, checked against its
        path's call (one line naming what does not fit)."""
        fn = self.load()
        keywords, block_n = check_signature(fn, self.path, self.name)
        return dataclasses.replace(self, keywords=keywords, block_n=block_n)


def _why(error: BaseException) -> str:
    if isinstance(error, SystemExit):
        return f"it called sys.exit({error.code!r}) while importing"
    return f"{type(error).__name__}: {error}"


#: seconds an import may take in the probe before it is left to the real import
PROBE_SECONDS = 120.0
_probed: set[str] = set()


def _probe_import(name: str, where: str) -> None:
    """Import an outside module once in a forked child first: a module that ends its process
    while importing (``os._exit``, a signal to itself) would otherwise end diffcheck's run with
    its exit status (an exit 0 with no rows). Inconclusive probes (no fork, a crash of the
    child itself, a slow import) leave the verdict to the real import."""
    if where in _probed or not hasattr(os, "fork") or multiprocessing.parent_process():
        return  # a worker: the run's own process probed it before starting any
    _probed.add(where)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # a multi-threaded parent
        pid = os.fork()
    if pid == 0:  # the child: import, say whether it came back, never return
        try:
            os.close(read_end)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            try:
                _import_file(where) if where.endswith(".py") else importlib.import_module(where)
                os.write(write_end, b"imported")
            except BaseException:  # noqa: BLE001 - the real import reports it
                os.write(write_end, b"raised")
        finally:
            os._exit(0)
    os.close(write_end)
    said, status = _child_result(pid, read_end)
    if said or status is None or os.WIFSIGNALED(status):
        return
    code = os.WEXITSTATUS(status)
    raise ImplementationLoadError(
        f"implementation '{name}': {where} does not import (it ended its process with exit "
        f"status {code} while importing, e.g. os._exit({code}))")


def _child_result(pid: int, read_end: int) -> tuple[bytes, int | None]:
    """What the probe child wrote and its wait status (None: still importing after
    PROBE_SECONDS, then killed)."""
    deadline = time.monotonic() + PROBE_SECONDS
    said = b""
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return said, None
            chunk = os.read(read_end, 64)
            if not chunk:
                break
            said += chunk
    finally:
        os.close(read_end)
    return said, os.waitpid(pid, 0)[1]


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


def check_signature(fn: Callable, path: str,
                    name: str) -> tuple[frozenset[str] | None, int | None]:
    """Fail unless ``fn`` takes the path's tensors positionally and needs nothing else;
    return the keywords it takes (None: any) and its default BLOCK_N."""
    from diffcheck.paths import get_path

    spec = get_path(path)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None, None  # a builtin or C callable: trust it
    params = list(signature.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        keywords = None
    else:
        keywords = frozenset(p.name for p in params[len(spec.positional):]
                             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    # K and the scalars go by keyword when the signature has them (a scalar may be required)
    probe = {kw: 1 for kw in [spec.k_keyword, *(next(
        (k for k in s.keywords if keywords is None or k in keywords), None)
        for s in spec.scalars)] if kw and (keywords is None or kw in keywords)}
    try:
        signature.bind(*[object()] * len(spec.positional), **probe)
    except TypeError as e:
        raise ImplementationLoadError(
            f"implementation '{name}' does not fit the {path} call "
            f"({', '.join(spec.positional)}, {spec.k_keyword}=, ...): {e}; its signature is "
            f"{signature}") from None
    default = signature.parameters.get("BLOCK_N")
    block_n = default.default if default is not None and isinstance(default.default, int) \
        else None
    return keywords, block_n


def builtin() -> dict[str, Implementation]:
    """Every path's built-in implementations, by name."""
    from diffcheck.paths import known_paths

    return {impl.name: impl for spec in known_paths().values() for impl in spec.implementations}


def outside(target: str, path: str) -> Implementation:
    """An implementation outside the registry: ``module:function`` or ``file.py:function``."""
    from diffcheck.paths import known_paths

    paths = known_paths()
    if path not in paths:
        raise UsageError(f"--impl {target} is not a registered name, so diffcheck needs the "
                         f"contract it follows: add --path {' or --path '.join(paths)}")
    where, _, attr = target.rpartition(":")
    if not where or not attr:
        raise UnknownNameError(f"unknown implementation '{target}'; give a registered name "
                               "(see `diffcheck list`), module:function or file.py:function")
    if where.endswith(".py"):  # resolved once: a kernel that changes directory cannot move it
        target = f"{Path(where).resolve()}:{attr}"
    probe = Implementation(f"{path}:{target}", target, False, f"outside: {target}",
                           outside=True)
    return probe.described()


def find(name: str, path: str = "all") -> Implementation:
    """A registered name, or an outside ``module:function`` / ``file.py:function`` (which
    needs ``path``: the contract it follows); loaded and described."""
    from diffcheck.paths import known_paths

    registered = builtin()
    if name in registered:
        return registered[name].described()
    prefix = name.partition(":")[0]
    if prefix in known_paths() and name.count(":") == 1 and ".py" not in name:
        mine = [n for n in registered if n.partition(":")[0] == prefix]
        raise UnknownNameError(f"unknown implementation '{name}'; known: {', '.join(mine)}")
    if ":" not in name:
        raise UnknownNameError(f"unknown implementation '{name}'; known: "
                               f"{', '.join(sorted(registered))} (or give module:function or "
                               "file.py:function with --path)")
    return outside(name, path)


def defaults(paths: list[str]) -> list[Implementation]:
    """The implementations registered as safe, for the selected paths, described."""
    return [impl.described() for impl in builtin().values() if impl.safe and impl.path in paths]
