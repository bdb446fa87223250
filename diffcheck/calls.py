"""How an implementation is called on a staged case, and what its row is judged with.

The path's tensors go positionally; K, each of the path's scalars, the fill and the output
workspace go by the keywords the implementation's signature takes (the contract's own names
first, then the aliases a path declares, such as TensorRT-LLM's ``stride_factor`` for vLLM's
``BLOCK_STRIDE_ROWS``). A value a kernel cannot be given is not given, and the row is judged
as if the case held the default: the reference always answers the call the kernel got.
An implementation without the output keyword returns its output (vLLM's converter does): it
is checked for dtype and size and copied into the staged workspace, so every check after it
is the same; what cannot be seen for such a tensor is a write past its end on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from diffcheck.buffers import POISON, Staged
from diffcheck.case import Case
from diffcheck.impls import Implementation
from diffcheck.paths import PathSpec

#: the other contract's fill (ATOM 0 <-> vLLM/SGLang -1)
OTHER_FILL = {0: -1, -1: 0}


@dataclass(frozen=True)
class Contract:
    """What a row is judged with: K, the fill and every scalar as the kernel was given them."""

    k: int
    fill: int
    scalars: dict[str, int] = field(default_factory=dict)
    #: the kernel is called without its output keyword (it allocates and returns the output)
    without_out: bool = False

    def key(self) -> tuple:
        return (self.k, self.fill, tuple(sorted(self.scalars.items())))


def contract_of(spec: PathSpec, impl: Implementation, case: Case,
                fill_override: int | None) -> Contract:
    """The case's values as ``impl`` can be given them. The fill is the case's (or
    --invalid-fill's); a case that asks for the other contract's fill gets it when the
    implementation takes ``fill=``, so one that ignores its fill argument is caught."""
    fill = case.fill if fill_override is None else fill_override
    if case.fill_swapped and impl.accepts_fill:
        fill = OTHER_FILL.get(fill, fill)
    scalars = spec.scalars_of(case.scalars)
    for scalar in spec.scalars:
        unreachable = scalar.keywords and keyword_for(impl, scalar.keywords) is None
        if unreachable or (scalar.requires and not impl.accepts(scalar.requires)):
            scalars[scalar.name] = scalar.default
    return Contract(case.k, fill, scalars, case.without_out)


def keyword_for(impl: Implementation, keywords: tuple[str, ...]) -> str | None:
    """The first of ``keywords`` the implementation takes."""
    return next((kw for kw in keywords if impl.accepts(kw)), None)


def fitting_block_n(default: int | None, k: int) -> int | None:
    """A BLOCK_N for a kernel whose default does not divide K (engines assert
    ``NUM_TOPK_TOKENS % BLOCK_N == 0``): the largest power of two under it that does."""
    if not default or k % default == 0:
        return None
    block = 1 << (max(default, 1).bit_length() - 1)
    while block > 1 and k % block:
        block //= 2
    return block


def bind(spec: PathSpec, impl: Implementation, fn: Callable, staged: Staged,
         contract: Contract) -> Callable[[], object]:
    """The implementation's call on ``staged``: outputs end in the staged workspace (and
    ``staged.extras``) whichever way the kernel hands them back."""
    tensors = staged.tensors()
    args = spec.call_args(tensors)
    kwargs: dict[str, object] = {}
    if impl.accepts(spec.k_keyword):
        kwargs[spec.k_keyword] = contract.k
    for scalar in spec.scalars:
        keyword = keyword_for(impl, scalar.keywords)
        value = contract.scalars[scalar.name]
        if keyword is not None and not (scalar.omit_default and value == scalar.default):
            kwargs[keyword] = value
    for tensor in spec.tensors:
        if tensor.keyword and impl.accepts(tensor.name) and \
                (not tensor.when or contract.scalars.get(tensor.when)):
            kwargs[tensor.name] = tensors[tensor.name]
    if impl.accepts_fill:
        kwargs["fill"] = contract.fill
    if impl.outside:
        block_n = fitting_block_n(impl.block_n, contract.k)
        if block_n is not None:
            kwargs["BLOCK_N"] = block_n
    out = staged.out.view
    if spec.out_layout == "rows":
        out = out.view(-1, contract.k)
    writes_out = impl.accepts(spec.out_keyword) and not contract.without_out
    staged.returned = not writes_out
    staged.returned_tensor = None
    if writes_out:
        kwargs[spec.out_keyword] = out
    asked = [extra for extra in spec.extras if contract.scalars.get(extra.scalar)]
    out_ptr = out.data_ptr()

    def call() -> object:
        if writes_out:
            result = fn(*args, **kwargs)
        else:
            with PoisonedAllocations():
                result = fn(*args, **kwargs)
        values = list(result) if isinstance(result, (tuple, list)) else [result]
        main = values[0] if values else None
        if writes_out:
            if isinstance(main, torch.Tensor) and main.data_ptr() != out_ptr:
                raise RuntimeError("returned a tensor other than the out= workspace it was "
                                   "given")
        else:
            staged.out.view.copy_(_returned(main, "its output", out.shape))
            staged.returned_tensor = main
        if len(values) < 1 + len(asked):
            raise RuntimeError(f"returned {len(values)} values; asked for "
                               f"{', '.join(e.name for e in asked)} it should return "
                               f"{1 + len(asked)}")
        for extra, value in zip(asked, values[1:], strict=False):
            staged.extras[extra.name] = _returned(value, extra.name, None)
        return result

    return call


class PoisonedAllocations(TorchDispatchMode):
    """Every int32 tensor allocated during a call without out= starts as POISON, so that the
    elements of a returned output the kernel never writes read as unwritten, alike in every
    run, not as whatever the allocator handed back (old red zones that differ between
    fillings and once looked like a filling-dependent read)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func.overloadpacket in _EMPTY and isinstance(result, torch.Tensor) \
                and result.dtype == torch.int32 and 0 not in result.stride():
            result.fill_(POISON)
        return result


_EMPTY = tuple(getattr(torch.ops.aten, name) for name in (
    "empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided", "empty_permuted")
    if hasattr(torch.ops.aten, name))


def _returned(value: object, what: str, shape) -> torch.Tensor:
    """A returned output, checked: an int32 tensor of the expected shape, as a flat view."""
    if not isinstance(value, torch.Tensor):
        raise RuntimeError(f"returned {type(value).__name__} as {what}, expected an int32 "
                           "tensor")
    if value.dtype != torch.int32:
        raise RuntimeError(f"returned {what} as {str(value.dtype).replace('torch.', '')}, "
                           "expected int32")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise RuntimeError(f"returned {what} of shape {list(value.shape)}, expected "
                           f"{list(shape)}")
    return value.reshape(-1)
