"""A replica paused (SIGSTOP, a long GC pause, a frozen VM) while it holds the store's maintenance
lease loses it after the TTL; another replica then takes it. When the paused one resumes, it must
notice before its next destructive step (a delete, a rewrite, a removal of old versions) and stop
its turn, or two replicas purge at once: the very thing the lease exists to prevent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pluralign.store import Store
from tests.service.test_store import DIM

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py

TTL_S = 1.0
CHILD = textwrap.dedent("""
    import sys
    from pluralign.store import Store
    from tests.service.test_store import DIM, prefs
    store = Store(sys.argv[1], "enc", DIM, sync_seconds=0.05, lease_ttl_s=float(sys.argv[2]))
    store.add_preferences(*prefs("t", "gone", 3))
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        print("deleted", store.delete_user("t", "gone"), flush=True)
    except TimeoutError as exc:
        print("stopped", type(exc).__name__, exc, flush=True)
""")


def test_a_holder_paused_past_the_ttl_stops_its_turn_when_it_resumes(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(TTL_S)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "ready"
        other = Store(str(tmp_path), "enc", DIM, sync_seconds=0.05, lease_ttl_s=TTL_S)
        other.lease.wait_s = 10
        child.stdin.write("go\n")
        child.stdin.flush()
        began = time.monotonic()
        while not other.lease.table.count_rows("holder != ''"):  # the child's turn has begun
            assert time.monotonic() - began < 20, "the child never took the lease"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGSTOP)  # paused mid-turn, holding the lease
        time.sleep(TTL_S * 1.5)
        with other.lease:  # free after the TTL: this replica's turn
            os.kill(child.pid, signal.SIGCONT)
            line = child.stdout.readline().strip()  # what the resumed child did while this one holds the lease
            assert line.startswith("stopped LeaseLost"), line
        assert child.wait(20) == 0
        other.refresh(*other.tables)
        other.delete_user("t", "gone")  # the DELETE sent again finishes
        assert other.count_preferences("t", "gone") == 0
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait()
