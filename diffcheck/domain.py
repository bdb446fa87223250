"""The input domain of a kernel contract: every dimension a case varies along, its partitions
(the classes of values the contract treats alike, and the boundaries between them), and how
a case is classified into them.

A path's domain is data (``diffcheck list --domain PATH``, docs/contracts.md). Suites
(``domain``, ``domain-replay``, ``production-domain``), fuzz draws and coverage all derive
from it: a partition says how a generated batch reaches it (``patch``: fields of a drawn
Batch or Plan) and how a case is seen to be in it (``classify``, measured on the case's own
tensors, never on its name), so a coverage figure is what the kernel was really given.

Dimensions come from the plug-in's declarations: K, each scalar's partitions, and for each
tensor the generic dimensions of its role (positions: every oddity; slots and tables: value
magnitudes and NULL, evicted and padding block ids; indptrs: offset magnitudes; 2-D tensors:
strided views and row offsets past 2^31; every tensor a kernel may see stale: the role's
stale transformations of fixtures/stale.py). A leaf: it imports no runner or report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

#: magnitudes past which float32 is no longer exact, and int32 arithmetic near its end
F32_EXACT, NEAR_INT32 = 1 << 24, 1 << 30
#: positions this far past a request's context are "far" (a 64K-element over-read)
FAR = 1 << 16
INT32_MAX = (1 << 31) - 1


@dataclass(frozen=True)
class Partition:
    """One class of values of a dimension."""

    name: str
    doc: str
    #: how a generated Batch (or Plan, for ``capture``) reaches it: fields to set
    patch: Mapping[str, object] = field(default_factory=dict)
    #: needs a GPU's memory (lives in the production-domain suite)
    gpu: bool = False
    #: a scalar partition's values a fuzzer draws (the patch holds the first)
    values: tuple[int, ...] = ()


@dataclass(frozen=True)
class Dimension:
    """A direction the inputs vary in; ``classify`` gives the partitions a case is in."""

    name: str
    #: "scalar" (pairwise in the derived suite), "values", "stale" or "capture"
    kind: str
    doc: str
    partitions: tuple[Partition, ...]
    classify: Callable[[Probe], set[str]] = field(compare=False, default=lambda probe: set())

    def __post_init__(self) -> None:
        names = [p.name for p in self.partitions]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"dimension {self.name!r}: partitions must be distinct, non-empty")
        if self.kind not in ("scalar", "values", "stale", "capture"):
            raise ValueError(f"dimension {self.name!r}: unknown kind {self.kind!r}")

    def keys(self, gpu: bool = True) -> list[str]:
        return [f"{self.name}={p.name}" for p in self.partitions if gpu or not p.gpu]


@dataclass(frozen=True)
class Domain:
    """Every dimension of one path."""

    path: str
    dimensions: tuple[Dimension, ...]

    def keys(self, gpu: bool = True) -> list[str]:
        return [key for d in self.dimensions for key in d.keys(gpu)]

    def dimension(self, name: str) -> Dimension:
        return next(d for d in self.dimensions if d.name == name)

    def partition(self, key: str) -> Partition:
        dim, _, name = key.partition("=")
        return next(p for p in self.dimension(dim).partitions if p.name == name)

    def scalar_pairs(self, gpu: bool = False) -> list[tuple[str, str]]:
        """Every pair of partitions of two different scalar dimensions (pairwise coverage)."""
        dims = [d for d in self.dimensions if d.kind == "scalar"]
        return [(a, b) for i, x in enumerate(dims) for y in dims[i + 1:]
                for a in x.keys(gpu) for b in y.keys(gpu)]


@dataclass
class RowsSeen:
    """What a path's plug-in tells about one batch, in request-local terms, for classifiers:
    per output row its positions, region length and context; per table row its used pages."""

    positions: np.ndarray  # int64 [rows, K]: request-local positions (negative as given)
    lengths: np.ndarray  # int64 [rows]: the row's region length (entries judged)
    contexts: np.ndarray  # int64 [rows]: the row's request's context (-1: no request)
    #: positions at or past this many are past the table's pages (blocktable), or None
    span: np.ndarray | None = None
    #: [rows, K] True where a non-negative key belongs to another request (prefill)
    foreign: np.ndarray | None = None
    #: [R, B] True where a table entry is a page its request uses
    used: np.ndarray | None = None
    #: every request's context, where a request can have no row (prefill: one per token)
    requests: np.ndarray | None = None
    #: [rows] the table row (request) of each output row, -1 for none (paths with a table)
    owner: np.ndarray | None = None


@dataclass
class Probe:
    """One case as the classifiers see it: its tensors (what the kernel is given and what
    was intended), K, scalars, the path's per-row view, and the stale transformations applied."""

    seen: dict[str, np.ndarray]
    intended: dict[str, np.ndarray]
    strides: dict[str, tuple[int, ...]]
    k: int
    scalars: dict[str, int]
    rows: RowsSeen | None
    stale: tuple[str, ...] = ()
    #: replay scenarios: the first step of each graph (the capture batches)
    captures: list[RowsSeen] = field(default_factory=list)
    #: strided views: tensor name -> the columns the kernel is given
    columns: dict[str, int] = field(default_factory=dict)
    #: what the value classifiers read: ``seen`` or ``intended`` (a value counts only when
    #: both hold it: a malformed case's stale tensor reaches nothing its fresh one held)
    values: dict[str, np.ndarray] = field(default_factory=dict)


# -- generic dimensions -----------------------------------------------------------------------
def k_dimension() -> Dimension:
    parts = (
        Partition("power-of-two", "K a power of two below production (256, 512, 1024)",
                  {"k": 256}, values=(256, 512, 1024)),
        Partition("2048", "the production K", {"k": 2048}, values=(2048,)),
        Partition("multiple-of-128", "a multiple of 128 that is no power of two (384, 640, "
                  "1536)", {"k": 384}, values=(384, 640, 1536)),
        Partition("not-multiple-of-128", "not a multiple of a kernel's usual 128-wide tile "
                  "(320, 576, 960: BLOCK_N falls to 64)", {"k": 320}, values=(320, 576, 960)),
    )

    def classify(probe: Probe) -> set[str]:
        k = probe.k
        if k == 2048:
            return {"2048"}
        if k & (k - 1) == 0:
            return {"power-of-two"}
        return {"multiple-of-128" if k % 128 == 0 else "not-multiple-of-128"}

    return Dimension("K", "scalar", "NUM_TOPK_TOKENS (the top-k width)", parts, classify)


def page_partitions() -> tuple[Partition, ...]:
    """A page size (block size): engines use 1 (SGLang), powers of two (16, 64 by default for
    sparse MLA, 128) and, in hybrid models, sizes that are not (vLLM logs 528 and 672). A
    page longer than a request (one partial page) is in every batch with a short request,
    at every page size but 1."""
    return (
        Partition("one", "pages of one token (SGLang)", {"page_size": 1}, values=(1,)),
        Partition("power-of-two", "16, 64, 128", {"page_size": 64}, values=(16, 64, 128)),
        Partition("non-power-of-two", "48; hybrid models' 528 and 672", {"page_size": 48},
                  values=(48, 528, 672)),
    )


def page_classifier(name: str) -> Callable[[Probe], set[str]]:
    def classify(probe: Probe) -> set[str]:
        page = probe.scalars.get(name, 1)
        return {"one" if page == 1 else
                "power-of-two" if page & (page - 1) == 0 else "non-power-of-two"}

    return classify


def choice_dimension(name: str, doc: str, values: Iterable[int]) -> Dimension:
    """A scalar whose every allowed value is its own partition."""
    parts = tuple(Partition(str(v), f"{name} = {v}", {name: v}) for v in values)
    return Dimension(name, "scalar", doc, parts,
                     lambda probe: {str(probe.scalars.get(name))})


CONTEXTS = (
    ("0", "a request with no context (a padded or empty one)"),
    ("1", "context 1 (a dummy warm-up batch)"),
    ("below-k", "between 2 and K - 2"),
    ("k-minus-1", "K - 1"),
    ("k", "exactly K"),
    ("k-plus-1", "K + 1: the first context that picks K of its positions"),
    ("above-k", f"from K + 2 up to {FAR - 1}"),
    ("far", f"{FAR} or more"),
)


def context_dimension(longest: int | None) -> Dimension:
    """Contexts per request; ``longest`` caps what the CPU can afford (prefill: every token
    is an output row), longer partitions need a GPU."""

    def example(name: str) -> tuple[int, ...]:
        return {"0": (0, 5), "1": (1, 5), "below-k": (37,), "k-minus-1": (-1,), "k": (-2,),
                "k-plus-1": (-3,), "above-k": (-4,), "far": (FAR + 3,)}[name]

    parts = tuple(Partition(name, doc, {"contexts": example(name)},
                            gpu=longest is not None and name == "far" and longest < FAR)
                  for name, doc in CONTEXTS)

    def classify(probe: Probe) -> set[str]:
        if probe.rows is None:
            return set()
        k, found = probe.k, set()
        every = probe.rows.contexts if probe.rows.requests is None else probe.rows.requests
        for c in set(every.tolist()):
            if c < 0:
                continue
            found.add("0" if c == 0 else "1" if c == 1 else "k-minus-1" if c == k - 1 else
                      "k" if c == k else "k-plus-1" if c == k + 1 else
                      "below-k" if c < k else "far" if c >= FAR else "above-k")
        return found

    return Dimension("contexts", "values", "request contexts (keys a request has; prefill: "
                     "also the keys each token sees); negative examples are relative to K "
                     "(-1: K - 1, -2: K, -3: K + 1, -4: K + 7)", parts, classify)


POSITIONS = (
    ("valid", "a position inside the request's context", ()),
    ("minus-one", "-1 (an unused entry)", ("minus_one",)),
    ("negative", "another negative value", ("negative",)),
    ("at-ctx", "exactly the context (one past the last key)", ("at_ctx",)),
    ("beyond", "a few past the context", ("beyond",)),
    ("far-beyond", f"{FAR} or more past the context", ("far",)),
    ("int32-max", "within 2^16 of INT32_MAX (an offset added to it overflows int32)",
     ("max",)),
    ("duplicates", "the same position twice in a row", ("duplicates",)),
)


def positions_dimension(tensor: str, past_table: bool, foreign: bool) -> Dimension:
    parts = [Partition(name, doc, {"oddities": kinds}) for name, doc, kinds in POSITIONS]
    if past_table:
        parts.append(Partition("past-table", "a page index at or past the table's width",
                               {"oddities": ("past_table",)}))
    if foreign:
        parts.append(Partition("foreign", "another request's key (the one before its range)",
                               {"oddities": ("before",)}))

    def classify(probe: Probe) -> set[str]:
        rows = probe.rows
        if rows is None or not rows.positions.size:
            return set()
        width = rows.positions.shape[1]
        inside = np.arange(width)[None, :] < rows.lengths[:, None]
        inside &= rows.contexts[:, None] >= 0
        p, c = rows.positions, rows.contexts[:, None]
        found = set()
        checks = {
            "valid": (p >= 0) & (p < c), "minus-one": p == -1, "negative": p < -1,
            "at-ctx": p == c, "beyond": (p > c) & (p < c + FAR),
            "far-beyond": (p >= c + FAR) & (p < INT32_MAX - FAR), "int32-max":
            p >= INT32_MAX - FAR,
        }
        if rows.foreign is not None:
            checks["foreign"] = rows.foreign
            for name in ("minus-one", "negative"):
                checks[name] = checks[name] & ~rows.foreign
        for name, hit in checks.items():
            if bool((hit & inside).any()):
                found.add(name)
        if rows.span is not None and bool(((p >= rows.span[:, None]) & inside).any()):
            found.add("past-table")
        valid = np.where(inside & (p >= 0) & (p < c), p, -1)
        ordered = np.sort(valid, axis=1)
        if bool(((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any()):
            found.add("duplicates")
        return found

    return Dimension(f"{tensor}.positions", "values", f"entries of {tensor} inside the "
                     "regions", tuple(parts), classify)


def magnitude_dimension(tensor: str, what: str, scale: Callable[[Probe], int] | None = None
                        ) -> Dimension:
    """How large the values a kernel computes from ``tensor`` get (slots: the values; a
    table: block id times its stride)."""
    parts = (
        Partition("small", "below 2^24", {}),
        Partition("past-2^24", "past 2^24 (float32 no longer exact)",
                  {"slot_base": F32_EXACT}),
        Partition("past-2^30", "past 2^30 (near the end of int32)",
                  {"slot_base": (1 << 31) - (1 << 24)}),
    )

    def classify(probe: Probe) -> set[str]:
        values = probe.values.get(tensor)
        if values is None or not values.size:
            return set()
        top = int(values.max()) * (scale(probe) if scale else 1)
        return {"past-2^30" if top >= NEAR_INT32 else "past-2^24" if top >= F32_EXACT
                else "small"}

    return Dimension(f"{tensor}.magnitude", "values", f"the largest {what}", parts, classify)


#: the block-table oddities a generated batch can plant (fixtures/generated.py Batch.table):
#: NULL (0) or evicted (-1) in a page a position reads, 0 or -1 past the pages
TABLE_ODDITIES = ("null", "evicted", "pad-zero", "pad-minus-one")


def table_dimension(tensor: str, kinds: Iterable[str]) -> Dimension:
    """Block ids in used pages and past them; ``kinds``: the table oddities the path's
    contract calls well-formed (the vLLM family says nothing of -1, so it has none)."""
    kinds = set(kinds)
    parts = (
        Partition("ids", "block ids of pages a request uses", {}),
        Partition("null-in-use", "block 0 (vLLM's NULL block) in a used page",
                  {"table": ("null",)}),
        Partition("evicted-in-use", "-1 (an evicted page) in a used page",
                  {"table": ("evicted",)}),
        Partition("zero-padding", "0 past a request's pages (a zeroed table)",
                  {"table": ("pad-zero",)}),
        Partition("minus-one-padding", "-1 past a request's pages",
                  {"table": ("pad-minus-one",)}),
    )
    parts = tuple(p for p in parts if not p.patch or set(p.patch["table"]) <= kinds)

    def classify(probe: Probe) -> set[str]:
        table = probe.values.get(tensor)
        rows = probe.rows
        if table is None or rows is None or rows.used is None or table.ndim != 2:
            return set()
        used = rows.used[: table.shape[0], : table.shape[1]]
        table = table[: used.shape[0], : used.shape[1]]
        read = _pages_read(rows, probe.scalars.get("page_size", 1), used.shape) & used
        found = set()
        for name, hit in (("ids", read & (table > 0)), ("null-in-use", read & (table == 0)),
                          ("evicted-in-use", read & (table == -1)),
                          ("zero-padding", ~used & (table == 0)),
                          ("minus-one-padding", ~used & (table == -1))):
            if bool(hit.any()):
                found.add(name)
        return found

    return Dimension(f"{tensor}.contents", "values", f"block ids held by {tensor}", parts,
                     classify)


def _pages_read(rows: RowsSeen, page: int, shape: tuple[int, ...]) -> np.ndarray:
    """[R, B] True where a valid position of some output row falls in that page: a block id
    the contract makes the kernel read (a NULL or evicted page no position reads is
    never exercised)."""
    read = np.zeros(shape, dtype=bool)
    if rows.owner is None or not rows.positions.size:
        return read
    width = rows.positions.shape[1]
    p, c = rows.positions, rows.contexts[:, None]
    valid = (np.arange(width)[None, :] < rows.lengths[:, None]) & (p >= 0) & (p < c)
    owner = np.broadcast_to(rows.owner[:, None], p.shape)
    pages = p // max(page, 1)
    valid &= (owner >= 0) & (owner < shape[0]) & (pages < shape[1])
    read[owner[valid], pages[valid]] = True
    return read


def offsets_dimension(tensor: str) -> Dimension:
    parts = (
        Partition("small", "offsets below 2^24", {}),
        Partition("past-2^24", "an offset past 2^24 (a context of 2^24 + 8 before a request: "
                  "64 MiB of slots, a GPU's)", {"contexts": (F32_EXACT + 8, 40)}, gpu=True),
    )

    def classify(probe: Probe) -> set[str]:
        values = probe.values.get(tensor)
        if values is None or not values.size:
            return set()
        return {"past-2^24" if int(values.max()) >= F32_EXACT else "small"}

    return Dimension(f"{tensor}.offsets", "values", f"the offsets {tensor} holds", parts,
                     classify)


def rows_dimension(tensor: str, widen: str, huge: bool, spare: bool = False) -> Dimension:
    """How a 2-D tensor's rows lie; ``huge``: its rows can start past 2^31 elements in
    serving (a [T, K] top-k buffer of 2^20 tokens; vLLM PR #16806), reached by a strided view
    that wide (fixtures/layouts.py PAST_INT32_ROWS); ``spare``: it can hold more rows than
    the batch has (a persistent buffer passed whole: a grid sized by its rows overruns)."""
    parts = (
        Partition("contiguous", "rows packed back to back", {}, values=(0,)),
        Partition("strided", "a [:, :n] view of a wider buffer", {widen: 16}, values=(16, 64)),
    )
    if huge:  # positions: the top-k buffers engines slice [:, :K] out of wider ones
        parts += (
            Partition("stride-not-multiple-of-16", "a row stride Triton does not specialize "
                      "as divisible by 16: a kernel that assumes it (a tl.multiple_of hint, a "
                      "stride rounded to a tile) misplaces rows", {widen: 3}, values=(1, 3, 7)),
            Partition("offset-past-2^31", "a row starting past 2^31 elements (vLLM PR #16806: "
                      "8 GiB and more)", {widen: -1}, gpu=True),
        )
    if spare:
        parts += (Partition("spare-rows", "more rows than the batch has output rows (a "
                            "persistent buffer passed whole; rows past the batch hold -1)",
                            {"extra_rows": 3}),)

    def classify(probe: Probe) -> set[str]:
        buffer = probe.seen.get(tensor)
        stride = probe.strides.get(tensor)
        if buffer is None or stride is None or buffer.ndim != 2 or not buffer.shape[0]:
            return set()
        given = probe.columns.get(tensor, buffer.shape[1])
        found = {"strided" if given < buffer.shape[1] or stride[0] > buffer.shape[1]
                 else "contiguous"}
        if huge and buffer.shape[0] > 1 and stride[0] % 16:
            found.add("stride-not-multiple-of-16")
        if (buffer.shape[0] - 1) * stride[0] >= 1 << 31:
            found.add("offset-past-2^31")
        if spare and probe.rows is not None and buffer.shape[0] > len(probe.rows.lengths):
            found.add("spare-rows")
        return found

    return Dimension(f"{tensor}.rows", "values", f"the layout of {tensor}'s rows", parts,
                     classify)


def stale_dimension(tensor: str, transforms: Mapping[str, str], when: str = "") -> Dimension:
    """``when``: the scalar that makes the kernel take the tensor (seq_lens: bounded)."""
    extra = {when: 1} if when else {}
    parts = tuple(Partition(name, doc, {"spoiler": f"{tensor}:{name}", **extra})
                  for name, doc in transforms.items())

    def classify(probe: Probe) -> set[str]:
        found = set()
        for label in probe.stale:
            name, _, transform = label.partition(":")
            if name != tensor or transform not in transforms:
                continue
            seen, fresh = probe.seen.get(name), probe.intended.get(name)
            if seen is None or fresh is None or seen.shape != fresh.shape \
                    or not np.array_equal(seen, fresh):
                found.add(transform)
        return found

    return Dimension(f"{tensor}.stale", "stale", f"{tensor} as serving leaves it stale", parts,
                     classify)


CAPTURES = (
    ("full", "a full batch of real requests"),
    ("padded", "a real batch padded to the graph with zero-length requests"),
    ("dummy", "a dummy batch: every request context 1"),
    ("zeros", "a dummy batch whose every context is 0, or no request at all (vLLM #51970)"),
)


def capture_dimension(kinds: Iterable[str]) -> Dimension:
    """How graphs are captured; ``kinds``: those the path's scenarios can have (an MTP graph
    always holds a padding request, so it is never captured on a full batch)."""
    parts = tuple(Partition(name, doc, {"capture": name}) for name, doc in CAPTURES
                  if name in kinds)

    def classify(probe: Probe) -> set[str]:
        found = set()
        for rows in probe.captures:
            every = rows.contexts if rows.requests is None else rows.requests
            real = every[every >= 0]
            nonzero = real[real > 0]
            if not nonzero.size:
                found.add("zeros")
            elif bool((nonzero == 1).all()):
                found.add("dummy")
            elif nonzero.size < real.size:
                found.add("padded")
            else:
                found.add("full")
        return found

    return Dimension("capture", "capture", "the batch a graph is captured on", parts, classify)


#: stale transformations by role (fixtures/stale.py makes them): generic, so every tensor of
#: the role in every path gets each of them. Region indptrs stay fresh (Tensor.fresh): a
#: kernel told to write somewhere cannot know better.
STALE_TRANSFORMS: dict[str, dict[str, str]] = {
    "indptr": {
        "half-updated": "the first entries fresh, the rest a previous batch's with the same "
                        "total (a copy stopped half-way)",
        "larger-batch": "entries past the first request left by a larger batch",
        "prefill-shaped": "a prefill's cumulative layout ending past the rows (GLM-5.2)",
        "unwritten": "never written this step: all zeros",
        "minus-one-padded": "the second half of the entries hold -1",
    },
    "ids": {
        "past-rows": "a request id past the batch's requests (vLLM #55637)",
        "minus-one": "-1 (an engine's padding id) on real tokens",
        "unwritten": "never written: all zero",
    },
    "positions": {
        "unwritten": "rows the indexer never wrote (all -1)",
        "leftover": "rows left from an earlier, longer request",
        "fewer-rows": "fewer rows than there are tokens",
    },
    "table": {
        "fewer-rows": "fewer rows than there are requests",
        "freed": "a used page freed since (-1)",
    },
    "lengths": {
        "previous-batch": "lengths left from a previous batch",
    },
}


#: requests per batch: the bands a launcher chooses its launch by (a fast path for one
#: request, a split grid for medium batches, a persistent grid capped near 4-8 programs per
#: SM), each with the size its partition is reached at; the largest need a GPU's time
BATCHES = (
    ("one", "one request (a single user)", 1, 1, False),
    ("few", "2 to 31 requests", 2, None, False),
    ("tens", "32 to 255 requests", 32, 40, False),
    ("hundreds", "256 to 1023 requests", 256, 300, True),
    ("thousands", "1024 requests or more (past 8 programs per SM of a 132-SM GPU)", 1024,
     1100, True),
)


def batch_dimension(counts: Callable[[dict], tuple[int, int]]) -> Dimension:
    """Requests per batch (``counts``: the path's (requests, output rows) of its tensors)."""
    parts = tuple(Partition(name, doc, {} if size is None else {"requests": size}, gpu=gpu)
                  for name, doc, _, size, gpu in BATCHES)

    def classify(probe: Probe) -> set[str]:
        import torch

        tensors = {n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in probe.values.items()}
        requests = counts(tensors)[0]
        if requests < 1:
            return set()
        return {next(name for name, _, low, _, _ in reversed(BATCHES) if requests >= low)}

    return Dimension("requests", "values", "requests per batch (a launcher may pick its launch "
                     "by the batch size)", parts, classify)


def scalar_dimension(scalar) -> Dimension:
    """A scalar's declared partitions (``Scalar.partitions`` with ``Scalar.classify``), or one
    partition per allowed value."""
    if scalar.partitions:
        classify = scalar.classify or (lambda probe: set())
        return Dimension(scalar.name, "scalar", scalar.doc, tuple(scalar.partitions),
                         classify)
    values = scalar.choices or (scalar.default,)
    return choice_dimension(scalar.name, scalar.doc, values)


def pool_dimension(slots: str, bound: str) -> Dimension:
    """A slot table of exactly the slots in use, or a pool (engines allocate the table once,
    and slots of earlier batches stay past the last request's): a kernel that ends the last
    request at the table's size instead of at ``bound``'s last offset reads the red zone in
    the first and stale slots in the second."""
    parts = (
        Partition("exact", f"as long as {bound}'s last offset", {}),
        Partition("pooled", f"stale slots past {bound}'s last offset", {"pooled": True}),
    )

    def classify(probe: Probe) -> set[str]:
        table, offsets = probe.values.get(slots), probe.values.get(bound)
        if table is None or offsets is None or offsets.ndim != 1 or not offsets.size:
            return set()
        return {"pooled" if table.size > int(offsets[-1]) else "exact"}

    return Dimension(f"{slots}.pool", "values", f"what {slots} holds past the last request",
                     parts, classify)


def role_dimensions(tensor, oddities: tuple[str, ...], table: tuple[str, ...] = (),
                    spare_rows: bool = False) -> list[Dimension]:
    """The generic dimensions of one tensor, from its role."""
    dims: list[Dimension] = []
    if tensor.role == "positions":
        dims.append(positions_dimension(tensor.name, "past_table" in oddities,
                                        "before" in oddities))
    if tensor.role == "slots":
        dims.append(magnitude_dimension(tensor.name, "slot"))
    if tensor.role == "table":
        dims.append(magnitude_dimension(tensor.name, "block id times its stride",
                                        _table_scale))
        dims.append(table_dimension(tensor.name, table))
    if tensor.role == "indptr" and tensor.offsets:
        dims.append(offsets_dimension(tensor.name))
    if tensor.role == "ids" and tensor.padding:
        dims.append(padding_dimension(tensor.name))
    if tensor.ndim == 2:
        positions = tensor.role == "positions"
        dims.append(rows_dimension(tensor.name, "extra_cols" if positions else "extra_rows",
                                   huge=positions, spare=positions and spare_rows))
    if not tensor.fresh and tensor.role in STALE_TRANSFORMS:
        dims.append(stale_dimension(tensor.name, STALE_TRANSFORMS[tensor.role], tensor.when))
    return dims


def padding_dimension(tensor: str) -> Dimension:
    """Request ids of a well-formed batch: every token a request's, or padding tokens (-1)
    after them, whose rows the contract wants all FILL (a kernel that skips them leaves
    whatever the output held)."""
    parts = (Partition("requests", "every token a request's"),
             Partition("padding", "padding tokens with id -1 after the real ones",
                       {"padding": 3}))

    def classify(probe: Probe) -> set[str]:
        ids = probe.values.get(tensor)
        if ids is None or not ids.size or probe.stale:
            return set()
        return {"padding" if bool((ids == -1).any()) else "requests"}

    return Dimension(f"{tensor}.values", "values", f"{tensor} in a well-formed batch", parts,
                     classify)


def _table_scale(probe: Probe) -> int:
    return max(1, probe.scalars.get("stride_rows") or probe.scalars.get("page_size", 1))


def domain_of(spec) -> Domain:
    """A path's domain, from its plug-in's declarations (cached per spec)."""
    cached = _DOMAINS.get(spec.name)
    if cached is not None and cached[0] is spec:
        return cached[1]
    gen = spec.generators() if spec.generators else None
    oddities = tuple(gen.oddities) if gen else ()
    dims = [k_dimension(), *(scalar_dimension(s) for s in spec.scalars),
            context_dimension(gen.longest if gen else None), batch_dimension(spec.counts)]
    for tensor in spec.tensors:
        dims += role_dimensions(tensor, oddities, tuple(gen.table) if gen else (),
                                bool(gen and gen.spare_rows))
    bound = next((t.name for t in spec.tensors if t.role == "indptr" and t.offsets), None)
    if gen is not None and gen.pooled and bound is not None:
        dims += [pool_dimension(t.name, bound) for t in spec.tensors
                 if t.role == "slots" and t.ndim == 1]
    if gen is not None and gen.scenario is not None:
        dims.append(capture_dimension(gen.captures))
    domain = Domain(spec.name, tuple(dims))
    _DOMAINS[spec.name] = (spec, domain)
    return domain


_DOMAINS: dict[str, tuple[object, Domain]] = {}


# -- classification ---------------------------------------------------------------------------
def _arrays(tensors) -> dict[str, np.ndarray]:
    return {n: t.detach().cpu().numpy() for n, t in tensors.items()}


def _rows_seen(spec, tensors: dict[str, np.ndarray], k: int, scalars: dict[str, int]
               ) -> RowsSeen | None:
    if spec.rows_seen is None:
        return None
    try:
        return spec.rows_seen(tensors, k, spec.scalars_of(scalars))
    except (IndexError, ValueError, KeyError):  # a malformed stored case: no per-row view
        return None


def probe_of(spec, case, captures: list[RowsSeen] | None = None,
             scalars: dict[str, int] | None = None, intended: bool = False) -> Probe:
    """A case as the classifiers see it; ``scalars``: as the kernel was given them (an
    implementation that cannot take one runs at its default); ``intended``: value
    classifiers read the fresh batch instead of what the kernel is given."""
    seen_t = case.kernel_inputs()
    seen, fresh = _arrays(seen_t), _arrays(case.intended_inputs())
    values = fresh if intended else seen
    given = dict(scalars) if scalars is not None else spec.scalars_of(case.scalars)
    return Probe(seen, fresh, {n: tuple(t.stride()) for n, t in seen_t.items()}, case.k,
                 given, _rows_seen(spec, values, case.k, given),
                 tuple(getattr(case, "stale", ()) or ()), captures or [], dict(case.columns),
                 values)


def _classified(domain: Domain, probe: Probe, kinds: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    for dim in domain.dimensions:
        if dim.kind not in kinds:
            continue
        try:
            found |= {f"{dim.name}={name}" for name in dim.classify(probe)}
        except (IndexError, ValueError):
            continue
    return found


def absent(spec, scalars: dict[str, int]) -> set[str]:
    """Tensors a kernel is not given under these scalars (seq_lens without ``bounded``)."""
    return {t.name for t in spec.tensors if t.when and not scalars.get(t.when)}


def exercised(spec, target, fresh: bool = False, scalars: dict[str, int] | None = None
              ) -> set[str]:
    """The domain partitions (``dimension=partition``) a case or scenario reaches; ``fresh``:
    only what its intended batches reach one by one (an eager row of a scenario runs those,
    with no graph: no capture partition); ``scalars``: as an implementation is given them.

    A value partition counts only where the tensors the kernel is given and the intended
    ones both hold it; nothing counts of a tensor the kernel is not given."""
    from diffcheck.case import Scenario

    domain = domain_of(spec)
    steps = target.steps if isinstance(target, Scenario) else [target]
    captures: list[RowsSeen] = []
    if isinstance(target, Scenario) and not fresh:
        firsts: dict[int, object] = {}
        for step, size in zip(target.steps, target.sizes, strict=True):
            firsts.setdefault(size, step)
        for step in firsts.values():
            arrays = _arrays(step.kernel_inputs())
            rows = _rows_seen(spec, arrays, step.k, scalars or step.scalars)
            if rows is not None:
                captures.append(rows)
    found: set[str] = set()
    for i, step in enumerate(steps):
        if fresh:
            step = step.fresh()
        probe = probe_of(spec, step, captures if i == 0 else None, scalars)
        found |= _classified(domain, probe, ("scalar", "stale", "capture"))
        values = _classified(domain, probe, ("values",))
        if not step.well_formed:
            values &= _classified(domain, probe_of(spec, step, None, scalars, intended=True),
                                  ("values",))
        found |= values
    gone = absent(spec, scalars if scalars is not None else spec.scalars_of(steps[0].scalars))
    return {key for key in found if key.partition(".")[0] not in gone}


def rows_from_slices(kv_indptr: np.ndarray, regions: np.ndarray, positions: np.ndarray,
                     requests: np.ndarray, k: int) -> RowsSeen:
    """The per-row view of a path whose row i gathers from request ``requests[i]``'s slice
    kv_indptr[r]..kv_indptr[r+1] into region regions[i]..regions[i+1] (decode, MTP)."""
    kv = kv_indptr.astype(np.int64)
    bounds = regions.astype(np.int64)
    rows = min(bounds.size - 1, positions.shape[0], requests.size)
    req = requests[:rows].astype(np.int64)
    known = (req >= 0) & (req < kv.size - 1)
    r = np.clip(req, 0, max(kv.size - 2, 0))
    ctx = np.where(known, kv[r + 1] - kv[r], -1) if kv.size > 1 else np.full(rows, -1)
    lengths = np.clip(bounds[1 : rows + 1] - bounds[:rows], 0, k)
    return RowsSeen(positions[:rows, :k].astype(np.int64), lengths, ctx)


def pages_used(lengths: np.ndarray, page: int, shape: tuple[int, ...]) -> np.ndarray:
    """[R, B] True where column b is one of request r's ceil(length / page) pages."""
    rows = min(shape[0], lengths.size)
    used = np.zeros(shape, dtype=bool)
    pages = -(-np.maximum(lengths[:rows].astype(np.int64), 0) // max(page, 1))
    used[:rows] = np.arange(shape[1])[None, :] < pages[:, None]
    return used


def describe(domain: Domain) -> list[str]:
    """The domain as text: each dimension, then its partitions and how a batch reaches them."""
    lines = [f"domain of {domain.path}: {len(domain.dimensions)} dimensions, "
             f"{len(domain.keys())} partitions ({len(domain.keys()) - len(domain.keys(False))} "
             "need a GPU)"]
    for dim in domain.dimensions:
        lines.append(f"  {dim.name} [{dim.kind}]: {dim.doc}")
        for part in dim.partitions:
            gpu = " (GPU)" if part.gpu else ""
            how = ", ".join(f"{k}={v}" for k, v in part.patch.items())
            lines.append(f"    {part.name:<20} {part.doc}{gpu}" + (f"  [{how}]" if how else ""))
    return lines
