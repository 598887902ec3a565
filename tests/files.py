"""Scanning a data folder for what a delete must have removed, while other writers keep going."""

from __future__ import annotations

from pathlib import Path


def files_holding(folder: Path, *needles: str) -> list[str]:
    """`path: needle` for every file under `folder` whose bytes contain a needle. A file that
    vanishes between the listing and the read (a concurrent writer's temporary file, renamed or
    removed) holds nothing any more and is skipped."""
    found = []
    for path in folder.rglob("*"):
        try:
            data = path.read_bytes() if path.is_file() else b""
        except FileNotFoundError:
            continue
        found += [f"{path.relative_to(folder)}: {n}" for n in needles if n.encode() in data]
    return found
