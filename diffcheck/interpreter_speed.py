"""Two of the Triton interpreter's own costs removed while diffcheck runs kernels (CPU).

Measured on the default command, the interpreter spends about a quarter of its time on two
things that give the same answer every time:

- ``_get_np_dtype`` builds a dictionary of 19 dtypes on every call (about 1.9 million calls
  in one default run): the answer is kept per dtype;
- every call of a ``@triton.jit`` helper from inside a kernel patches ``triton.language``
  again (``_patch_lang``: ``inspect.getmembers`` over four modules and classes), although the
  launch in progress patched the same modules already and the patch is never undone: the
  helper's call skips it when every language module it sees is patched by that launch.

What a kernel computes is untouched: only these two functions are wrapped, and both are put
back on exit, so other code in the process sees triton as it was. A triton without them
(the interpreter's internals change between versions) runs as it is; triton 3.4 and 3.5,
whose patch of ``triton.language`` is never undone, keep only the dtype cache.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator


class _Unpatched:
    """The scope of a patch that was not needed: nothing to restore."""

    def restore(self) -> None:
        return None


@contextlib.contextmanager
def faster_interpreter() -> Iterator[None]:
    """Inside: the interpreter's dtype lookup cached, and jit helpers called from a kernel
    without patching ``triton.language`` again."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        yield
        return
    get_np_dtype = getattr(interpreter, "_get_np_dtype", None)
    patch_lang = getattr(interpreter, "_patch_lang", None)
    if get_np_dtype is None:
        yield
        return
    import triton.language as tl

    languages = (tl, tl.core)
    dtypes: dict[object, object] = {}
    #: ids of the language modules patched by the launch in progress
    patched: set[int] = set()

    def cached_np_dtype(tt_dtype):
        try:
            return dtypes[tt_dtype]
        except KeyError:
            found = dtypes[tt_dtype] = get_np_dtype(tt_dtype)
            return found
        except TypeError:  # an unhashable dtype: asked each time
            return get_np_dtype(tt_dtype)

    def patch_once(fn):
        seen = {id(value) for value in fn.__globals__.values()
                if inspect.ismodule(value) and value in languages}
        if seen and seen <= patched:
            return _Unpatched()
        scope = patch_lang(fn)
        if scope is None:  # triton 3.4, 3.5: patched for good, nothing to restore or track
            return scope
        patched.update(seen)
        undo = scope.restore

        def restore() -> None:
            patched.clear()  # the launch's patch is undone: the next one patches again
            undo()

        scope.restore = restore
        return scope

    interpreter._get_np_dtype = cached_np_dtype
    if patch_lang is not None:
        interpreter._patch_lang = patch_once
    try:
        yield
    finally:
        interpreter._get_np_dtype = get_np_dtype
        if patch_lang is not None:
            interpreter._patch_lang = patch_lang
