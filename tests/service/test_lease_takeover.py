"""kill -9 of a replica in the middle of a DELETE, after the user's rows were deleted and before
the old versions holding them were removed: the other replica takes the lease after the TTL, and no
file under the store's folder may keep the user's text, even though a DELETE sent again finds no row
left to delete (before, it purged nothing then, and the text stayed in old versions for good)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pluralign.store import Store
from tests.files import files_holding
from tests.service.test_store import DIM

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py

TTL_S = 1.0
MARKER = b"zebra-marker"
CHILD = textwrap.dedent("""
    import sys
    import msgspec
    from pluralign.store import Store
    from tests.service.test_store import DIM, prefs
    store = Store(sys.argv[1], "enc", DIM, sync_seconds=0.05, lease_ttl_s=float(sys.argv[2]))
    rows, *vectors = prefs("t", "gone", 3)
    store.add_preferences([msgspec.structs.replace(r, prompt=f"zebra-marker {i}") for i, r in enumerate(rows)], *vectors)
    store.add_preferences(*prefs("t", "kept", 3))
    print("ready", flush=True)
    sys.stdin.readline()
    store.delete_user("t", "gone")
    print("deleted", flush=True)
""")


def files_with(root: Path, marker: bytes) -> list[str]:
    return files_holding(root, marker.decode())


def test_a_delete_killed_after_its_rows_went_is_purged_by_the_next_holder(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(TTL_S)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert files_with(tmp_path, MARKER)
        other = Store(str(tmp_path), "enc", DIM, sync_seconds=0.05, lease_ttl_s=TTL_S)
        other.lease.wait_s = 10
        child.stdin.write("go\n")
        child.stdin.flush()
        began = time.monotonic()
        while other.count_preferences("t", "gone"):  # the child deleted her rows: its purge is under way
            assert time.monotonic() - began < 20, "the child never deleted the rows"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert other.delete_user("t", "gone")["preferences"] == 0  # the DELETE sent again: nothing left to delete
        assert other.count_preferences("t", "kept") == 3
        assert files_with(tmp_path, MARKER) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
