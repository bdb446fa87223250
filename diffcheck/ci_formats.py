"""Reports a CI system reads: JUnit XML (one test case per report row) and a markdown summary
small enough to append to a CI step summary whatever the run size."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from diffcheck.files import replacing
from diffcheck.status import DEFAULT_FAIL_ON, ORDER, Status

#: statuses that mean the check could not be completed (JUnit <error>, not <failure>)
BROKEN = (Status.FAULT, Status.TIMEOUT, Status.ERROR)
#: the markdown summary stays below this many bytes
MARKDOWN_LIMIT = 64 * 1024


#: characters XML 1.0 cannot hold, even escaped (a kernel's message may carry an ANSI colour)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _xml(value: object) -> str:
    """Text a JUnit file can hold: control characters written as \\xNN."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", _text(value))


def _headline(row) -> str:
    """A row's most severe finding (a report written before the column existed: its error)."""
    return _text(getattr(row, "finding", "")) or _text(row.error)


def write_junit(report: pd.DataFrame, path: str | Path,
                fail_on: frozenset[Status] = DEFAULT_FAIL_ON, ending: str = "") -> Path:
    """One <testcase> per row: classname path.implementation.mode, name the case id.

    ``ending`` says why a run did not write every row ("interrupted after 107 of 156 rows");
    it becomes an <error> of its own, so an incomplete run never reads as passed.
    """
    statuses = [Status(s) for s in report["status"]]
    failures = sum(s in fail_on and s not in BROKEN for s in statuses)
    errors = sum(s in fail_on and s in BROKEN for s in statuses) + bool(ending)
    seconds = f"{report['elapsed_ms'].fillna(0).sum() / 1e3:.3f}" if len(report) else "0"
    tests = str(len(report) + bool(ending))
    root = ET.Element("testsuites", name="diffcheck", tests=tests,
                      failures=str(failures), errors=str(errors), time=seconds)
    suite = ET.SubElement(root, "testsuite", name="diffcheck", tests=tests,
                          failures=str(failures), errors=str(errors), skipped="0", time=seconds)
    if ending:
        case = ET.SubElement(suite, "testcase", classname="diffcheck", name="run complete",
                             time="0")
        ET.SubElement(case, "error", type="incomplete",
                      message=f"the run is incomplete: {_xml(ending)}").text = (
            f"diffcheck {_xml(ending)}: the rows it did not run were not checked")
    for row, status in zip(report.itertuples(index=False), statuses, strict=True):
        case = ET.SubElement(suite, "testcase", classname=_xml(f"{row.path}.{row.implementation}."
                             f"{row.mode}"), name=_xml(row.case_id),
                             time=f"{(row.elapsed_ms or 0) / 1e3:.6f}")
        finding = _xml(_headline(row))
        body = _xml(f"{_text(row.detail) or finding}\nreproduce: {row.reproduce}")
        if status in fail_on:
            tag = "error" if status in BROKEN else "failure"
            element = ET.SubElement(case, tag, type=status.value,
                                    message=f"{status.value}: {finding}"[:500])
            element.text = body
        elif status != Status.PASS:
            ET.SubElement(case, "system-out").text = f"{status.value} (not failing): {body}"
    path = Path(path)
    with replacing(path) as partial:  # never a half-written file, whoever reads it
        ET.ElementTree(root).write(partial, encoding="utf-8", xml_declaration=True)
    return path


def markdown_summary(report: pd.DataFrame, fail_on: frozenset[Status] = DEFAULT_FAIL_ON,
                     worst: int = 15, limit: int = MARKDOWN_LIMIT, ending: str = "") -> str:
    """Counts by path x implementation x mode x status, then the worst rows with their
    reproduce commands; cut to stay under ``limit`` bytes. ``ending`` says why the run did
    not write every row: such a run is INCOMPLETE, never passed."""
    failing = report[report["status"].isin([s.value for s in fail_on])]
    if ending:
        headline = f"INCOMPLETE: {ending}, {len(failing)} failing"
    else:
        verdict = "FAILED" if len(failing) else "passed"
        headline = f"{verdict} ({len(report)} rows, {len(failing)} failing)"
    lines = [f"## diffcheck: {headline}", ""]
    present = [s.value for s in ORDER if s.value in set(report["status"])]
    if len(report):
        table = pd.crosstab([report["path"], report["implementation"], report["mode"]],
                            report["status"])[present]
        lines += ["| path | implementation | mode | " + " | ".join(present) + " |",
                  "|" + " --- |" * (3 + len(present))]
        for (path, impl, mode), counts in table.iterrows():
            cells = " | ".join(str(int(counts[s])) if counts[s] else "" for s in present)
            lines.append(f"| {path} | `{impl}` | {mode} | {cells} |")
            if len("\n".join(lines)) > limit // 2:
                lines.append(f"| ... | {len(table)} groups in all | | |")
                break
        lines.append("")
    if len(failing):
        severity = failing["status"].map(lambda s: Status(s).severity)
        ordered = failing.assign(_s=severity).sort_values("_s", ascending=False, kind="stable")
        lines += [f"### Worst rows ({min(worst, len(ordered))} of {len(ordered)})", ""]
        for row in ordered.head(worst).itertuples(index=False):
            finding = _headline(row)[:300]
            entry = [f"- **{row.status}** `{row.case_id}` [{row.mode}] `{row.implementation}`: "
                     f"{finding}", f"  `{row.reproduce}`"]
            if len("\n".join(lines + entry).encode()) > limit - 200:
                lines.append("- ... (cut to stay small; see the CSV report)")
                break
            lines += entry
    text = "\n".join(lines) + "\n"
    return text.encode()[:limit].decode(errors="ignore")


class JUnitSink:
    """Writes the JUnit XML of the run's rows when the run ends, however it ends."""

    def __init__(self, path: Path, fail_on: frozenset[Status]) -> None:
        from diffcheck.report import frame

        self.path, self.fail_on = path, fail_on
        # an earlier run's file is replaced at once: a run killed before its end leaves a
        # file that says so, never the last run's verdict
        write_junit(frame([]), path, fail_on, "running: the run has not finished (killed?)")

    def write(self, outcome) -> None:
        pass

    def finish(self, result) -> None:
        from diffcheck.report import frame

        write_junit(frame(result.rows), self.path, self.fail_on, result.ending())


class SummarySink:
    """Appends the markdown summary (a CI step summary may hold other steps) when the run
    ends, however it ends."""

    def __init__(self, path: Path, fail_on: frozenset[Status], coverage=None) -> None:
        #: (run result) -> a diffcheck.coverage.Coverage, or None
        self.path, self.fail_on, self.coverage = path, fail_on, coverage
        # appended (a CI step summary holds other steps' too): a run killed before its end
        # leaves this line last, not an earlier run's verdict
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            self.start = f.tell()
            f.write("## diffcheck: running (a summary follows when the run ends; none: it "
                    "was killed)\n\n")

    def write(self, outcome) -> None:
        pass

    def finish(self, result) -> None:
        from diffcheck.report import frame

        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = markdown_summary(frame(result.rows), self.fail_on, ending=result.ending())
        if self.coverage is not None:
            text += "\n" + self.coverage(result).markdown()
        with self.path.open("r+") as f:  # the summary takes the place of the running line
            f.seek(self.start)
            f.truncate()
            f.write(text)
