"""Three of the Triton interpreter's own costs removed while diffcheck runs kernels (CPU).

Measured on the default command, the interpreter spends about a third of its time on things
that give the same answer every time:

- ``_get_np_dtype`` builds a dictionary of 19 dtypes on every call (about 1.9 million calls
  in one default run): the answer is kept per dtype;
- every call of a ``@triton.jit`` helper from inside a kernel patches ``triton.language``
  again (``_patch_lang``: ``inspect.getmembers`` over four modules and classes), although the
  launch in progress patched the same modules already and the patch is never undone: the
  helper's call skips it when every language module it sees is patched by that launch;
- every ``tl`` operation builds its result's type and tensor anew: a block type checks its
  shape and formats its name, a tensor wraps its shape in a tuple of constexprs (about 4
  million tensors and 1.3 million block types in one default run, a sixth of its time):
  those of one shape share what was built the first time.

What a kernel computes is untouched: only these functions are wrapped, and all are put
back on exit, so other code in the process sees triton as it was. A triton without them
(the interpreter's internals change between versions) runs as it is; triton 3.4 and 3.5,
whose patch of ``triton.language`` is never undone, keep the other two.
"""

from __future__ import annotations

import builtins
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

    dtypes: dict[object, object] = {}

    def cached_np_dtype(tt_dtype):
        try:
            return dtypes[tt_dtype]
        except KeyError:
            found = dtypes[tt_dtype] = get_np_dtype(tt_dtype)
            return found
        except TypeError:  # an unhashable dtype: asked each time
            return get_np_dtype(tt_dtype)

    interpreter._get_np_dtype = cached_np_dtype
    if patch_lang is not None:
        interpreter._patch_lang = _patching_once(patch_lang, (tl, tl.core))
    try:
        with _shared_types(tl.core):
            yield
    finally:
        interpreter._get_np_dtype = get_np_dtype
        if patch_lang is not None:
            interpreter._patch_lang = patch_lang


def _patching_once(patch_lang, languages: tuple):
    """``_patch_lang`` that skips a jit helper whose language modules the launch in progress
    patched already (and tracks when that launch's patch is undone)."""
    #: ids of the language modules patched by the launch in progress
    patched: set[int] = set()
    #: (id, size) of a helper's globals -> the ids of the language modules among them
    modules_in: dict[tuple[int, int], frozenset[int]] = {}

    def patch_once(fn):
        names = fn.__globals__
        key = (id(names), len(names))
        seen = modules_in.get(key)
        if seen is None:
            seen = modules_in[key] = frozenset(
                id(value) for value in names.values()
                if inspect.ismodule(value) and value in languages)
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

    return patch_once


#: what the two constructors set, checked on their first call (another triton: not shared)
TENSOR_FIELDS = {"handle", "shape", "numel", "type", "dtype"}
BLOCK_FIELDS = {"element_ty", "shape", "numel", "name"}


@contextlib.contextmanager
def _shared_types(core) -> Iterator[None]:
    """Tensors and block types of one shape share what their constructors build anew each
    time: a tensor's shape as a tuple of constexprs and its size, a block type's checked
    shape, size and name. Where a constructor sets other fields than these (another triton),
    it runs as it is."""
    tensor, block_type = getattr(core, "tensor", None), getattr(core, "block_type", None)
    if tensor is None or block_type is None:
        yield
        return
    tensor_init, block_init = tensor.__init__, block_type.__init__
    constexpr = core.constexpr
    shapes_taken = (list, core.tuple)
    shapes: dict = {}
    blocks: dict = {}
    plain = {"tensor": False, "block": False}

    def shared_tensor_init(self, handle, type):
        shape = type.shape if type.is_block() else ()
        try:
            numel, shared = shapes[shape]
        except (KeyError, TypeError):
            tensor_init(self, handle, type)
            if plain["tensor"] or vars(self).keys() != TENSOR_FIELDS:
                plain["tensor"] = True
            else:
                with contextlib.suppress(TypeError):
                    shapes[shape] = (self.numel, self.shape)
            return
        self.handle = handle
        self.numel = numel
        self.type = type
        self.dtype = type.scalar
        self.shape = shared

    def shared_block_init(self, element_ty, shape):
        key = None
        try:
            if shape.__class__ not in shapes_taken:  # what the constructor refuses, it refuses
                raise TypeError
            key = (str(element_ty), builtins.tuple(s.value if s.__class__ is constexpr else s
                                                   for s in shape))
            checked, numel, name = blocks[key]
        except (KeyError, TypeError):
            block_init(self, element_ty, shape)
            if plain["block"] or vars(self).keys() != BLOCK_FIELDS:
                plain["block"] = True
            elif key is not None:
                with contextlib.suppress(TypeError):
                    blocks[key] = (self.shape, self.numel, self.name)
            return
        self.element_ty = element_ty
        self.shape = checked
        self.numel = numel
        self.name = name

    tensor.__init__, block_type.__init__ = shared_tensor_init, shared_block_init
    try:
        yield
    finally:
        tensor.__init__, block_type.__init__ = tensor_init, block_init
