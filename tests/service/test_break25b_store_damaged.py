"""Session 25b: a damaged LanceDB table (a manifest cut short by a crash or a partial copy) at start
was a traceback ending in lance's `RuntimeError: lance error: LanceError(IO): does not have
sufficient data`, naming neither the table nor the folder. It is now one error naming both."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pluralign.store import Store, StoreError
from tests.conftest import REPO


def damage(store_dir, table="preferences"):
    """Overwrite the newest manifest of `table` with a few bytes, as a copy cut short would."""
    versions = store_dir / f"{table}.lance" / "_versions"
    manifest = max(versions.glob("*.manifest"), key=lambda p: p.stat().st_mtime_ns)
    manifest.write_bytes(b"garbage\n")
    return manifest


def test_a_damaged_table_is_an_error_naming_it(tmp_path):
    Store(str(tmp_path / "lancedb"), "enc", 4)
    damage(tmp_path / "lancedb", "interactions")
    with pytest.raises(StoreError) as caught:
        Store(str(tmp_path / "lancedb"), "enc", 4)
    message = str(caught.value)
    assert message.startswith(f"table `interactions` at {tmp_path / 'lancedb'} cannot be opened (damaged or unreadable: "), message


@pytest.mark.slow  # ~10 s: MiniLM and a tiny generator load before the tables are opened
def test_serve_on_a_damaged_table_is_one_error_and_leaves_the_folder_alone(tmp_path, tiny_generator_dir, tiny_pal_dir):
    data = tmp_path / "data"
    Store(str(data / "lancedb"), "sentence-transformers/all-MiniLM-L6-v2", 384)
    manifest = damage(data / "lancedb")
    before = sorted(str(p) for p in data.rglob("*"))
    env = {**os.environ, "PLURALIGN_PAL_DIR": str(tiny_pal_dir), "PLURALIGN_GENERATOR": str(tiny_generator_dir),
           "PLURALIGN_GENERATION_PROCESS": "false", "PLURALIGN_SHARED_DATA": str(tmp_path / "none")}
    result = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--data-dir", str(data), "--port", "0"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"pluralign: error: table `preferences` at {data / 'lancedb'} cannot be opened" in result.stderr, result.stderr[-3000:]
    assert sorted(str(p) for p in data.rglob("*")) == before and manifest.read_bytes() == b"garbage\n"
