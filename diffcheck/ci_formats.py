"""Reports a CI system reads: JUnit XML (one test case per report row) and a markdown summary
small enough to append to a CI step summary whatever the run size."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from diffcheck.status import DEFAULT_FAIL_ON, ORDER, Status

#: statuses that mean the check could not be completed (JUnit <error>, not <failure>)
BROKEN = (Status.FAULT, Status.TIMEOUT, Status.ERROR)
#: the markdown summary stays below this many bytes
MARKDOWN_LIMIT = 64 * 1024


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def write_junit(report: pd.DataFrame, path: str | Path,
                fail_on: frozenset[Status] = DEFAULT_FAIL_ON) -> Path:
    """One <testcase> per row: classname path.implementation.mode, name the case id."""
    statuses = [Status(s) for s in report["status"]]
    failures = sum(s in fail_on and s not in BROKEN for s in statuses)
    errors = sum(s in fail_on and s in BROKEN for s in statuses)
    seconds = f"{report['elapsed_ms'].fillna(0).sum() / 1e3:.3f}" if len(report) else "0"
    root = ET.Element("testsuites", name="diffcheck", tests=str(len(report)),
                      failures=str(failures), errors=str(errors), time=seconds)
    suite = ET.SubElement(root, "testsuite", name="diffcheck", tests=str(len(report)),
                          failures=str(failures), errors=str(errors), skipped="0", time=seconds)
    for row, status in zip(report.itertuples(index=False), statuses, strict=True):
        case = ET.SubElement(suite, "testcase", classname=f"{row.path}.{row.implementation}."
                             f"{row.mode}", name=str(row.case_id),
                             time=f"{(row.elapsed_ms or 0) / 1e3:.6f}")
        finding = _text(row.detail) or _text(row.error)
        body = f"{finding}\nreproduce: {row.reproduce}"
        if status in fail_on:
            tag = "error" if status in BROKEN else "failure"
            element = ET.SubElement(case, tag, type=status.value,
                                    message=f"{status.value}: {finding.split(' | ')[0]}"[:500])
            element.text = body
        elif status != Status.PASS:
            ET.SubElement(case, "system-out").text = f"{status.value} (not failing): {body}"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def markdown_summary(report: pd.DataFrame, fail_on: frozenset[Status] = DEFAULT_FAIL_ON,
                     worst: int = 15, limit: int = MARKDOWN_LIMIT) -> str:
    """Counts by path x implementation x mode x status, then the worst rows with their
    reproduce commands; cut to stay under ``limit`` bytes."""
    failing = report[report["status"].isin([s.value for s in fail_on])]
    verdict = "FAILED" if len(failing) else "passed"
    lines = [f"## diffcheck: {verdict} ({len(report)} rows, {len(failing)} failing)", ""]
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
            finding = (_text(row.detail) or _text(row.error)).split(" | ")[0][:300]
            entry = [f"- **{row.status}** `{row.case_id}` [{row.mode}] `{row.implementation}`: "
                     f"{finding}", f"  `{row.reproduce}`"]
            if len("\n".join(lines + entry).encode()) > limit - 200:
                lines.append("- ... (cut to stay small; see the CSV report)")
                break
            lines += entry
    text = "\n".join(lines) + "\n"
    return text.encode()[:limit].decode(errors="ignore")
