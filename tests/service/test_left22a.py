"""Session 22a, crash-safety leftovers: a job whose finish fails, a damaged per-user adapter, saves
a kill or a second trainer could leave half done. Real worker processes, the real app over HTTP,
real files in temp dirs."""

from __future__ import annotations

import errno
import time

import pytest

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.record import decode_job
from training.jobs.runner import LocalJobRunner, RunnerConfig


def full_disk_for(monkeypatch, module: str, name: str, when):
    """Make `module.write_atomic` fail like a full disk for paths `when(path)` picks."""
    import importlib

    target = importlib.import_module(module)
    real = target.write_atomic

    def write_atomic(path, data):
        if when(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(target, name, write_atomic)


@pytest.fixture
def runner(tmp_path):
    r = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)
    r.start()
    yield r
    r.stop()


def on_disk(runner, job_id):
    return decode_job(runner.store.path(job_id).read_bytes())


def test_a_job_whose_result_cannot_be_written_fails_saying_why(runner, monkeypatch):
    """Before: the disk full while result.json was written, the dispatcher logged "job runner step
    failed" and the job stayed "running" with its dead worker's pid, in memory and on disk, forever;
    runner.wait timed out."""
    full_disk_for(monkeypatch, "training.jobs.runner", "write_atomic", lambda path: str(path).endswith("result.json"))
    job = runner.submit("work", {})
    failed = runner.wait(job.id, timeout=30)
    assert failed.state == "failed" and failed.pid is None, failed
    assert failed.error.startswith("finishing it failed: No space left on device") and "result.json" in failed.error
    assert on_disk(runner, job.id) == failed
    monkeypatch.undo()
    assert runner.wait(runner.submit("work", {}).id, timeout=30).state == "succeeded"  # the runner carries on


def test_a_promotion_that_cannot_be_written_fails_the_job_and_promotes_nothing(runner, monkeypatch):
    """Before: promotions.json could not be written, the job stayed "running" forever, and the
    runner's memory said the artifact was served while the file did not."""
    full_disk_for(monkeypatch, "training.jobs.promotion", "write_atomic", lambda path: True)
    job = runner.submit("adapter", {"user": "ann", "accuracy": 0.7})
    failed = runner.wait(job.id, timeout=30)
    assert failed.state == "failed" and "No space left on device" in failed.error and "promotions.json" in failed.error
    assert runner.promotions.served("adapter/default/ann") is None
    monkeypatch.undo()
    again = runner.wait(runner.submit("adapter", {"user": "ann", "accuracy": 0.6}).id, timeout=30)
    assert again.state == "succeeded" and again.promoted is True, again


def test_a_job_record_a_full_disk_refuses_is_written_once_there_is_room(runner, monkeypatch):
    """Every write fails while the job finishes (result, then its record): the state is right in
    memory at once (failed, saying why) and on disk once the disk has room again; a restart meanwhile
    finds the job running with a dead worker and runs it again. Before: "running" with a dead pid,
    in memory and on disk, forever."""
    full = {"on": False}

    def result_json(path) -> bool:  # the disk fills up as the result is written, and stays full
        full["on"] = full["on"] or str(path).endswith("result.json")
        return full["on"]

    full_disk_for(monkeypatch, "training.jobs.runner", "write_atomic", result_json)
    full_disk_for(monkeypatch, "training.jobs.store", "write_atomic", lambda path: full["on"])
    job = runner.submit("work", {})
    deadline = time.monotonic() + 30
    while runner.get(job.id).state != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    failed = runner.get(job.id)
    assert failed.state == "failed" and "No space left on device" in failed.error, failed
    assert on_disk(runner, job.id).state == "running"  # the disk had no room for the failed record
    # a restart now (the disk still full) finds it running with a dead worker: queued to run again
    restarted = LocalJobRunner(RunnerConfig(folder=runner.config.folder, poll_seconds=0.05), TEST_KINDS)
    assert restarted.get(job.id).state == "queued" and restarted.get(job.id).pid is None
    full["on"] = False
    deadline = time.monotonic() + 10
    while on_disk(runner, job.id).state != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert on_disk(runner, job.id) == runner.get(job.id)
