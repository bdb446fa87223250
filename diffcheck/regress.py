"""Comparing reports: what got worse between a base and a head run (the pre-merge gate), and
joining the reports of sharded CI jobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from diffcheck.errors import UsageError
from diffcheck.report import COLUMNS, incomplete, read_report
from diffcheck.status import DEFAULT_FAIL_ON, Status

#: what identifies one check across runs
KEY = ["path", "implementation", "mode", "case_id", "fill"]
#: counts whose growth is a new finding even when the status stays the same
COUNTS = ["mismatches", "stray_writes", "oob_writes", "oob_reads", "divergences"]


def load(path: str | Path) -> pd.DataFrame:
    """A saved report, checked to be one (one clear line otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"report {path}: no such file")
    try:
        df = read_report(path)
    except Exception as e:  # pandas raises many kinds for a file that is not CSV
        raise UsageError(f"report {path}: not a readable CSV ({type(e).__name__}: {e})") from None
    missing = [c for c in KEY + ["status"] if c not in df.columns]
    if missing:
        raise UsageError(f"report {path}: not a diffcheck report (no {', '.join(missing)} column)")
    unknown = sorted(set(df["status"].astype(str)) - {s.value for s in Status})
    if unknown:
        raise UsageError(f"report {path}: unknown status '{unknown[0]}' (written by another "
                         "diffcheck version?)")
    df.attrs["path"] = str(path)
    #: why the run that wrote it did not finish (its run marker), '' when it did
    df.attrs["incomplete"] = incomplete(path, df)
    return df


@dataclass
class Regression:
    worse: pd.DataFrame
    better: pd.DataFrame
    only_base: pd.DataFrame
    only_head: pd.DataFrame

    @property
    def new_failures(self) -> pd.DataFrame:
        """Rows only in head that fail: a new check that fails also blocks the gate."""
        failing = [s.value for s in DEFAULT_FAIL_ON]
        return self.only_head[self.only_head["status"].isin(failing)]

    @property
    def blocks(self) -> bool:
        return bool(len(self.worse) or len(self.new_failures))

    def describe(self) -> str:
        lines = [f"{len(self.worse)} worse, {len(self.better)} better, {len(self.only_base)} only "
                 f"in base, {len(self.only_head)} only in head "
                 f"({len(self.new_failures)} of them failing)"]
        for title, rows in (("worse", self.worse), ("new and failing", self.new_failures),
                            ("better", self.better)):
            for row in rows.head(20).itertuples(index=False):
                before = getattr(row, "status_base", "")
                after = getattr(row, "status_head", getattr(row, "status", ""))
                change = f"{before} -> {after}" if before else after
                lines.append(f"{title}: {row.case_id} [{row.mode}] {row.implementation}: {change}")
        return "\n".join(lines)


def regress(base: pd.DataFrame, head: pd.DataFrame) -> Regression:
    """Match rows by KEY; worse = more severe status, or the same failing status with more
    findings; better = less severe."""
    for name, df in (("base", base), ("head", head)):
        if df.duplicated(KEY).any():
            raise UsageError(f"{name} report has two rows for one check (merge of overlapping "
                             "shards?)")
    both = base.merge(head, on=KEY, how="outer", suffixes=("_base", "_head"), indicator=True)
    matched = both[both["_merge"] == "both"]
    sev_base = matched["status_base"].map(lambda s: Status(s).severity)
    sev_head = matched["status_head"].map(lambda s: Status(s).severity)
    grew = pd.Series(False, index=matched.index)
    for count in COUNTS:
        if f"{count}_base" in matched and f"{count}_head" in matched:
            grew |= matched[f"{count}_head"].fillna(0) > matched[f"{count}_base"].fillna(0)
    failing = matched["status_head"].isin([s.value for s in DEFAULT_FAIL_ON])
    worse = matched[(sev_head > sev_base) | ((sev_head == sev_base) & failing & grew)]
    better = matched[sev_head < sev_base]
    keep = [c for c in COLUMNS if c in base.columns]
    only_base = base.merge(head[KEY], on=KEY, how="left", indicator=True)
    only_head = head.merge(base[KEY], on=KEY, how="left", indicator=True)
    return Regression(worse, better,
                      only_base[only_base["_merge"] == "left_only"][keep],
                      only_head[only_head["_merge"] == "left_only"][keep])


def merge(reports: list[pd.DataFrame]) -> pd.DataFrame:
    """Join shard reports; a check present in two of them is an error (overlapping shards)."""
    joined = pd.concat(reports, ignore_index=True)
    dup = joined.duplicated(KEY, keep=False)
    if dup.any():
        first = joined[dup].iloc[0]
        raise UsageError(f"{int(dup.sum())} rows appear in more than one report, first "
                         f"{first['case_id']} [{first['mode']}] {first['implementation']} "
                         "(reports of the same shard?)")
    return joined


def merge_files(reports: list[Path], output: Path) -> int:
    """Join the reports of `--shard` runs into ``output`` (written whole or not at all); the
    rows joined. A report that lacks the columns or comes from an incomplete run is refused."""
    from diffcheck.files import replacing
    from diffcheck.session import check_outputs

    where = check_outputs({"-o": output}, reports)["-o"]
    shards = [load(r) for r in reports]
    for rows in shards:
        lacking = [c for c in COLUMNS if c not in rows.columns]
        if lacking:  # the joined file would be one `report summarize` refuses
            raise UsageError(f"{rows.attrs['path']} lacks the report columns "
                             f"{', '.join(lacking[:4])}{' ...' if len(lacking) > 4 else ''}; "
                             "merge reports written by diffcheck compare")
        if rows.attrs["incomplete"]:
            raise UsageError(f"{rows.attrs['path']} is from an incomplete run: "
                             f"{rows.attrs['incomplete']}; rerun that shard before merging")
    joined = merge(shards)
    with replacing(where) as partial:  # a failed write never leaves half a report
        joined.to_csv(partial, index=False)
    return len(joined)
