"""A job recorded failed after its worker succeeded (its result's check or its finishing failed) keeps no result:
what a removal that failed, or a release before auditfail42, left of it goes at the runner's start (`_recover`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.record import Job
from training.jobs.runner import LocalJobRunner, RunnerConfig
from training.jobs.store import JobStore

REPORT = b'{"group_by": "segment", "groups": [{"group": "value-one-user-sent"}], "worst_group_accuracy": 0.5}'
FAILED = {"checked": "checking its result failed: [Errno 28] No space left on device",
          "finished": "finishing it failed: OSError: [Errno 28] No space left on device",
          "crashed": "exit code 1: Traceback"}  # a worker that failed


def leave_unkept_results(folder: Path) -> None:
    """Records and files as a release before auditfail42 left them: each job of FAILED with its result."""
    store = JobStore(folder)
    now = time.time()
    for job_id, error in FAILED.items():
        store.add(Job(id=job_id, kind="audit", params={"group_by": "segment"}, state="failed", created_at=now, finished_at=now,
                      error=error, metrics={"worst_group_accuracy": 0.5}, result_path=str(store.path(job_id, "result.json"))))
        store.path(job_id, "result.json").write_bytes(REPORT)
        store.path(job_id, "out").write_bytes(REPORT + b"\n")


def assert_unkept_results_removed(runner, folder: Path) -> None:
    """What `leave_unkept_results` left, after `runner`'s start: the results of jobs whose worker succeeded went."""
    store = JobStore(folder)
    for job_id in ("checked", "finished"):
        job = runner.get(job_id)
        assert (job.metrics, job.result_path, job.error) == ({}, None, FAILED[job_id]), job
        assert not store.path(job_id, "result.json").exists() and not store.path(job_id, "out").exists()
    # a worker that failed: its record as it was, its output (a result line it printed, never checked) gone (reviewad43)
    assert runner.get("crashed").error == FAILED["crashed"] and not store.path("crashed", "out").exists()
    again = JobStore(folder)  # on disk, not only in memory
    assert again.get("checked").metrics == {} and again.get("checked").result_path is None


def test_a_failed_check_s_result_left_by_an_earlier_release_goes_at_the_start(tmp_path):
    folder = tmp_path / "jobs"
    leave_unkept_results(folder)
    runner = LocalJobRunner(RunnerConfig(folder=folder), TEST_KINDS)  # not started: the start's pass runs here
    assert_unkept_results_removed(runner, folder)


@pytest.mark.parametrize("then_exit", [3, "SIGKILL"])
def test_a_worker_that_printed_its_result_and_then_failed_keeps_no_output(tmp_path, then_exit):
    """reviewad43: a worker that printed its result line and then failed (a crash at interpreter shutdown, the
    out-of-memory killer) ends failed with its artifact removed, but its output (`out`), the unchecked result (an
    audit's group names, an attribute's value a user sent, and figures drawn with users a DELETE cannot find
    there), stayed until the retention purged the job. Its log (stderr) stays for the error."""
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)
    runner.start()
    try:
        job = runner.wait(runner.submit("work", {"report": {"groups": ["value-one-user-sent"]}, "then_exit": then_exit}).id)
    finally:
        runner.stop()
    assert job.state == "failed" and job.metrics == {} and job.result_path is None, job
    assert "training done" in job.log_tail, job.log_tail
    assert not runner.store.path(job.id, "out").exists()
    held = [p.name for p in (tmp_path / "jobs").rglob("*") if p.is_file() and b"value-one-user-sent" in p.read_bytes()]
    assert held == [f"{job.id}.job.json"]  # only its record, whose params here hand the worker what it prints


def test_a_job_queued_again_after_a_stop_and_then_cancelled_keeps_no_output(tmp_path):
    """reviewra43: the runner stopped (a deploy) while a worker that had printed its result line was still shutting
    down: the job is queued again, its `out` holding that unchecked result (an audit's group names, figures of users
    a DELETE cannot find there) and its record naming the attempt's artifact. Cancelled while queued (before its
    next attempt truncates `out`), it ended cancelled keeping both until the next start (`_remove_unkept_results`):
    a cancel of a queued job skipped `_discard_artifact`, which every other cancelled or failed ending goes through."""
    folder = tmp_path / "jobs"
    runner = LocalJobRunner(RunnerConfig(folder=folder, poll_seconds=0.05), TEST_KINDS)
    runner.start()
    try:
        # a flat param (a record's params are scalars when read back): what it prints as its figure
        job = runner.submit("work", {"accuracy": "value-one-user-sent", "linger": 30})
        deadline = time.monotonic() + 30
        while b"value-one-user-sent" not in _read(runner.store.path(job.id, "out")) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        runner.stop()
    assert runner.get(job.id).state == "queued" and b"value-one-user-sent" in _read(runner.store.path(job.id, "out"))
    again = LocalJobRunner(RunnerConfig(folder=folder, poll_seconds=0.05), TEST_KINDS)  # the next process, not started yet
    cancelled = again.cancel(job.id)
    assert not again.store.path(job.id, "out").exists()
    assert cancelled.state == "cancelled" and cancelled.artifact is None, cancelled
    held = [p.name for p in folder.rglob("*") if p.is_file() and b"value-one-user-sent" in p.read_bytes()]
    assert held == [f"{job.id}.job.json"]  # only its record, whose params here hand the worker what it prints


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.is_file() else b""


def test_a_job_the_runner_could_not_finish_keeps_neither_its_output_nor_its_artifact(tmp_path, monkeypatch):
    """reviewra43: a worker that printed its result and saved its artifact exits, and the runner cannot finish the
    job (reading its files fails: an I/O error): it is recorded failed, "the runner could not finish it". reviewad43
    removed its output there (no test ran it) but left its artifact folder, never checked (`on_succeed` never ran:
    an adapter fitted on a user a DELETE took meanwhile), with its record naming it as an artifact, until the
    retention purged the job; every other ending that is not a success removes both (`_discard_artifact`)."""
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)
    read_log = runner._read_log

    def unreadable_once_exited(job_id):
        running = runner._running.get(job_id)
        if running is not None and running.process.poll() is not None:
            raise OSError(5, "Input/output error")
        return read_log(job_id)

    monkeypatch.setattr(runner, "_read_log", unreadable_once_exited)
    runner.start()
    try:
        job = runner.wait(runner.submit("work", {"accuracy": "value-one-user-sent", "save": "weights-of-a-user"}).id)
    finally:
        runner.stop()
    assert job.state == "failed" and job.error.startswith("the runner could not finish it"), job
    assert job.artifact is None and not (tmp_path / "jobs" / "artifacts" / job.id).exists(), job
    assert not runner.store.path(job.id, "out").exists()
    held = [p.name for p in (tmp_path / "jobs").rglob("*") if p.is_file() and b"weights-of-a-user" in p.read_bytes()]
    assert held == [f"{job.id}.job.json"]  # only its record, whose params here hand the worker what it saves


def test_a_cancelled_job_s_artifact_left_by_an_earlier_release_goes_at_the_start(tmp_path):
    """reviewra43: what a release before this one left of a job cancelled while queued again after a stop (its cut
    attempt's artifact folder, named by its record, and its output): the start's pass removed the output only, so the
    folder (part of a checkpoint, fitted on users a DELETE would not find there) stayed until the retention."""
    folder = tmp_path / "jobs"
    store = JobStore(folder)
    now = time.time()
    artifact = folder / "artifacts" / "cut"
    store.add(Job(id="cut", kind="work", params={}, state="cancelled", cancel_requested=True, created_at=now, finished_at=now,
                  attempts=1, artifact=str(artifact)))
    artifact.mkdir(parents=True)
    (artifact / "weights.txt").write_text("weights-of-a-user")
    store.path("cut", "out").write_bytes(REPORT + b"\n")
    runner = LocalJobRunner(RunnerConfig(folder=folder), TEST_KINDS)  # not started: the start's pass runs here
    assert not artifact.exists() and not store.path("cut", "out").exists()
    assert runner.get("cut").artifact is None and JobStore(folder).get("cut").artifact is None  # on disk too


def test_a_job_queued_again_whose_next_attempt_cannot_start_keeps_nothing_of_the_cut_one(tmp_path):
    """reviewra43: a job queued again after a stop cut its attempt short (that attempt's artifact folder, named by its
    record, and its output with the result line it printed) whose next worker cannot start (here its program is
    gone: a release that removed it, a full disk) ended failed, "could not start", keeping both until the next start."""
    from training.jobs.kinds import JobKind

    folder = tmp_path / "jobs"
    store = JobStore(folder)
    now = time.time()
    artifact = folder / "artifacts" / "cut"
    store.add(Job(id="cut", kind="work", params={}, state="queued", created_at=now, started_at=now, attempts=1, artifact=str(artifact)))
    artifact.mkdir(parents=True)
    (artifact / "weights.txt").write_text("weights-of-a-user")
    store.path("cut", "out").write_bytes(REPORT + b"\n")
    gone = {"work": JobKind("work", lambda job, out: [str(tmp_path / "no-such-program"), str(out)])}
    runner = LocalJobRunner(RunnerConfig(folder=folder, poll_seconds=0.05), gone)
    runner.start()
    try:
        job = runner.wait("cut")
    finally:
        runner.stop()
    assert job.state == "failed" and job.error.startswith("could not start"), job
    assert job.artifact is None and not artifact.exists() and not store.path("cut", "out").exists(), job
