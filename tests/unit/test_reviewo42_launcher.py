"""The die-with-parent launcher the Ray runner's actor starts a worker through (ops42), without Ray: a process
standing for the actor starts the worker as `JobProcess.start` does (own session), then dies. Linux only (elsewhere
the launcher is not used). Until now only the slow-marked Ray test (`tests/e2e/test_ops42_ray.py`) ran it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

ACTOR = """
import subprocess, sys
from training.jobs.ray_runner import dying_with_parent
worker = subprocess.Popen(dying_with_parent([sys.executable, "-c", "import time; time.sleep(60)"], "."),
                          start_new_session=True, stdin=subprocess.DEVNULL)
print(worker.pid, flush=True)
sys.stdin.read()  # until the test kills it
"""


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as stat:  # a zombie (reparented, not yet reaped) has ended too
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        time.sleep(0.05)
    return False


def test_a_worker_ends_when_the_process_that_started_it_is_killed():
    actor = subprocess.Popen([sys.executable, "-c", ACTOR], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    worker = int(actor.stdout.readline())
    try:
        assert not _gone(worker, 0.3)  # the launcher ran the worker, which runs on
        actor.kill()
        actor.wait()
        assert _gone(worker, 10), "the worker of a killed actor ran on"
    finally:
        actor.kill()
        try:
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_launcher_whose_parent_is_already_gone_never_runs_the_worker(tmp_path):
    """The parent named (the actor's pid) is not the launcher's parent any more (it died before the `prctl`): the
    launcher ends at once, 143, and the worker's program never runs."""
    from training.jobs.ray_runner import DIE_WITH_PARENT

    ran = tmp_path / "ran"
    not_its_parent = str(os.getpid() + 1)  # its parent is this process
    done = subprocess.run([sys.executable, "-c", DIE_WITH_PARENT, not_its_parent, "touch", str(ran)], timeout=30)
    assert done.returncode == 143 and not ran.exists()
