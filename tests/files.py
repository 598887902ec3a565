"""Scanning a data folder for what a delete must have removed, while other writers keep going; a disk
that fills up (a file size limit)."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Every file this process writes may grow to `limit` bytes: past it, the write fails (EFBIG, as a
    full disk's ENOSPC). Worker processes started before keep the limit they had."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def files_holding(folder: Path, *needles: str) -> list[str]:
    """`path: needle` for every file under `folder` whose bytes contain a needle. A file that
    vanishes between the listing and the read (a concurrent writer's temporary file, renamed or
    removed) holds nothing any more and is skipped."""
    found = []
    # os.walk, not Path.rglob: rglob raises FileNotFoundError when a folder it listed is removed before
    # it reads it (a delete's purge removing an old version's folder); os.walk skips such a folder
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            try:
                data = path.read_bytes() if path.is_file() else b""
            except FileNotFoundError:
                continue
            found += [f"{path.relative_to(folder)}: {n}" for n in needles if n.encode() in data]
    return found
