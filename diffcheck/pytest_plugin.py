"""pytest plugin: an engine's kernel checked by diffcheck, one pytest item per report row.

Installed with diffcheck (the ``pytest11`` entry point), so an engine's test file needs one
line::

    from diffcheck.pytest_plugin import kernel_test

    test_decode_kernel = kernel_test("my_engine.ops:convert", path="decode")

or, to write the function itself::

    @pytest.mark.diffcheck(impl="my_engine.ops:convert", path="decode", suites=["edge"])
    def test_decode_kernel(diffcheck_row):
        diffcheck_row.assert_passes()

Each selected row becomes an item ``test_decode_kernel[edge/decode-odd-minus-one-eager]``;
a failing one shows its status, first finding and reproduce command. Items are ordinary:
``-k``, ``-x``, ``--lf`` and xdist behave as usual. Rows run the first time an item of their
test function needs them: all the function's selected items at once in worker processes,
or, under xdist, one check (case x mode) at a time, since another worker may hold the rest.
This module imports nothing heavy until a marked test is collected, so the plugin costs an
engine's other tests nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from diffcheck.defaults import TIMEOUT

MARKER = "diffcheck"
#: keyword arguments the marker (and kernel_test) take, with their defaults
OPTIONS: dict[str, Any] = {
    "impl": None, "path": None, "suites": None, "modes": "all", "cases": (),
    "case": (), "device": "auto", "invalid_fill": None, "seed": 0, "graph_size": None,
    "timeout": TIMEOUT, "isolation": "auto", "workers": 0, "fail_on": None,
}


@dataclass
class _Check:
    """The selection of one marked test function, and the rows it has produced so far."""

    options: dict[str, Any]
    selection: Any = None
    settings: Any = None
    jobs: list = field(default_factory=list)
    rows: dict[str, Any] = field(default_factory=dict)  # row id -> ReportRow
    wanted: set[str] = field(default_factory=set)  # row ids of the items that will run

    def prepare(self) -> None:
        from diffcheck.api import _target
        from diffcheck.session import select_for

        o = self.options
        if not o["impl"] or not o["path"]:
            raise pytest.UsageError("@pytest.mark.diffcheck needs impl= and path=")
        self.device, self.selection = select_for(self.run_options(_target(o["impl"])))
        self.jobs = self.selection.jobs()

    def run_options(self, target: str):
        """The marker's keywords as the run options every front end shares."""
        from diffcheck.session import RunOptions

        o = self.options
        return RunOptions(path=o["path"], impls=[target], suites=list(o["suites"] or []),
                          case_files=list(o["cases"]), case_patterns=list(o["case"]),
                          modes=o["modes"], seed=o["seed"], invalid_fill=o["invalid_fill"],
                          graph_size=o["graph_size"], device=o["device"],
                          timeout=o["timeout"], isolation=o["isolation"],
                          workers=o["workers"])

    def row_ids(self) -> list[tuple[str, int, int]]:
        """(item id, job index, row index) of every row, in selection order."""
        several = len({job.impl.name for job in self.jobs}) > 1
        ids = []
        for j, job in enumerate(self.jobs):
            for r, row_case in enumerate(job.mode.rows(job.case)):
                name = f"{row_case.case_id}-{job.mode.name}"
                ids.append((f"{job.impl.name}:{name}" if several else name, j, r))
        return ids

    def run(self, job_indices: Sequence[int]) -> None:
        from diffcheck.executors import Interrupted, run_all
        from diffcheck.session import settings_of

        if self.settings is None:
            from diffcheck.api import _target

            self.settings = settings_of(self.run_options(_target(self.options["impl"])),
                                        self.device, self.selection)
        try:
            rows = iter(run_all([self.jobs[j] for j in job_indices], self.settings))
        except Interrupted:
            raise KeyboardInterrupt from None
        for j in job_indices:  # rows come in job order
            for r, _ in enumerate(self.jobs[j].mode.rows(self.jobs[j].case)):
                row = next(rows, None)
                if row is None:
                    raise RuntimeError(f"diffcheck wrote no row for {self.jobs[j].case.case_id}"
                                       f" [{self.jobs[j].mode.name}]: the run is incomplete")
                self.rows[f"{j}/{r}"] = row


@dataclass
class RowResult:
    """What a test item gets as ``diffcheck_row``: its report row, run on first use."""

    check: _Check
    job: int
    index: int
    under_xdist: bool

    @property
    def row(self):
        key = f"{self.job}/{self.index}"
        if key not in self.check.rows:
            if self.under_xdist:
                self.check.run([self.job])
            else:  # every selected item of this function, in one run
                wanted = sorted({int(k.split("/")[0]) for k in self.check.wanted
                                 if k not in self.check.rows} | {self.job})
                self.check.run(wanted)
        return self.check.rows[key]

    def assert_passes(self, fail_on: str | None = None) -> None:
        """Fail with the row's status, first finding and reproduce command unless it passes
        (``fail_on``: comma-separated statuses; default: divergence and worse)."""
        from diffcheck.status import DEFAULT_FAIL_ON, Status, parse_statuses

        row = self.row
        fail_on = fail_on or self.check.options["fail_on"]
        chosen = parse_statuses(fail_on) if fail_on else DEFAULT_FAIL_ON
        if Status(row.status) in chosen:
            pytest.fail(f"diffcheck {row.status}: {row.case_id} [{row.mode}] "
                        f"{row.implementation}: {row.finding or row.error}\n"
                        f"reproduce: {row.reproduce}", pytrace=False)


def kernel_test(impl: Any, path: str, **options: Any):
    """A test function checking ``impl`` against ``path``'s contract: assign it to a
    ``test_*`` name in a test module. Options are the marker's (suites, modes, device, ...)."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise TypeError(f"kernel_test: unknown option(s) {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(k for k in OPTIONS if k not in ('impl', 'path'))}")

    @pytest.mark.diffcheck(impl=impl, path=path, **options)
    def test(diffcheck_row: RowResult) -> None:
        diffcheck_row.assert_passes()

    return test


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(impl, path, suites=None, modes='all', ...): check a kernel with "
        "diffcheck, one item per report row (the test takes the diffcheck_row fixture)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None or "diffcheck_row" not in metafunc.fixturenames:
        return
    unknown = set(marker.kwargs) - set(OPTIONS)
    if unknown or marker.args:
        raise pytest.UsageError(f"@pytest.mark.{MARKER}: pass options by keyword; unknown: "
                                f"{', '.join(sorted(unknown)) or 'positional arguments'}")
    check = _Check({**OPTIONS, **marker.kwargs})
    try:
        check.prepare()
    except Exception as e:  # a bad impl or path: one line, as the CLI says it
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: {e}") from None
    xdist = hasattr(metafunc.config, "workerinput")
    params = [RowResult(check, j, r, xdist) for _, j, r in check.row_ids()]
    metafunc.parametrize("diffcheck_row", params, ids=[i for i, _, _ in check.row_ids()])


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember which rows will run (after -k, --lf, ... chose), so the first item of a
    function runs exactly those."""
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        result = callspec.params.get("diffcheck_row") if callspec else None
        if isinstance(result, RowResult):
            result.check.wanted.add(f"{result.job}/{result.index}")


@pytest.fixture
def diffcheck_row(request: pytest.FixtureRequest) -> RowResult:
    """The report row of this item (see the ``diffcheck`` marker)."""
    param = getattr(request, "param", None)
    if not isinstance(param, RowResult):
        raise pytest.UsageError("diffcheck_row needs @pytest.mark.diffcheck(impl=..., path=...) "
                                "on the test function")
    return param
