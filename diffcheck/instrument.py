"""Bounds-checked compilation: a kernel's loads and stores check their own addresses.

On a GPU diffcheck sees a read only through what its value changes; a kernel that reads one
element past an indptr and then bounds what it read by its own checks leaves no trace. So
while an implementation call runs, every Triton launch it makes launches an instrumented copy
of the kernel instead: the same source, each ``tl.load`` / ``tl.store`` / ``tl.atomic_*``
(in the kernel and in the jit functions it calls) given a check of its addresses, under its
own mask, against the extents of the tensors the launch was given. A lane outside all of them
is counted into a small device buffer with atomics (so it works inside CUDA graphs and never
traps) and masked off, as the interpreter sandbox neutralises it (a load yields its
``other``, a store is dropped); a store into an input is counted too. The kernel's own
arithmetic is untouched. The host reads the buffer after each call and names the nearest
tensor as the sandbox does (diffcheck.sandbox): the same ``oob_read`` / ``oob_write`` /
``input_write`` findings, found by ``instrumented``.

Where the checks cannot go (block pointers, tensor descriptors, inline assembly, a kernel that
does not compile once instrumented, a launcher that calls a compiled binary, torch code), the
kernel runs as written, the row says so, and red zones alone find its reads.
"""

from __future__ import annotations

import ast
import builtins
import copy
import inspect
import itertools
import os
import re
import tempfile
import textwrap
from dataclasses import dataclass, field

import numpy as np
import torch

from diffcheck.findings import FoundBy
from diffcheck.sandbox import Access, Bounds

#: int64 words per site: [lanes, lowest address, highest, first program] for the lanes out of
#: bounds, then the same for a store's lanes into an input
WORDS = 8
#: sites (instrumented loads, stores and atomics) a process may hold
MAX_SITES = 1 << 14
#: the word after the counters where an out-of-bounds atomic_cas lands instead (16-byte
#: aligned, room for any element size)
SCRATCH = MAX_SITES * WORDS
INT64_MAX, INT64_MIN = (1 << 63) - 1, -(1 << 63)
FOUND_BY = FoundBy.INSTRUMENTED

#: tl functions that access memory: kind of access, position of the mask (None: no mask)
MEMORY = {"load": ("read", 1), "store": ("write", 2), "atomic_add": ("write", 2),
          "atomic_and": ("write", 2), "atomic_or": ("write", 2), "atomic_xor": ("write", 2),
          "atomic_max": ("write", 2), "atomic_min": ("write", 2), "atomic_xchg": ("write", 2),
          "atomic_cas": ("write", None)}
#: tl functions whose accesses the checks cannot see, and what to call them
UNCHECKABLE = {"make_block_ptr": "block pointers", "advance": "block pointers",
               "make_tensor_descriptor": "tensor descriptors",
               "load_tensor_descriptor": "tensor descriptors",
               "store_tensor_descriptor": "tensor descriptors",
               "_experimental_descriptor_load": "tensor descriptors",
               "_experimental_descriptor_store": "tensor descriptors",
               "inline_asm_elementwise": "inline assembly"}


@dataclass(frozen=True)
class Site:
    """One instrumented access in the source: where a finding says it happened."""

    kernel: str
    line: int
    kind: str  # "read" or "write"

    def where(self) -> str:
        return f"{self.kernel} line {self.line}"


@dataclass
class Copy:
    """A kernel's instrumented twin, for launches whose tensor arguments are ``pointers``
    (each gets its extent as extra arguments, _extra_names)."""

    fn: object
    pointers: tuple[str, ...]
    reverse: bool = False


class Uncheckable(Exception):
    """The kernel holds something the checks cannot see; the message says what."""


_sites: list[Site] = []
#: (id of the kernel, its tensor arguments, programs reversed) -> (the kernel, kept so its id
#: stays its own; the copy, or why there is none)
_copies: dict[tuple[int, tuple[str, ...], bool], tuple[object, Copy | str]] = {}
_guards: dict[int, dict[str, object]] = {}
_buffers: dict[str, torch.Tensor] = {}
_folder: list[str] = []
_serial = itertools.count()


# -- the rewrite -----------------------------------------------------------------------------
def _kernel_types() -> tuple[type, ...]:
    from triton.runtime.jit import JITFunction

    types: list[type] = [JITFunction]
    try:
        from triton.runtime.interpreter import InterpretedFunction
        types.append(InterpretedFunction)
    except ImportError:  # pragma: no cover - every supported triton has it
        pass
    return tuple(types)


def _extra_names(n: int) -> list[str]:
    return ["_dc_found", *(f"_dc_{side}_{i}" for i in range(n) for side in ("lo", "hi")),
            "_dc_ro"]


def _write_module(text: str, stem: str) -> tuple[dict, str]:
    """Execute generated source from a real file (triton reads a jit function's source back
    through ``inspect``); the file stays for a curious user until the process ends."""
    if not _folder:
        _folder.append(tempfile.mkdtemp(prefix="diffcheck-instrumented-"))
    path = os.path.join(_folder[0], f"{stem}_{next(_serial)}.py")
    with open(path, "w") as f:
        f.write(text)
    return {"__file__": path, "__name__": f"diffcheck_instrumented_{stem}"}, path


#: the jit helpers' source: every access checked against each of n extents
_GUARDS = '''"""diffcheck's bounds checks for launches with {n} tensor arguments (generated)."""
import triton
import triton.language as tl


@triton.jit
def _dc_check(ptr, mask, _dc_found, SITE: tl.constexpr, STORE: tl.constexpr,
              REVERSED: tl.constexpr, {params}):
    a = ptr.to(tl.int64)
    e = (ptr + 1).to(tl.int64) - a
    # every condition a block of a's shape (a scalar and a block combined with & is an int32
    # mask to some interpreters, which refuse it)
    zero = a - a
    ok = zero != zero
{inside}
    live = zero == zero
    if mask is not None:  # a mask given as None (a helper's default) is no mask
        live = live & ((zero + mask.to(tl.int64)) != 0)
    bad = live & (ok == 0)
    slot = _dc_found + SITE * {WORDS} + zero
    pid = zero + tl.program_id(0)
    if REVERSED:  # the id the kernel itself sees
        pid = zero + _dc_reversed_pid(0)
    tl.atomic_add(slot, zero + 1, mask=bad)
    tl.atomic_min(slot + 1, a, mask=bad)
    tl.atomic_max(slot + 2, a, mask=bad)
    tl.atomic_min(slot + 3, pid, mask=bad)
    if STORE:
        into = zero != zero
{into}
        hit = live & ok & into
        tl.atomic_add(slot + 4, zero + 1, mask=hit)
        tl.atomic_min(slot + 5, a, mask=hit)
        tl.atomic_max(slot + 6, a, mask=hit)
        tl.atomic_min(slot + 7, pid, mask=hit)
    return live & ok


@triton.jit
def _dc_guard(ptr, mask, _dc_found, SITE: tl.constexpr, STORE: tl.constexpr,
              REVERSED: tl.constexpr, {params}):
    return _dc_check(ptr, mask, _dc_found, SITE, STORE, REVERSED, {params})


@triton.jit
def _dc_reversed_pid(axis: tl.constexpr):
    # the programs of a grid in the other order: the hardware dispatches low ids first
    return tl.num_programs(axis) - 1 - tl.program_id(axis)


@triton.jit
def _dc_note(ptr, _dc_found, SITE: tl.constexpr, REVERSED: tl.constexpr, {params}):
    # no mask to clear (atomic_cas): a lane out of bounds goes to diffcheck's scratch word
    ok = _dc_check(ptr, None, _dc_found, SITE, True, REVERSED, {params})
    a = ptr.to(tl.int64)
    e = (ptr + 1).to(tl.int64) - a
    scratch = (_dc_found + {SCRATCH}).to(tl.int64)
    return ptr + tl.where(ok, a - a, (scratch - a) // e)
'''


def _guards_for(n: int) -> dict[str, object]:
    """The jit helpers that check one access against ``n`` extents (generated once per n)."""
    if n in _guards:
        return _guards[n]
    params = ", ".join(_extra_names(n)[1:])
    inside = "\n".join(
        f"    ok = ok | ((a >= _dc_lo_{i}) & (a + e <= _dc_hi_{i}))" for i in range(n))
    into = "\n".join(
        f"        into = into | (((zero + ((_dc_ro >> {i}) & 1)) != 0) & (a + e > _dc_lo_{i}) & "
        f"(a < _dc_hi_{i}))" for i in range(n))
    text = _GUARDS.format(n=n, params=params, inside=inside, into=into, WORDS=WORDS,
                          SCRATCH=SCRATCH)
    scope, path = _write_module(text, f"guards{n}")
    exec(compile(text, path, "exec"), scope)  # noqa: S102 - our own generated source
    _guards[n] = {name: scope[name] for name in ("_dc_guard", "_dc_note", "_dc_reversed_pid")}
    return _guards[n]


def _source(kernel) -> tuple[ast.FunctionDef, int]:
    """The kernel's ``def`` (decorators dropped) and the line it starts on in its file."""
    fn = kernel.fn
    try:
        lines, first = inspect.getsourcelines(fn)
    except (OSError, TypeError) as e:
        raise Uncheckable(f"its source cannot be read ({e})") from None
    text = textwrap.dedent("".join(lines))
    start = re.search(r"^def\s+\w+\s*\(", text, re.MULTILINE)
    if start is None:
        raise Uncheckable("its source holds no def")
    skipped = text[: start.start()].count("\n")
    tree = ast.parse(text[start.start():])
    return tree.body[0], first + skipped


def _resolve(node: ast.expr, scope: dict) -> object:
    if isinstance(node, ast.Name):
        return scope.get(node.id, getattr(builtins, node.id, None))
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, scope)
        return getattr(base, node.attr, None) if base is not None else None
    return None


def _language_name(target: object) -> str:
    """``load`` for ``tl.load`` and the like (triton.language's own functions), else ''."""
    module = getattr(target, "__module__", "") or ""
    if module.startswith("triton.language") and callable(target):
        return getattr(target, "__name__", "")
    return ""


class _Rewriter(ast.NodeTransformer):
    """Adds the checks to one jit function's body (see the module docstring)."""

    def __init__(self, name: str, first_line: int, scope: dict, n: int,
                 callee, reverse: bool = False) -> None:
        self.name, self.first_line, self.scope, self.n = name, first_line, scope, n
        self.reverse = reverse  # tl.program_id(a) becomes num_programs(a) - 1 - program_id(a)
        self.callee = callee  # jit function -> the name its instrumented copy goes by
        self.extras = [ast.keyword(arg=x, value=ast.Name(id=x, ctx=ast.Load()))
                       for x in _extra_names(n)]

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        target = _resolve(node.func, self.scope)
        name = _language_name(target)
        if name in UNCHECKABLE:
            raise Uncheckable(f"it uses {UNCHECKABLE[name]} (tl.{name})")
        if isinstance(target, _kernel_types()):
            node.func = ast.Name(id=self.callee(target), ctx=ast.Load())
            node.keywords += copy.deepcopy(self.extras)
            return node
        if name in MEMORY:
            return self._checked(node, name)
        if name == "program_id" and self.reverse:
            node.func = ast.Name(id="_dc_reversed_pid", ctx=ast.Load())
            return node
        if (isinstance(node.func, ast.Attribute) and node.func.attr in ("load", "store")
                and target is None):
            raise Uncheckable(f"it calls .{node.func.attr}() on a local object (a tensor "
                              "descriptor?)")
        return node

    def _checked(self, node: ast.Call, name: str) -> ast.Call:
        kind, mask_at = MEMORY[name]
        keywords = {k.arg: k for k in node.keywords}
        if "boundary_check" in keywords or (name == "load" and len(node.args) > 3):
            raise Uncheckable("it loads through block pointers (boundary_check)")
        pointer = node.args[0] if node.args else keywords["pointer"].value
        for inner in ast.walk(pointer):  # the guard evaluates the pointer again
            if isinstance(inner, ast.Call) and _language_name(
                    _resolve(inner.func, self.scope)).startswith("atomic_"):
                raise Uncheckable("a pointer is computed by an atomic (checking it would run "
                                  "the atomic twice)")
        if len(_sites) >= MAX_SITES:
            raise Uncheckable(f"the process holds more than {MAX_SITES} checked accesses")
        site = len(_sites)
        _sites.append(Site(self.name, self.first_line + node.lineno - 1, kind))
        extras = copy.deepcopy(self.extras)
        if mask_at is None:  # atomic_cas has no mask: the check only records
            call = ast.Call(func=ast.Name(id="_dc_note", ctx=ast.Load()),
                            args=[pointer, ast.Name(id="_dc_found", ctx=ast.Load()),
                                  ast.Constant(site), ast.Constant(self.reverse)],
                            keywords=extras[1:])
            if node.args:
                node.args[0] = call
            else:
                keywords["pointer"].value = call
            return node
        if len(node.args) > mask_at:
            mask = node.args[mask_at]
        elif "mask" in keywords:
            mask = keywords["mask"].value
        else:
            mask = None
        guard = ast.Call(
            func=ast.Name(id="_dc_guard", ctx=ast.Load()),
            args=[copy.deepcopy(pointer), mask if mask is not None else ast.Constant(None),
                  ast.Name(id="_dc_found", ctx=ast.Load()), ast.Constant(site),
                  ast.Constant(kind == "write"), ast.Constant(self.reverse)],
            keywords=extras[1:])
        if len(node.args) > mask_at:
            node.args[mask_at] = guard
        elif "mask" in keywords:
            keywords["mask"].value = guard
        else:
            node.keywords.append(ast.keyword(arg="mask", value=guard))
        return node


def _instrumented(kernel, n: int, top: bool, made: dict[int, tuple[str, object]],
                  reverse: bool = False) -> object:
    """The instrumented copy of ``kernel`` (a jit function) checking against ``n`` extents;
    ``made`` holds the copies of the jit functions it calls, made once per launch's copy;
    ``reverse``: its programs take their ids in the other order (see Instrumented)."""
    tree, first_line = _source(kernel)
    fn = kernel.fn
    scope = dict(fn.__globals__)
    scope.update(inspect.getclosurevars(fn).nonlocals)
    scope.update(_guards_for(n))

    def callee(target) -> str:
        if id(target) not in made:
            made[id(target)] = (f"_dc_fn_{len(made)}",
                                _instrumented(target, n, False, made, reverse))
        name, instrumented = made[id(target)]
        scope[name] = instrumented
        return name

    tree = _Rewriter(fn.__name__, first_line, scope, n, callee, reverse).visit(tree)
    tree.decorator_list = []
    extra = _extra_names(n)
    tree.args.args += [ast.arg(arg=x) for x in extra]
    if tree.args.defaults:  # parameters after one with a default need defaults too
        tree.args.defaults += [ast.Constant(0) for _ in extra]
    ast.fix_missing_locations(tree)
    text = ("# diffcheck's instrumented copy of "
            f"{fn.__module__}.{fn.__qualname__} (generated)\n" + ast.unparse(tree) + "\n")
    module, path = _write_module(text, fn.__name__)
    scope.update(module)
    exec(compile(text, path, "exec"), scope)  # noqa: S102 - the kernel's own source, checked
    import triton

    options: dict[str, object] = {}
    compiled = isinstance(kernel, _kernel_types()[0])
    if top and compiled:  # the extents are values, not specialisations: one compile serves
        params, values = kernel.params, extra[1:]  # the extents, not the findings buffer
        options = {"do_not_specialize": [p.name for p in params if p.do_not_specialize] + values,
                   "do_not_specialize_on_alignment": [
                       p.name for p in params if p.do_not_specialize_on_alignment] + values,
                   "debug": kernel.debug, "noinline": kernel.noinline,
                   "launch_metadata": kernel.launch_metadata}
    elif compiled and kernel.noinline:
        options = {"noinline": True}
    made = triton.jit(scope[fn.__name__], **options)
    if top:
        made.pre_run_hooks = list(getattr(kernel, "pre_run_hooks", ()))
    return made


def copy_of(kernel, pointers: tuple[str, ...], reverse: bool = False) -> Copy | str:
    """The kernel's instrumented copy for launches whose tensor arguments are ``pointers``
    (programs in the other order with ``reverse``), or why there is none (made once per
    kernel, set of tensor arguments and order)."""
    key = (id(kernel), pointers, reverse)
    if key not in _copies:
        try:
            made: Copy | str = Copy(_instrumented(kernel, len(pointers), True, {}, reverse),
                                    pointers, reverse)
        except (Uncheckable, SyntaxError) as e:
            made = f"{_name(kernel)} is not instrumented: {e}"
        except Exception as e:  # a construct the rewrite does not know (tl.load(*args))
            made = (f"{_name(kernel)} is not instrumented: the rewrite failed "
                    f"({type(e).__name__}: {e})")
        _copies[key] = (kernel, made)
    return _copies[key][1]


def _tensor_of(value: object) -> torch.Tensor | None:
    """The tensor behind a pointer argument: a tensor, or the base of a wrapper that
    reinterprets one (``triton.reinterpret``)."""
    if isinstance(value, torch.Tensor):
        return value
    base = getattr(value, "base", None)
    if isinstance(base, torch.Tensor) and hasattr(value, "data_ptr"):
        return base
    return None


def _compile_errors() -> tuple[type[BaseException], ...]:
    """What the front end raises for a kernel that does not compile (before any launch)."""
    try:
        from triton.compiler.errors import CompilationError
    except ImportError:  # pragma: no cover - every supported triton has it
        return ()
    return (CompilationError,)


def _name(kernel) -> str:
    return getattr(kernel, "__name__", type(kernel).__name__)


def _fresh(device: torch.device) -> torch.Tensor:
    """The findings buffer of ``device``: one per process, so a graph captured with it keeps
    a live address; reset between calls, never during a capture."""
    key = str(device)
    if key not in _buffers:
        _buffers[key] = torch.zeros(SCRATCH + 2 * WORDS, dtype=torch.int64, device=device)
        _reset(_buffers[key][:SCRATCH].view(MAX_SITES, WORDS))
    return _buffers[key]


def _reset(rows: torch.Tensor) -> None:
    rows[:, 0::4] = 0
    rows[:, 1::4] = INT64_MAX
    rows[:, 2::4] = INT64_MIN
    rows[:, 3::4] = INT64_MAX


@dataclass
class Instrumented(Bounds):
    """While entered, every Triton launch runs its kernel's instrumented copy; ``collect``
    turns what the copies counted since the last collect into sandbox-style accesses."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: why a launch ran uninstrumented (a row says so), in order, once each
    notes: list[str] = field(default_factory=list)
    #: launches that ran an instrumented copy
    launches: int = 0
    #: the copies' programs take their ids in the other order: a GPU dispatches low ids
    #: first, so a race between programs shows as the interpreter's reversed order shows it
    reverse: bool = False

    def __enter__(self) -> Instrumented:
        from diffcheck import backend

        self._cls = _kernel_types()[1 if backend.interpreted(self.device) else 0]
        self._saved = self._cls.__dict__["run"]
        self._found = _fresh(self.device)
        saved, checker = self._saved, self

        def run(kernel, *args, grid, warmup, **kwargs):
            if warmup:  # a compiled kernel the launcher keeps: it cannot take the checks
                checker._note(f"{_name(kernel)} was compiled ahead (warmup) and launched as "
                              "a binary: not instrumented")
                return saved(kernel, *args, grid=grid, warmup=warmup, **kwargs)
            return checker._launch(kernel, args, grid, kwargs)

        self._cls.run = run
        return self

    def __exit__(self, *exc) -> None:
        self._cls.run = self._saved

    def _note(self, why: str) -> None:
        if why not in self.notes:
            self.notes.append(why)

    def _launch(self, kernel, args: tuple, grid, kwargs: dict) -> object:
        names = list(kernel.arg_names)
        bound = dict(zip(names, args, strict=False))
        bound.update((k, v) for k, v in kwargs.items() if k in names)
        found = ((n, _tensor_of(bound.get(n))) for n in names)
        tensors = [(n, t) for n, t in found if t is not None]
        passed = [n for n in names if isinstance(bound.get(n), _kernel_types())]
        if passed:  # called through a constexpr argument: its accesses are not rewritten
            self._note(f"{_name(kernel)}: the jit function passed as {', '.join(passed)} is "
                       "not instrumented (its reads are found by red zones only)")
        # a jit function passed as an argument keeps its own program ids: the kernel's must
        # agree with them, so such a launch is not reversed
        made = copy_of(kernel, tuple(n for n, _ in tensors), self.reverse and not passed)
        if passed and self.reverse:
            self._note(f"{_name(kernel)}: its programs were not reversed (a jit function is "
                       "passed to it as an argument)")
        if isinstance(made, str):
            self._note(made)
            return self._saved(kernel, *args, grid=grid, warmup=False, **kwargs)
        extras: dict[str, object] = {"_dc_found": self._found}
        read_only = 0
        for i, (name, tensor) in enumerate(tensors):
            extent = self.admit(name, tensor)
            live = extent is not None and (extent.owner is None or extent.owner() is not None)
            extras[f"_dc_lo_{i}"] = extent.start if extent else 0
            extras[f"_dc_hi_{i}"] = extent.start + extent.nbytes if extent else 0
            if live and extent.read_only:
                read_only |= 1 << i
        extras["_dc_ro"] = read_only
        try:
            launched = self._saved(made.fn, *args, grid=grid, warmup=False, **kwargs, **extras)
        except _compile_errors() as e:  # diffcheck's copy, not the kernel: run it as written
            why = f"{_name(kernel)} is not instrumented: its copy does not compile ({e})"
            key = (id(kernel), made.pointers, made.reverse)
            _copies[key] = (kernel, why.splitlines()[0][:300])
            self._note(_copies[key][1])
            return self._saved(kernel, *args, grid=grid, warmup=False, **kwargs)
        self.launches += 1
        return launched

    def collect(self) -> list[Access]:
        """The accesses the instrumented launches counted since the last collect (a device
        sync); the counters are reset. Never call it during a capture."""
        if not _sites:
            return []
        rows = self._found[:SCRATCH].view(MAX_SITES, WORDS)[: len(_sites)]
        counts = rows[:, 0::4].cpu().numpy()  # one copy; the rest on the host, no dispatches
        hit = np.flatnonzero((counts[:, 0] > 0) | (counts[:, 1] > 0)).tolist()
        if not hit:
            return []
        index = torch.tensor(hit, device=rows.device)
        seen = rows.index_select(0, index).cpu().tolist()
        blank = torch.empty(len(hit), WORDS, dtype=torch.int64, device=rows.device)
        _reset(blank)
        rows.index_copy_(0, index, blank)
        found: list[Access] = []
        for site, words in zip(hit, seen, strict=True):
            found += self._accesses(_sites[site], words)
        self.accesses += found
        return found

    def _accesses(self, site: Site, words: list[int]) -> list[Access]:
        out: list[Access] = []
        for kind, (lanes, low, high, program) in (
                (site.kind, words[:4]), ("input-write", words[4:])):
            if lanes == 0 or (kind == "input-write" and site.kind != "write"):
                continue
            inputs_only = kind == "input-write"
            first = self.nearest(low % (1 << 64), inputs_only)
            last = self.nearest(high % (1 << 64), inputs_only)
            split = last is not first and lanes > 1
            out.append(Access(kind, first.name, first.offset_of(low % (1 << 64)), first.size,
                              lanes - 1 if split else lanes, (program, 0, 0), FOUND_BY,
                              site.where()))
            if split:
                out.append(Access(kind, last.name, last.offset_of(high % (1 << 64)), last.size,
                                  1, (program, 0, 0), FOUND_BY, site.where()))
        return out
