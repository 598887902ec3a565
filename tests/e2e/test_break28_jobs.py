"""Session 28: the job runner when putting a promoted artifact into service fails, and when a worker is
killed from outside (real worker processes running a few lines of Python; the service's own jobs are
tests/service/test_break28_jobs.py)."""

from __future__ import annotations

import errno
import os
import signal
import time

import msgspec
import pytest

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.promotion import Served
from training.jobs.runner import LocalJobRunner, RunnerConfig


@pytest.fixture
def installs(tmp_path):
    """A runner whose `on_promote` fails (a full disk) while `failing` is set; `installed` lists what it put into service."""
    state = {"failing": False, "installed": []}

    def on_promote(job, key):
        if state["failing"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "served" / "adapter_model.safetensors"))
        state["installed"].append(job.id)

    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS, on_promote=on_promote)
    runner.start()
    yield runner, state
    runner.stop()


def served_on_disk(runner) -> dict:
    return msgspec.json.decode((runner.config.folder / "promotions.json").read_bytes(), type=dict[str, Served])


def test_a_promotion_that_cannot_be_put_into_service_is_not_recorded_as_served(installs, tmp_path):
    """Before: the job said `promoted: true` ("...; but putting it into service failed: ...") and
    promotions.json named its artifact as served while the service served the earlier one: the next
    candidate was compared with an artifact never served, and a worse one could be refused."""
    runner, state = installs
    first = runner.wait(runner.submit("adapter", {"user": "alice", "accuracy": 0.6}).id, timeout=30)
    assert first.promoted is True and state["installed"] == [first.id]
    state["failing"] = True
    better = runner.wait(runner.submit("adapter", {"user": "alice", "accuracy": 0.9}).id, timeout=30)
    assert better.state == "succeeded" and better.promoted is False, better
    assert better.promotion_note.startswith("kept, not served: putting it into service failed: No space left on device: "
                                            f"{tmp_path / 'served' / 'adapter_model.safetensors'}"), better.promotion_note
    assert f"job {first.id} still served" in better.promotion_note, better.promotion_note
    assert runner.promotions.served("adapter/default/alice").job_id == first.id
    assert served_on_disk(runner)["adapter/default/alice"].job_id == first.id
    state["failing"] = False  # room again: a candidate worse than the failed one, better than the served one, is served
    again = runner.wait(runner.submit("adapter", {"user": "alice", "accuracy": 0.7}).id, timeout=30)
    assert again.promoted is True and state["installed"] == [first.id, again.id]
    # the first of a key that fails leaves nothing served
    state["failing"] = True
    bob = runner.wait(runner.submit("adapter", {"user": "bob", "accuracy": 0.5}).id, timeout=30)
    assert bob.promoted is False and runner.promotions.served("adapter/default/bob") is None
    assert "adapter/default/bob" not in served_on_disk(runner) and "nothing is served for it yet" in bob.promotion_note


def test_a_worker_killed_from_outside_says_so(tmp_path):
    """Before: `exit code -9: <the worker's last line>`, e.g. a progress bar's, as if that line were why."""
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)
    runner.start()
    try:
        for sig in (signal.SIGKILL, signal.SIGTERM):
            job = runner.submit("work", {"seconds": 60})
            while (running := runner.get(job.id)).pid is None:  # recorded running once its worker exists
                time.sleep(0.05)
            os.kill(running.pid, sig)
            failed = runner.wait(job.id, timeout=30)
            assert failed.state == "failed", failed
            assert failed.error.startswith(f"killed by {sig.name} (exit code {-sig.value}) from outside the job runner"), failed.error
    finally:
        runner.stop()


@pytest.mark.parametrize("removed", [("log",), ("out", "log")], ids=["its log", "its output and log"])
def test_a_job_whose_log_file_is_removed_while_it_runs_still_succeeds(tmp_path, caplog, removed):
    """Before: the runner's every poll (5 a second) logged a traceback (`polling job ... failed`), and
    the job, whose worker then printed its result and exited 0, was failed: `the runner could not
    finish it: No such file or directory: <id>.log` (a cleanup of `*.log` files removes jobs' logs).
    Review 28: the runner reads what the worker writes from the files it holds open, so its output
    removed too still gives the result (was failed: `... No such file or directory: <id>.out`), and
    the log lines written after the removal still come (was the note "its log <path> was removed
    while it ran: no more progress or log lines from it")."""
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)
    runner.start()
    try:
        job = runner.submit("work", {"seconds": 1})
        while runner.get(job.id).pid is None:  # recorded running once its worker exists
            time.sleep(0.05)
        for suffix in removed:
            runner.store.path(job.id, suffix).unlink()
        done = runner.wait(job.id, timeout=30)
    finally:
        runner.stop()
    assert done.state == "succeeded" and done.metrics["heldout_accuracy"] == 0.5, done
    assert not runner.store.path(job.id, "log").exists() and done.log_tail[-1] == "training done" and done.progress == 1.0, done.log_tail
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.records
