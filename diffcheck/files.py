"""Writing an output whole or not at all: into a hidden file beside it, renamed over it only
once written, so a run stopped mid-write (or a full disk) never leaves a truncated file where
an earlier one was."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a partial file to write; it replaces ``path`` when the block ends normally and is
    removed otherwise. Missing folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
