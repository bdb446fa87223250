"""The CSV report (one row per case x implementation x mode) and the console summary.

Rows are appended to the CSV as they finish, so an interrupted or crashed run keeps every row
it completed.
"""

from __future__ import annotations

import csv
import json
import shlex
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from diffcheck.defaults import TIMEOUT
from diffcheck.errors import UsageError
from diffcheck.files import replacing
from diffcheck.findings import Comparison, describe
from diffcheck.status import ORDER, Status, worst

if TYPE_CHECKING:
    from diffcheck.calls import Contract
    from diffcheck.case import Case
    from diffcheck.job import Job
    from diffcheck.settings import RunSettings

try:
    import fcntl
except ImportError:  # not on Windows: reports are not locked there
    fcntl = None


@dataclass
class ReportRow:
    """Field order is the CSV column order; README.md documents every column. A field whose
    metadata says ``column: False`` is data for diffcheck's own front ends, not a column."""

    run_id: str
    path: str
    implementation: str
    impl_safe: bool
    mode: str
    device: str
    suite: str
    case_id: str
    seed: int
    fill: int
    rows: int
    tokens: int
    k: int
    #: the path's other scalars as the kernel was given them (page_size=16), or ""
    scalars: str
    well_formed: bool
    #: configs of an autotuned kernel the row ran under (0: no autotuner reached)
    configs: int
    #: the config the row's status comes from (its worst; "i/N kernel: BLOCK_N=..., ..."),
    #: or ""
    config: str
    #: the values each @triton.heuristics of the kernels took (kernel.NAME=v|w), or ""
    heuristics: str
    status: str
    elements_checked: int
    mismatches: int
    first_mismatch: str
    first_expected: int | None
    first_actual: int | None
    stray_writes: int
    first_stray: str
    oob_writes: int
    first_oob_write: str
    oob_write_found_by: str
    input_writes: int
    first_input_write: str
    side_effects: str
    oob_reads: int
    first_oob_read: str
    oob_read_found_by: str
    nondeterministic: int
    divergences: int
    fillings: int
    error: str
    elapsed_ms: float
    #: the row's most severe finding in one line (or its error): what a CI message shows
    finding: str
    detail: str
    reproduce: str
    #: the device mutant of the case this row is about (fuzz --fast), None for the case
    mutant: int | None = field(default=None, metadata={"column": False})


COLUMNS = [f.name for f in fields(ReportRow) if f.metadata.get("column", True)]


def make_row(
    job: Job, case: Case, settings: RunSettings, contract: Contract, comparison: Comparison,
    error: str, elapsed_ms: float, fillings: int, ended_as: Status = Status.ERROR,
) -> ReportRow:
    """One row from a job's findings; ``error`` (when set) ends it as ``ended_as``: error,
    fault or timeout."""
    from diffcheck import backend
    from diffcheck.paths import get_path

    spec = get_path(case.path)
    requests, tokens = spec.counts(case.intended_inputs())
    statuses = [f.kind for f in comparison.findings] + ([ended_as] if error else [])
    region = comparison.of(Status.MISMATCH) or comparison.of(Status.STALE_SENSITIVE)
    stray = comparison.of(Status.STRAY_WRITE)
    oob = comparison.of(Status.OOB_WRITE)
    read = comparison.of(Status.OOB_READ)
    written = comparison.of(Status.INPUT_WRITE)
    effect = comparison.of(Status.SIDE_EFFECT)
    racing = comparison.of(Status.NONDETERMINISTIC)
    diverging = comparison.of(Status.DIVERGENCE)
    described = [describe(f, comparison.checked)
                 for f in sorted(comparison.findings, key=lambda f: -f.kind.severity)]
    described += list(comparison.notes)
    worst_status = worst(statuses)
    headline = error if error and worst_status == ended_as else (
        described[0] if described else error)
    return ReportRow(
        run_id=settings.run_id, path=case.path, implementation=job.impl.name,
        impl_safe=job.impl.safe, mode=job.mode.name,
        device=backend.describe(settings.device, settings.pinned),
        suite=case.suite or "file", case_id=case.case_id,
        seed=case.seed if case.source else settings.run_seed, fill=contract.fill,
        rows=requests, tokens=tokens, k=case.k,
        scalars=",".join(f"{n}={v}" for n, v in contract.scalars.items()),
        well_formed=case.well_formed, configs=0, config="", heuristics="",
        status=worst_status.value, elements_checked=comparison.checked,
        mismatches=region.count if region else 0,
        first_mismatch=region.location if region else "",
        first_expected=region.expected if region else None,
        first_actual=region.actual if region else None,
        stray_writes=stray.count if stray else 0, first_stray=stray.location if stray else "",
        oob_writes=sum(f.count for f in comparison.findings if f.kind == Status.OOB_WRITE),
        first_oob_write=oob.location if oob else "",
        oob_write_found_by=",".join(sorted({str(f.found_by) for f in comparison.findings
                                            if f.kind == Status.OOB_WRITE})),
        input_writes=sum(f.count for f in comparison.findings if f.kind == Status.INPUT_WRITE),
        first_input_write=written.location if written else "",
        side_effects=effect.location if effect else "",
        oob_reads=read.count if read else 0, first_oob_read=read.location if read else "",
        oob_read_found_by=str(read.found_by) if read else "",
        nondeterministic=racing.count if racing else 0,
        divergences=diverging.count if diverging else 0, fillings=fillings, error=error,
        elapsed_ms=round(elapsed_ms, 3), finding=headline, detail=" | ".join(described) or error,
        reproduce=reproduce(job, case, settings), mutant=case.mutant,
    )


def reproduce(job: Job, case: Case, settings: RunSettings) -> str:
    """A command that reruns this row alone (the run's fill: a swapped case swaps again)."""
    from diffcheck.case import Scenario
    from diffcheck.settings import default_fillings, default_instrument

    fill = case.fill if settings.fill_override is None else settings.fill_override
    words = ["diffcheck", "compare", "--path", case.path]
    if case.source:
        words += ["--cases", case.source]
    else:
        chosen = job.case.case_id if isinstance(job.case, Scenario) else case.case_id
        words += ["--suite", case.suite, "--case", chosen, "--seed", str(settings.run_seed)]
    words += ["--impl", job.impl.target if job.impl.outside else job.impl.name, "--mode",
              job.mode.name, "--invalid-fill", str(fill), "--device", settings.device.type]
    if isinstance(job.case, Scenario) and job.case.graph:
        words += ["--graph-size", str(job.case.graph)]
    if not settings.interpreter_check:
        words.append("--no-interpreter-check")
    if settings.instrument != default_instrument(settings.device):
        words.append("--instrument" if settings.instrument else "--no-instrument")
    if settings.fillings != default_fillings(settings.device, settings.interpreter_check):
        words += ["--fillings", str(settings.fillings)]
    if settings.timeout != TIMEOUT:
        words += ["--timeout", f"{settings.timeout:g}"]
    return shlex.join(words)
_NULLABLE_INT = ("first_expected", "first_actual")
#: the dtype of every column, so a report reads back exactly as it was written
DTYPES = {f.name: {"str": "str", "int": "int64", "bool": "bool", "float": "float64",
                   "int | None": "Int64"}[f.type] for f in fields(ReportRow) if f.name in COLUMNS}


def frame(rows: list[ReportRow]) -> pd.DataFrame:
    df = pd.DataFrame([asdict(r) for r in rows], columns=COLUMNS)
    return df.astype(DTYPES)


class LockedCsv:
    """A CSV this run owns: locked against other diffcheck runs (a second run writing the same
    file is refused instead of truncating or interleaving it), written row by row and flushed,
    so a crash keeps every finished row."""

    def __init__(self, path: str | Path, header: pd.DataFrame, what: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("a+", newline="")
        if fcntl is not None:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.handle.close()
                raise UsageError(f"{what} {self.path} is being written by another diffcheck run; "
                                 f"give this run a {what} of its own") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.writer = csv.writer(self.handle, lineterminator="\n")
        self.append(header, header=True)

    def append(self, df: pd.DataFrame, header: bool = False) -> None:
        df.to_csv(self.handle, header=header, index=False)
        self.handle.flush()

    def append_values(self, values: list) -> None:
        """One row as pandas would write it (None as empty), without building a frame: a
        frame per row costs more than most checks."""
        self.writer.writerow(["" if v is None else v for v in values])
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()  # releases the lock


def marker_of(report: str | Path) -> Path:
    """The run marker beside a report: whether the run that wrote the report finished."""
    report = Path(report)
    return report.with_name(f"{report.name}.run")


def write_marker(report: str | Path, run_id: str, state: str, ending: str = "") -> None:
    """State ``running`` when a run starts (a run killed outright leaves it so), then
    ``complete`` or ``incomplete`` with why; written atomically."""
    with replacing(marker_of(report)) as partial:
        partial.write_text(json.dumps({"run_id": run_id, "state": state, "ending": ending})
                           + "\n")


def incomplete(report: str | Path, rows: pd.DataFrame) -> str:
    """Why the run behind a report did not finish ('' when it did, or when no marker says:
    a report of an older diffcheck, or one copied without its marker)."""
    try:
        marker = json.loads(marker_of(report).read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(marker, dict) or "run_id" not in rows.columns or not len(rows):
        return ""
    if set(rows["run_id"].astype(str)) != {str(marker.get("run_id"))}:
        return ""  # the marker belongs to another run (the CSV was written over since)
    if marker.get("state") == "complete":
        return ""
    if marker.get("state") == "running":
        return (f"the run that wrote it never finished (killed, or still running), after "
                f"{len(rows)} rows")
    return str(marker.get("ending") or "the run did not finish")


class ReportWriter:
    """Appends each finished row to the CSV at once (the header is written at the start);
    the run marker beside it says whether the run finished (diffcheck report reads it)."""

    def __init__(self, path: str | Path, run_id: str = "") -> None:
        self.file = LockedCsv(path, frame([]), "--report")
        self.path, self.run_id = self.file.path, run_id
        self.count = 0
        if run_id:
            write_marker(self.path, run_id, "running")

    def write(self, outcome) -> None:
        self.file.append_values([getattr(outcome.row, c) for c in COLUMNS])
        self.count += 1

    def finish(self, result) -> None:
        if self.run_id:
            write_marker(self.path, self.run_id,
                         "complete" if result.complete else "incomplete", result.ending())
        self.file.close()


#: columns of the --details CSV, one row per finding element or access
DETAIL_COLUMNS = ["run_id", "path", "implementation", "mode", "case_id", "kind", "found_by",
                  "buffer", "offset", "location", "expected", "actual"]


class DetailsWriter:
    """Appends up to ``cap`` finding rows per report row (most severe findings first)."""

    def __init__(self, path: str | Path, cap: int) -> None:
        self.file = LockedCsv(path, pd.DataFrame(columns=DETAIL_COLUMNS), "--details")
        self.path, self.cap = self.file.path, cap
        self.count = 0

    def finish(self, result) -> None:
        self.file.close()

    def write(self, outcome) -> None:
        row, findings = outcome.row, outcome.findings
        records = []
        for finding in sorted(findings, key=lambda f: -f.kind.severity):
            for example in finding.examples:
                records.append({
                    "run_id": row.run_id, "path": row.path, "implementation": row.implementation,
                    "mode": row.mode, "case_id": row.case_id, "kind": finding.kind.value,
                    "found_by": str(finding.found_by), "buffer": example.buffer,
                    "offset": example.offset, "location": example.location,
                    "expected": example.expected, "actual": example.actual,
                })
        records = records[: self.cap]
        if records:
            df = pd.DataFrame(records, columns=DETAIL_COLUMNS)
            for name in ("expected", "actual"):
                df[name] = df[name].astype("Int64")
            self.file.append(df)
            self.count += len(records)


def read_report(path: str | Path) -> pd.DataFrame:
    """A saved report with the dtypes it was written with (empty text stays "", counts stay
    integers, a missing expected value is <NA>)."""
    df = pd.read_csv(path, keep_default_na=False, na_values={n: [""] for n in _NULLABLE_INT},
                     dtype={n: t for n, t in DTYPES.items() if t != "Int64"})
    for name in _NULLABLE_INT:
        if name in df.columns:
            df[name] = df[name].astype("Int64")
    return df


def summarize(rows: list[ReportRow], fail_on: frozenset[Status], worst: int = 10) -> str:
    """Counts by path x implementation x mode x status, then the worst rows with their detail."""
    if not rows:
        return "no rows"
    df = frame(rows)
    present = [s.value for s in ORDER if s.value in set(df["status"])]
    table = pd.crosstab([df["path"], df["implementation"], df["mode"]], df["status"])
    table = table[present]
    lines = [table.to_string(), ""]
    failing = [r for r in rows if Status(r.status) in fail_on]
    failing.sort(key=lambda r: -Status(r.status).severity)
    for row in failing[:worst]:
        lines.append(f"{row.case_id} [{row.mode}] {row.implementation}: {row.status}")
        if row.detail:
            lines.append(f"  {row.detail}")
        lines.append(f"  reproduce: {row.reproduce}")
        confirm = confirm_command(row)
        if confirm:
            lines.append(f"  confirm with memcheck: {confirm}")
    if len(failing) > worst:
        lines.append(f"... and {len(failing) - worst} more failing rows (see the CSV report)")
    lines.append(count_line(rows, failing))
    return "\n".join(lines)


#: statuses an external memory checker can confirm
MEMORY_STATUSES = frozenset({Status.FAULT, Status.OOB_WRITE, Status.OOB_READ})


def plain_call(reproduce_command: str) -> str:
    """The reproduce command as ``diffcheck call``: the same case, called once with every
    buffer its own allocation (diffcheck.plain)."""
    words = shlex.split(reproduce_command)
    if words[:2] != ["diffcheck", "compare"]:
        return ""
    kept, skip = ["diffcheck", "call"], False
    for word in words[2:]:
        if skip:
            skip = False
        elif word in ("--mode", "--fillings", "--timeout"):
            skip = True
        elif word != "--no-interpreter-check":
            kept.append(word)
    return shlex.join(kept)


def confirm_command(row: ReportRow) -> str:
    """For a memory finding on a GPU, the command that reruns its case under
    compute-sanitizer memcheck (with the caching allocator off, each buffer is its own
    cudaMalloc, so memcheck sees the real bounds); empty otherwise."""
    if Status(row.status) not in MEMORY_STATUSES or not row.device.startswith("cuda"):
        return ""
    plain = plain_call(row.reproduce)
    return f"PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck {plain}" \
        if plain else ""


def count_line(rows: list[ReportRow], failing: list[ReportRow]) -> str:
    """``345 rows: 300 passed, 45 stale_sensitive (not failing), 0 failed``: every row is
    counted once, so the numbers add up to the total."""
    passed = sum(r.status == Status.PASS for r in rows)
    failed = {id(r) for r in failing}
    others: dict[str, int] = {}
    for r in rows:
        if r.status != Status.PASS and id(r) not in failed:
            others[r.status] = others.get(r.status, 0) + 1
    middle = "".join(f", {n} {status}" for status, n in sorted(
        others.items(), key=lambda item: -Status(item[0]).severity))
    if others:
        middle += " (not failing)"
    return f"{len(rows)} rows: {passed} passed{middle}, {len(failing)} failed"
