"""tests/files.py's scan of a data folder while a delete removes folders under it."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.files import files_holding


def test_a_folder_removed_while_the_scan_runs_is_skipped(tmp_path, monkeypatch):
    """CI's flaky test_delete_journal ("a delete stopped after the rows..."): the scan (Path.rglob)
    raised FileNotFoundError when a version folder it had listed was removed by the purge before it
    read it. Here reading the first file removes the other folders, which the scan listed but has
    not read yet."""
    for name in ("a", "b", "c"):
        (tmp_path / name / "deep").mkdir(parents=True)
        (tmp_path / name / "deep" / "f").write_bytes(b"secret")
        (tmp_path / name / "f").write_bytes(b"secret")
    read, removed = Path.read_bytes, []

    def read_then_remove(path: Path) -> bytes:
        data = read(path)
        if not removed:
            removed.extend(d.name for d in tmp_path.iterdir() if d.name != path.relative_to(tmp_path).parts[0])
            for name in removed:
                shutil.rmtree(tmp_path / name)
        return data

    monkeypatch.setattr(Path, "read_bytes", read_then_remove)
    found = files_holding(tmp_path, "secret")
    assert len(removed) == 2 and found and all(f.endswith(": secret") for f in found)
    assert not any(f.startswith(tuple(removed)) for f in found)
