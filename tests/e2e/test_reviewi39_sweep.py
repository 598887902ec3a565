"""Session reviewi39: a job runner's start stops the workers a stopped service left (`PLURALIGN_JOB_ID`
in their environment), and only those of its own jobs folder. A second service on the same machine
started on a copy of the first's data folder (a staging copy, a restored backup) holds records naming
the same job ids and pids: before, its start killed the first service's running workers. Real runners,
real worker processes; a few seconds. (A restart on the service's own folder still stops them:
tests/e2e/test_crash39_worker_window.py.)"""

from __future__ import annotations

import shutil
import time

import psutil

from tests.e2e.test_crash39_worker_window import KINDS, workers_of
from training.jobs import runner as runner_module
from training.jobs.runner import LocalJobRunner, RunnerConfig


def test_a_runner_started_on_a_copy_of_another_folder_leaves_its_workers_running(tmp_path, monkeypatch):
    first = LocalJobRunner(RunnerConfig(folder=tmp_path / "a" / "jobs", poll_seconds=0.05), KINDS)
    job = first.submit("pal", {})
    first.start()
    try:
        deadline = time.monotonic() + 30
        while (first.get(job.id).pid is None or not workers_of(job.id)) and time.monotonic() < deadline:
            time.sleep(0.05)
        (worker,) = workers_of(job.id)
        # its record: running, this id, this pid. The temp files of the runner's atomic record writes
        # (".<name>.<random>") come and go while it copies: a copy taken then would fail on one removed.
        shutil.copytree(tmp_path / "a", tmp_path / "b", ignore=shutil.ignore_patterns(".*"))
        kill_group, killed = runner_module._kill_group, []
        monkeypatch.setattr(runner_module, "_kill_group", lambda pid, sig: killed.append(pid) or kill_group(pid, sig))
        LocalJobRunner(RunnerConfig(folder=tmp_path / "b" / "jobs", poll_seconds=0.05), KINDS)  # the copy's service starts
        # its start's look for leftover workers has run once this returns: what it signalled is known now (a sleep of
        # 0.3 s, before, may have ended before a busy machine let a worker signalled die)
        assert killed == [] and psutil.pid_exists(worker) and workers_of(job.id) == [worker], \
            ("the copy's start stopped the first service's worker", killed)
        assert first.get(job.id).state == "running"
    finally:
        first.stop()
        for pid in workers_of(job.id):
            psutil.Process(pid).kill()
