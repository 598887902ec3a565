"""A service SIGKILLed after its job runner started a worker and before the job's record named it
(`LocalJobRunner._start_worker`: `Popen`, then the record written `running` with the worker's pid).

Before: the record still said `queued` with no pid, so the next start's recovery (which stops the
worker a `running` record names) left that worker running, unknown to anyone, and launched the job
again: two workers of one job at once, writing the same artifact folder and output file, the first
one never stopped (nor by a DELETE of the job's user, whose purge stops only the workers it knows).
Now the recovery stops every process carrying the job's id (`PLURALIGN_JOB_ID`) of a job left queued
or running, whatever its record says.

A real SIGKILL of a real runner process at that point (its record write replaced by the kill), then a
real restart of the runner on the same folder; a few seconds."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from tests.conftest import REPO
from tests.processes import workers_of
from training.jobs.kinds import JobKind
from training.jobs.runner import LocalJobRunner, RunnerConfig

SLEEPER = "import time; print('working', flush=True); time.sleep(120)"

CHILD = r"""
import os, signal, sys, pathlib
from training.jobs.kinds import JobKind
from training.jobs.runner import LocalJobRunner, RunnerConfig
from training.jobs.store import JobStore

put = JobStore.put

def killed_before_running_is_recorded(self, job):
    if job.state == "running":  # the worker is started; its record would name it now
        os.kill(os.getpid(), signal.SIGKILL)
    return put(self, job)

JobStore.put = killed_before_running_is_recorded
kinds = {"pal": JobKind("pal", lambda job, out: [sys.executable, "-c", sys.argv[2]], promotion_key=lambda job: "pal")}
runner = LocalJobRunner(RunnerConfig(folder=pathlib.Path(sys.argv[1]), poll_seconds=0.05), kinds)
print(runner.submit("pal", {}).id, flush=True)
runner.start()
runner._thread.join(timeout=60)
print("not killed", flush=True)
"""

KINDS = {"pal": JobKind("pal", lambda job, out: [sys.executable, "-c", SLEEPER], promotion_key=lambda job: "pal")}


def test_a_worker_started_before_its_record_named_it_is_stopped_by_the_next_start(tmp_path):
    folder = tmp_path / "jobs"
    run = subprocess.run([sys.executable, "-c", CHILD, str(folder), SLEEPER], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == -9, (run.returncode, run.stdout, run.stderr[-2000:])
    job_id = run.stdout.split()[0]
    orphans = workers_of(job_id)
    try:
        assert len(orphans) == 1, orphans  # the worker the killed runner started, its record still `queued`
        again = LocalJobRunner(RunnerConfig(folder=folder, poll_seconds=0.05), KINDS)  # the restart
        deadline = time.monotonic() + 10
        while workers_of(job_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers_of(job_id) == [], "the worker the killed runner had started still runs"
        again.start()
        try:
            deadline = time.monotonic() + 30
            while (job := again.get(job_id)).pid is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert job.state == "running" and workers_of(job_id) == [job.pid], (job, workers_of(job_id))
        finally:
            again.stop()
    finally:
        for pid in workers_of(job_id):
            psutil.Process(pid).kill()
