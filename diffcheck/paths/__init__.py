"""Kernel paths as plug-ins: what a path is (PathSpec), and the registry that finds them.

A path is one module that declares everything about one kernel contract: its tensors and
their roles, its scalars (stored in every case and case file), its reference and contract
checks, its suites and replay scenarios, its bench case and its built-in kernels. Every module
of this package is one path; more come from the ``diffcheck.paths`` entry point group
(``name = "package.module:PATH"``) or from ``register()`` at run time. Runner, modes,
comparison, reports, bench, recorder and CLI iterate the registry and never name a path.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from diffcheck.errors import UnknownNameError

#: what a tensor holds, for messages, documents and plausible red-zone fillings
ROLES = ("indptr", "ids", "positions", "table", "slots", "lengths", "counts")


@dataclass(frozen=True)
class Tensor:
    """One tensor argument of a path's call, in call order."""

    name: str
    #: 1 or 2; a 2-D tensor may be a strided [:, :K] view of a wider buffer
    ndim: int = 1
    role: str = ""
    #: shape and meaning, one line (docs/contracts.md, `diffcheck list`)
    doc: str = ""
    #: passed by keyword (its name) rather than by position, and only when the scalar named
    #: by ``when`` is set (vLLM's bounded variant takes ``seq_lens=``)
    keyword: bool = False
    when: str = ""
    #: an output-region indptr: it never goes stale in a case (a kernel told to write
    #: somewhere cannot know better), so no stale transformation applies to it
    fresh: bool = False
    #: an indptr whose offsets can pass 2^24 in serving (a KV slice indptr; not one that
    #: counts output rows)
    offsets: bool = False
    #: request ids whose -1 marks a padding token, whose result the contract defines (all
    #: FILL): a well-formed value, not only a stale one
    padding: bool = False

    def __post_init__(self) -> None:
        if self.ndim not in (1, 2) or (self.role and self.role not in ROLES):
            raise ValueError(f"Tensor {self.name!r}: ndim {self.ndim}, role {self.role!r}; "
                             f"ndim is 1 or 2, role one of {', '.join(ROLES)}")


@dataclass(frozen=True)
class Scalar:
    """One integer scalar of a path's call besides K and the fill, stored in every case."""

    #: its name in cases and case files (page_size)
    name: str
    #: the keywords a kernel may take it by, the contract's first (PAGE_SIZE); an engine's
    #: kernel gets it by the first one its signature has, and a kernel that has none of them
    #: is judged as if the case held the default
    keywords: tuple[str, ...]
    default: int
    #: the values a case may hold (empty: any integer >= minimum)
    choices: tuple[int, ...] = ()
    minimum: int = 0
    doc: str = ""
    #: the keyword a kernel must take for this scalar to be set (bounded needs ``seq_lens``)
    requires: str = ""
    #: at its default the scalar is not passed (the kernel's own default applies: vLLM's
    #: BLOCK_STRIDE_ROWS=None means the page size)
    omit_default: bool = False
    #: its domain (diffcheck.domain.Partition, each with the batch fields that reach it) and
    #: the classifier of a case's value, (Probe) -> partition names; none: one partition per
    #: allowed value
    partitions: tuple = ()
    classify: Callable | None = field(default=None, compare=False)

    def problem(self, value: object) -> str:
        """Why ``value`` cannot be this scalar's ('' when it can)."""
        if not isinstance(value, int) or isinstance(value, bool):
            return f"scalar {self.name} is {value!r}, expected an integer"
        if self.choices and value not in self.choices:
            return f"scalar {self.name} is {value}, expected one of {list(self.choices)}"
        if value < self.minimum:
            return f"scalar {self.name} is {value}, expected at least {self.minimum}"
        return ""


@dataclass(frozen=True)
class Extra:
    """A second output a kernel returns when asked (vLLM's valid counts per row)."""

    name: str
    #: the case scalar that asks for it (1: returned after the main output)
    scalar: str
    #: its length, given the case's tensors
    size: Callable[[Mapping[str, torch.Tensor]], int]


@dataclass(frozen=True)
class PathSpec:
    """Everything diffcheck needs to know about one kernel path (DESIGN.md, "Kernel paths")."""

    name: str
    summary: str
    #: the tensor arguments, in call order
    tensors: tuple[Tensor, ...]
    #: (tensors, k, fill, scalars, out_size) -> {output name: (expected, mask)}; the regions'
    #: expected values from the intended batch, with no host synchronisation
    reference: Callable
    #: (tensors, k, scalars) -> every way a batch breaks the contract (empty: well-formed)
    violations: Callable
    #: (tensors) -> (requests, output rows)
    counts: Callable[[Mapping[str, torch.Tensor]], tuple[int, int]]
    #: () -> {suite name: suite builder}; built on first use
    suites: Callable[[], dict]
    #: built-in implementations (kernels, the reference run as one, unsafe fixtures)
    implementations: tuple = ()
    scalars: tuple[Scalar, ...] = ()
    #: the contract's value for an invalid entry (0: ATOM, -1: the vLLM family)
    fill: int = 0
    k_keyword: str = "NUM_TOPK_TOKENS"
    #: the keyword that hands a kernel its output workspace; a kernel without it returns
    #: its output, which is then copied into the staged workspace
    out_keyword: str = "out"
    #: "flat": one workspace of rows x K that regions index; "rows": a [rows, K] output
    out_layout: str = "flat"
    #: (tensors, k) -> (starts, ends) of each output row's region in the flat output; None:
    #: row t owns [t*K, (t+1)*K)
    regions: Callable | None = None
    #: what one output row is, in messages ("request 3, column 2047")
    row_label: str = "row"
    extras: tuple[Extra, ...] = ()
    #: (high, rows, k, q, shuffled) -> a production-shaped Case for `diffcheck bench`
    bench_case: Callable | None = None
    #: (case) -> (name of the gathered tensor, flat int64 indices it gathers) for the bench's
    #: gather floor; None: no such floor
    gathered: Callable | None = None
    #: () -> what `diffcheck fuzz` can generate for the path (a
    #: diffcheck.fixtures.generated.Generators); None: the path is not fuzzed
    generators: Callable | None = None
    #: (intended tensors as numpy, k, scalars) -> a diffcheck.domain.RowsSeen: each output
    #: row's request-local positions, region length and context (coverage of the domain)
    rows_seen: Callable | None = None
    #: listing order (`diffcheck list`, --path all)
    rank: int = 100
    #: the contract in words (docs/contracts.md); defaults to the plug-in module's docstring
    doc: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        names = [t.name for t in self.tensors]
        words = [s.name for s in self.scalars]
        if len(set(names)) != len(names) or len(set(words)) != len(words):
            raise ValueError(f"PathSpec {self.name!r}: a tensor or scalar name repeats")
        if self.out_layout not in ("flat", "rows"):
            raise ValueError(f"PathSpec {self.name!r}: out_layout is 'flat' or 'rows'")
        if len(names) + 1 + len(self.extras) > 8:
            raise ValueError(f"PathSpec {self.name!r}: at most 7 tensors and outputs (red-zone "
                             "tags carry 3 bits of buffer id)")
        for extra in self.extras:
            if extra.scalar not in words:
                raise ValueError(f"PathSpec {self.name!r}: extra output {extra.name!r} is asked "
                                 f"for by an unknown scalar {extra.scalar!r}")
        for impl in self.implementations:
            if impl.path != self.name:
                raise ValueError(f"PathSpec {self.name!r}: implementation {impl.name!r} is not "
                                 f"'{self.name}:<variant>'")

    # -- tensors ---------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    def tensor(self, name: str) -> Tensor:
        return next(t for t in self.tensors if t.name == name)

    def ndim(self, name: str) -> int:
        return self.tensor(name).ndim

    @property
    def matrices(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors if t.ndim == 2)

    @property
    def positional(self) -> tuple[str, ...]:
        """The tensors a call takes by position (the others go by keyword)."""
        return tuple(t.name for t in self.tensors if not t.keyword)

    def call_args(self, tensors: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        return [tensors[name] for name in self.positional]

    # -- scalars ---------------------------------------------------------------------------
    def scalar(self, name: str) -> Scalar:
        return next(s for s in self.scalars if s.name == name)

    def scalars_of(self, given: Mapping[str, int]) -> dict[str, int]:
        """Every scalar's value: the given ones over the defaults."""
        return {s.name: int(given.get(s.name, s.default)) for s in self.scalars}

    def scalar_problems(self, given: Mapping[str, object]) -> list[str]:
        known = {s.name: s for s in self.scalars}
        problems = [f"unknown scalar {n} (a {self.name} case has "
                    f"{', '.join(known) or 'none'})" for n in given if n not in known]
        return problems + [p for n, v in given.items() if n in known
                           for p in [known[n].problem(v)] if p]

    # -- output ----------------------------------------------------------------------------
    def workspace_size(self, tensors: Mapping[str, torch.Tensor], k: int) -> int:
        """The output workspace an engine allocates: one K-row per output row."""
        return max(self.counts(tensors)[1], 0) * k

    def row_bounds(self, tensors: Mapping[str, torch.Tensor],
                   k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(starts, ends) of each output row's region in the flat output."""
        if self.regions is not None:
            return self.regions(tensors, k)
        rows = max(self.counts(tensors)[1], 0)
        starts = torch.arange(rows, dtype=torch.int64) * k
        return starts, starts + k

    def expected(self, tensors: Mapping[str, torch.Tensor], k: int, fill: int,
                 scalars: Mapping[str, int], out_size: int) -> dict[str, tuple]:
        """{output: (expected, mask)} of a batch (the intended one of a malformed case)."""
        return self.reference(tensors, k, fill, self.scalars_of(scalars), out_size)

    def violations_of(self, tensors: Mapping[str, torch.Tensor], k: int,
                      scalars: Mapping[str, int] | None = None) -> list[str]:
        return self.violations(tensors, k, self.scalars_of(scalars or {}))


# -- the registry ---------------------------------------------------------------------------
_REGISTERED: dict[str, PathSpec] = {}
#: modules that registered paths at run time (worker processes import them too)
_RUNTIME_MODULES: list[str] = []
_discovered = False


def register(spec: PathSpec, module: str | None = None) -> PathSpec:
    """Add a path (a plug-in outside this package); ``module`` is imported by worker
    processes so that they know the path too (default: the module of its reference)."""
    if not isinstance(spec, PathSpec):
        raise TypeError(f"register() takes a PathSpec, got {type(spec).__name__}")
    _discover()
    if spec.name in _REGISTERED and _REGISTERED[spec.name] is not spec:
        raise ValueError(f"a path named {spec.name!r} is registered already")
    _REGISTERED[spec.name] = spec
    module = module or getattr(spec.reference, "__module__", None)
    if module and module not in _RUNTIME_MODULES and not module.startswith(__name__ + "."):
        _RUNTIME_MODULES.append(module)
    return spec


def unregister(name: str) -> None:
    """Remove a path registered at run time (tests)."""
    _REGISTERED.pop(name, None)


def runtime_modules() -> tuple[str, ...]:
    return tuple(_RUNTIME_MODULES)


def _discover() -> None:
    """Import every plug-in of this package and of the entry point group, once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "PATH", None)
        if isinstance(spec, PathSpec):
            _REGISTERED.setdefault(spec.name, spec)
    from importlib.metadata import entry_points

    for point in entry_points(group="diffcheck.paths"):
        spec = point.load()
        if isinstance(spec, PathSpec):
            _REGISTERED.setdefault(spec.name, spec)


def known_paths() -> dict[str, PathSpec]:
    """Every registered path by name, in listing order."""
    _discover()
    return dict(sorted(_REGISTERED.items(), key=lambda item: (item[1].rank, item[0])))


def get_path(name: str) -> PathSpec:
    paths = known_paths()
    try:
        return paths[name]
    except KeyError:
        raise UnknownNameError(f"unknown path '{name}'; known: {', '.join(paths)}") from None


def select_paths(name: str) -> list[PathSpec]:
    """``all`` or one path name."""
    return list(known_paths().values()) if name == "all" else [get_path(name)]
