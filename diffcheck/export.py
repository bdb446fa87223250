"""`diffcheck export`: a suite's cases written as .npz files, to edit, share or replay with
--cases, without overwriting a file a user edited."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from diffcheck.casefile import save_case


def export_suite(out_dir: Path, suite: str, path: str, seed: int, invalid_fill: int | None,
                 force: bool) -> list[Path]:
    """Write a suite's cases as .npz files into ``out_dir`` (a scenario suite: every step, as
    single cases); the files written. A file already there that holds another case (one a
    user edited) stops the export before anything is written, unless ``force``."""
    from diffcheck.case import Scenario
    from diffcheck.errors import UsageError
    from diffcheck.paths import select_paths
    from diffcheck.selection import build_suites
    from diffcheck.session import check_folder

    folder = check_folder("DIR", out_dir)
    paths = [spec.name for spec in select_paths(path)]
    staged: list[tuple[Path, Path]] = []
    try:
        for target in build_suites(paths, [suite], seed, invalid_fill):
            for c in target.steps if isinstance(target, Scenario) else [target]:
                final = folder / f"{c.suite}-{c.name.replace('/', '-')}.npz"
                temporary = folder / f".{final.stem}.{os.getpid()}.tmp.npz"
                folder.mkdir(parents=True, exist_ok=True)
                staged.append((save_case(c, temporary), final))
        changed = [final for temporary, final in staged
                   if final.exists() and not _same_archive(temporary, final)]
        if changed and not force:
            raise UsageError(f"{changed[0]} holds another case (edited?); {len(changed)} "
                             "such file(s) in the folder: nothing written; pass --force to "
                             "overwrite them or export into another folder")
        for temporary, final in staged:
            os.replace(temporary, final)
        return [final for _, final in staged]
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)


def _same_archive(a: Path, b: Path) -> bool:
    """Two .npz files hold the same members, byte for byte (their zip dates may differ)."""
    try:
        with zipfile.ZipFile(a) as x, zipfile.ZipFile(b) as y:
            names = sorted(x.namelist())
            return names == sorted(y.namelist()) and all(x.read(n) == y.read(n) for n in names)
    except (OSError, zipfile.BadZipFile, ValueError):
        return False

