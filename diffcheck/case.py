"""A case: the buffers one kernel call sees, plus what it should have been (malformed cases);
a scenario: steps replayed under graphs.

A leaf of the model: it knows no path. What a path's tensors and scalars mean is the path's
plug-in's business (diffcheck.paths); case files are diffcheck.casefile's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Case:
    """Named int32 input tensors for one path, with the contract scalars and provenance."""

    path: str
    name: str
    k: int
    fill: int
    seed: int
    description: str
    #: the buffers as allocated (for a strided view: the whole wider buffer)
    inputs: dict[str, torch.Tensor]
    #: strided views: tensor name -> number of leading columns the kernel is given
    columns: dict[str, int] = field(default_factory=dict)
    #: malformed cases only: the fresh metadata the output is judged against
    intended: dict[str, torch.Tensor] | None = None
    suite: str = ""
    #: where a stored case came from (a file path), for the reproduce command
    source: str = ""
    #: judge it with the other contract's fill when the implementation takes fill= (a
    #: kernel that ignores its fill argument then fails)
    fill_swapped: bool = False
    #: the path's other scalars (page size, stride rows, ...), by their names in the contract
    scalars: dict[str, int] = field(default_factory=dict)
    #: call the kernel without its output keyword: it allocates and returns the output (the
    #: contract's ``out=None``), which is then checked like a returned one
    without_out: bool = False
    #: the stale transformations that made a malformed case ("tensor:name", the domain's
    #: names; empty for a stored case that does not say)
    stale: tuple[str, ...] = ()
    #: a device mutant of a case (diffcheck.mutants): its index, which its name also ends with
    mutant: int | None = None

    @property
    def case_id(self) -> str:
        return f"{self.suite}/{self.name}" if self.suite else self.name

    @property
    def well_formed(self) -> bool:
        return self.intended is None

    def views(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Apply the strided column views to a set of whole buffers."""
        return {n: t[:, : self.columns[n]] if n in self.columns else t for n, t in tensors.items()}

    def kernel_inputs(self) -> dict[str, torch.Tensor]:
        return self.views(self.inputs)

    def intended_inputs(self) -> dict[str, torch.Tensor]:
        return self.views(self.intended if self.intended is not None else self.inputs)

    def fresh(self) -> Case:
        """The intended batch as a well-formed case: what an eager call would have been given."""
        if self.intended is None:
            return self
        return Case(self.path, self.name, self.k, self.fill, self.seed, self.description,
                    self.intended, dict(self.columns), None, self.suite, self.source,
                    self.fill_swapped, dict(self.scalars), self.without_out)


@dataclass
class Scenario:
    """Steps replayed under graphs captured on the first step of each graph size.

    A step's ``inputs`` are what the graph's static buffers hold when it replays (fresh data
    an engine copied, and whatever it left stale); its ``intended`` batch is what it should
    have been. Eager and capture rows run each step's intended batch, as an engine running
    without graphs would.
    """

    path: str
    name: str
    suite: str
    description: str
    steps: list[Case]
    #: the graph size (padded batch) each step replays on, one per step
    sizes: list[int]
    #: the --graph-size it was built with (None: the recipe's own), to rebuild it elsewhere
    graph: int | None = None
    #: where a stored scenario came from (a file path), for the reproduce command
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.steps):
            raise ValueError(f"scenario {self.name}: {len(self.steps)} steps but "
                             f"{len(self.sizes)} graph sizes")

    @property
    def case_id(self) -> str:
        return f"{self.suite}/{self.name}" if self.suite else self.name

    def graph_size(self, step: Case) -> int:
        """The graph size (padded batch) a step replays on."""
        return next(size for s, size in zip(self.steps, self.sizes, strict=True) if s is step)

    def fresh_steps(self) -> list[Case]:
        return [step.fresh() for step in self.steps]


def first_case(target: Case | Scenario) -> Case:
    """The case itself, or a scenario's first step (the one a contract is read from)."""
    return target.steps[0] if isinstance(target, Scenario) else target


def elements(target: Case | Scenario) -> int:
    """How many input elements the target holds on the host (every step's)."""
    steps = target.steps if isinstance(target, Scenario) else [target]
    return sum(t.numel() for step in steps for t in step.inputs.values())
