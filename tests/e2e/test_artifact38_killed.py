"""A job whose worker is killed mid-save leaves no part of an artifact behind.

Before: the job was failed ("killed by SIGKILL ... its artifact is not used") but its folder
`jobs/artifacts/<id>/` kept what the worker had written (a cut-short model.safetensors, a temp file
of the save), named by the record's `artifact`, until the retention removed it days later; the same
after a restart that gave the job up. Now a job that fails or is cancelled before its worker
finished has its artifact folder removed and names none. (Real worker processes: a few lines of
Python writing part of a PAL checkpoint, then waiting to be killed.)
"""

from __future__ import annotations

import os
import signal
import sys
import time

from training.jobs.kinds import JobKind
from training.jobs.runner import LocalJobRunner, RunnerConfig

HALF_SAVED = """
import sys, time, pathlib
out = pathlib.Path(sys.argv[1])
(out / "model.safetensors").write_bytes(b"\\x08\\x00\\x00\\x00\\x00\\x00\\x00\\x00{")  # cut short
(out / ".meta.json.k3j9x2").write_bytes(b'{"schema_version": 1, "enc')  # atomic_writer's temp file
print("saving", file=sys.stderr, flush=True)
time.sleep(120)
"""

KINDS = {"pal": JobKind("pal", lambda job, out: [sys.executable, "-c", HALF_SAVED, str(out)], promotion_key=lambda job: "pal")}


def running(runner: LocalJobRunner, job_id: str):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = runner.get(job_id)
        if job.pid is not None and "saving" in job.log_tail:  # the line itself (the command line above holds the word too)
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never started saving: {runner.get(job_id)}")


def test_a_worker_killed_mid_save_leaves_no_artifact_folder(tmp_path):
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), KINDS)
    runner.start()
    try:
        job = running(runner, runner.submit("pal", {}).id)
        folder = tmp_path / "jobs" / "artifacts" / job.id
        assert sorted(p.name for p in folder.iterdir()) == [".meta.json.k3j9x2", "model.safetensors"]
        os.kill(job.pid, signal.SIGKILL)
        failed = runner.wait(job.id, timeout=30)
    finally:
        runner.stop()
    assert failed.state == "failed" and failed.error.startswith("killed by SIGKILL"), failed
    assert not folder.exists(), sorted(p.name for p in folder.iterdir())
    assert failed.artifact is None and failed.promoted is not True


def test_a_job_given_up_after_a_killed_service_leaves_no_artifact_folder(tmp_path):
    """The service killed (its runner never stopped): the next start stops the worker left running and,
    its attempts spent, fails the job; what the worker had written goes with it."""
    config = RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, max_attempts=1)
    first = LocalJobRunner(config, KINDS)
    first.start()
    job = running(first, first.submit("pal", {}).id)
    first._stopping.set()  # as a SIGKILL of the service leaves it: the dispatcher gone, the worker on
    first._thread.join(timeout=10)
    folder = tmp_path / "jobs" / "artifacts" / job.id
    assert folder.is_dir() and os.path.exists(f"/proc/{job.pid}")
    again = LocalJobRunner(config, KINDS)  # the restart
    given_up = again.get(job.id)
    assert given_up.state == "failed" and "gave up after 1 attempts" in given_up.error, given_up
    assert not folder.exists() and given_up.artifact is None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(job.pid):
        time.sleep(0.05)
    assert not _alive(job.pid)  # the worker left running was stopped


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
