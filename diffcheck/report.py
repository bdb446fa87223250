"""The CSV report (one row per case x implementation x mode) and the console summary.

Rows are appended to the CSV as they finish, so an interrupted or crashed run keeps every row
it completed.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, astuple, dataclass, fields
from pathlib import Path

import pandas as pd

from diffcheck.errors import UsageError
from diffcheck.status import ORDER, Status

try:
    import fcntl
except ImportError:  # not on Windows: reports are not locked there
    fcntl = None


@dataclass
class ReportRow:
    """Field order is the CSV column order; README.md documents every column."""

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
    well_formed: bool
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
    detail: str
    reproduce: str


COLUMNS = [f.name for f in fields(ReportRow)]
_NULLABLE_INT = ("first_expected", "first_actual")
#: the dtype of every column, so a report reads back exactly as it was written
DTYPES = {f.name: {"str": "str", "int": "int64", "bool": "bool", "float": "float64",
                   "int | None": "Int64"}[f.type] for f in fields(ReportRow)}


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


class ReportWriter:
    """Appends each finished row to the CSV at once (the header is written at the start)."""

    def __init__(self, path: str | Path) -> None:
        self.file = LockedCsv(path, frame([]), "--report")
        self.path = self.file.path
        self.count = 0

    def write(self, outcome) -> None:
        self.file.append_values(list(astuple(outcome.row)))
        self.count += 1

    def finish(self, result) -> None:
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
                    "found_by": finding.found_by, "buffer": example.buffer,
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
    if len(failing) > worst:
        lines.append(f"... and {len(failing) - worst} more failing rows (see the CSV report)")
    passed = sum(r.status == Status.PASS for r in rows)
    lines.append(f"{len(rows)} rows: {passed} passed, {len(failing)} failed")
    return "\n".join(lines)
