"""A DELETE answered 200 while a population job that read the user's rows still runs, then the machine
loses power (the service killed with SIGKILL, and what was written but never fsynced lost with the page
cache): the restarted service must still take the vectors that job embedded of the user's texts out of
the jobs' embedding cache. The DELETE notes their keys in `jobs/forget-at-exit/<job>.keys`
(`Admin.forget_vectors_at_exit`); that note is all the restart has to go on.

The served process records each fsync (the path and the file's size then); after the kill the test
keeps of each note only what was fsynced, its name only if its folder was fsynced after it was made:
what a power loss would have left. Slow (two service starts and a PAL worker: about a minute)."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from service.auth import KeyRing
from tests.e2e.test_e2e_serve import ServeProcess
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons, stopped_after_reading
from tests.service.test_data34_delete_job import cached

# the served process, each fsync noted in $FSYNCED as `<path>\t<size>` once it returned
RECORD_FSYNCS = """
import os, sys

_fsync = os.fsync

def fsync(fd):
    _fsync(fd)
    fd = fd if isinstance(fd, int) else fd.fileno()
    try:
        path, size = os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size
    except OSError:
        return
    with open(os.environ["FSYNCED"], "a") as f:
        f.write(f"{path}\\t{size}\\n")

os.fsync = fsync
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def lose_what_was_not_fsynced(folder, fsynced) -> None:
    """What a power loss leaves of the files in `folder` (none of them open any more): each cut to the size it
    had at its last fsync, and gone when it never had one or `folder` was not fsynced after it first was."""
    lines = [line.split("\t") for line in fsynced.read_text().splitlines()] if fsynced.exists() else []
    for path in folder.iterdir():
        sizes = [i for i, (p, _) in enumerate(lines) if p == str(path)]
        if not sizes or not any(p == str(folder) for p, _ in lines[sizes[0]:]):
            path.unlink()
            continue
        os.truncate(path, int(lines[sizes[-1]][1]))


def wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/stat") as f:  # an orphan the test's process does not reap: a zombie is gone
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.1)
    raise AssertionError(f"the job's worker {pid} did not end within {timeout} s")


@pytest.mark.slow
def test_a_delete_acknowledged_then_a_power_loss_leaves_no_vector_after_the_restart(tmp_path, tiny_generator_dir, tiny_pal_dir):
    """Before: the note was appended and closed, never fsynced (nor its folder): the 200 went out with it in
    the page cache only, the power loss took it, and the restart left the vectors the job embedded after the
    DELETE in the cache for good."""
    data, fsynced, cache = tmp_path / "data", tmp_path / "fsynced", tmp_path / "cache" / "embeddings.sqlite"
    data.mkdir()
    keys = KeyRing(data / "api_keys.json")
    tenant_key, admin_key = keys.issue("acme"), keys.issue("ops", admin=True)
    env = {"PLURALIGN_CACHE_DIR": str(tmp_path / "cache"), "FSYNCED": str(fsynced)}
    proc = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, code=RECORD_FSYNCS, **env)
    try:
        with httpx.Client(base_url=proc.url, headers={"Authorization": f"Bearer {tenant_key}"}, timeout=180) as acme, \
                httpx.Client(base_url=proc.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60) as admin:
            give_comparisons(acme, GONE, "tea", MARKER)
            give_comparisons(acme, "ann", "coffee")
            r = admin.post("/admin/jobs", json={"kind": "pal", "params": {"k": 2, "epochs": 2, "latent_dim": 8, "hidden": 16}})
            assert r.status_code == 201, r.text
            pid = stopped_after_reading(data, r.json())  # it read their rows and embeds nothing yet
            d = acme.delete(f"/v1/users/{GONE}")
            assert d.status_code == 200, d.text
        proc.kill9()  # right after the 200
    finally:
        proc.stop()
    os.kill(pid, signal.SIGCONT)  # the worker (its own session) outlives the service: it embeds their texts now
    wait_gone(pid, timeout=300)
    theirs = f"Some tea, number 0. {MARKER}"
    assert cached(cache, theirs) == 1 and cached(cache, "Some tea, number 0.") == 1  # what the DELETE must undo
    lose_what_was_not_fsynced(data / "jobs" / "forget-at-exit", fsynced)

    again = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, PLURALIGN_CACHE_DIR=str(tmp_path / "cache"))
    try:
        assert cached(cache, theirs) == 0 and cached(cache, f"A drink for morning 3? {MARKER}") == 0
        assert cached(cache, "Some tea, number 0.") == 1  # ann's rejected answer stays
        assert list((data / "jobs" / "forget-at-exit").iterdir()) == []
    finally:
        again.stop()
