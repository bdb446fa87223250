"""The registry of implementations: names -> callables, and whether each is expected safe.

Built-in kernels take ``fill`` as one extra keyword; an outside implementation cannot and is
judged against the run's fill. Targets are imported lazily (after backend.prepare).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from diffcheck.errors import ImplementationLoadError, UnknownNameError
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
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as e:
            raise ImplementationLoadError(f"implementation '{self.name}': module {module_name} "
                                          f"does not import ({type(e).__name__}: {e})") from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise ImplementationLoadError(f"implementation '{self.name}': {module_name} has no "
                                          f"callable '{attr}'")
        return fn


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


def find(name: str) -> Implementation:
    try:
        return BUILTIN[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN))
        raise UnknownNameError(f"unknown implementation '{name}'; known: {known}") from None


def defaults(paths: list[str]) -> list[Implementation]:
    """The implementations registered as safe, for the selected paths."""
    return [impl for impl in BUILTIN.values() if impl.safe and impl.path in paths]
