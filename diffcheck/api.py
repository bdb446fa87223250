"""The Python API for test suites: run a path's suites over one implementation, get a DataFrame.

    from diffcheck.api import check, assert_passes

    def test_my_convert_kernel():
        report = check("my_engine.kernels:convert", path="decode", modes="all")
        assert_passes(report)

``check`` sets up the device as the CLI does (on CPU it sets TRITON_INTERPRET=1, so call it
before your kernel module is imported, or run it in a fresh process).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from diffcheck import session
from diffcheck.defaults import TIMEOUT
from diffcheck.errors import UsageError
from diffcheck.report import frame
from diffcheck.status import DEFAULT_FAIL_ON, Status, parse_statuses


def _target(impl: str | Callable) -> str:
    if isinstance(impl, str):
        return impl
    module, name = getattr(impl, "__module__", None), getattr(impl, "__qualname__", "")
    if not module or "<" in name:
        raise TypeError("pass the implementation as 'module:function' or a module-level "
                        "function (a lambda or nested function cannot be loaded by name)")
    return f"{module}:{name}"


def _names(value: str | Sequence[str] | None) -> list[str]:
    """One name or several: ``suites="edge"`` is the suite edge, not its letters."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    names = list(value)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise UsageError(f"suite and case names are strings, got {bad[0]!r}")
    return names


def check(
    impl: str | Callable,
    path: str,
    suites: str | Sequence[str] | None = None,
    modes: str | Sequence[str] = "all",
    *,
    device: str = "auto",
    invalid_fill: int | None = None,
    seed: int = 0,
    cases: str | Sequence[str] = (),
    graph_size: int | None = None,
    timeout: float = TIMEOUT,
    isolation: str = "auto",
    workers: int = 0,
    instrument: bool | None = None,
) -> pd.DataFrame:
    """Run ``suites`` (and stored ``cases``) of ``path`` over ``impl``; one row per check.

    ``impl`` is a registered name, ``module:function``, ``file.py:function`` or a module-level
    function; ``suites`` default to the CLI's (see README: they catch the known bug classes);
    ``modes`` is eager, capture, replay, graph or all (the default), or a list of them. A
    run that could not write every row raises instead of returning a partial report. Bad
    arguments raise diffcheck.errors.UsageError with the CLI's message.
    """
    selection, settings = session.prepare(session.RunOptions(
        path=path, impls=[_target(impl)], suites=_names(suites), case_files=_names(cases),
        modes=modes, seed=seed, invalid_fill=invalid_fill, graph_size=graph_size,
        device=device, timeout=timeout, isolation=isolation, workers=workers,
        instrument=instrument))
    result = session.run(selection, settings)
    if result.stopped == "interrupted":
        raise KeyboardInterrupt(result.ending())
    if not result.complete:
        raise RuntimeError(f"diffcheck {result.ending()}")
    return frame(result.rows)


def failing(report: pd.DataFrame, fail_on: str | None = None) -> pd.DataFrame:
    """The rows whose status fails (``fail_on``: comma-separated statuses), worst first."""
    chosen = parse_statuses(fail_on) if fail_on else DEFAULT_FAIL_ON
    bad = report[report["status"].isin([s.value for s in chosen])]
    severity = bad["status"].map(lambda s: Status(s).severity)
    return bad.assign(_severity=severity).sort_values("_severity", ascending=False,
                                                      kind="stable").drop(columns="_severity")


def assert_passes(report: pd.DataFrame, fail_on: str | None = None, worst: int = 5) -> None:
    """Raise AssertionError listing the worst rows (status, case, finding, reproduce)."""
    bad = failing(report, fail_on)
    if bad.empty:
        return
    lines = [f"diffcheck: {len(bad)} of {len(report)} rows failed"]
    for row in bad.head(worst).itertuples():
        lines.append(f"- {row.status}: {row.case_id} [{row.mode}] {row.implementation}: "
                     f"{row.finding}")
        lines.append(f"  reproduce: {row.reproduce}")
    if len(bad) > worst:
        lines.append(f"... and {len(bad) - worst} more")
    raise AssertionError("\n".join(lines))
