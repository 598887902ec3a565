"""reviewry44: the runner read a job's log before it asked whether the worker had exited, and finished the job with that
read: a worker that wrote its last lines (a traceback's closing `RuntimeError: ...`) and exited between the two left
them out of the record's `log_tail`, and its `error` (`exit code 1: <the tail's last line>`) named an earlier line, or
`no output`, not why it failed. ray44 saw it and left it. Now the log is read again once the exit is seen."""

from __future__ import annotations

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.runner import LocalJobRunner, RunnerConfig


def test_a_worker_that_writes_its_last_line_just_before_it_exits_has_it_in_its_error_and_log_tail(tmp_path):
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.02), TEST_KINDS)
    job = runner.submit("work", {"crash": True})
    read_log = runner._read_log

    def read_then_exit(job_id: str):  # the worker writes what is left and exits between the runner's read and its poll
        read = read_log(job_id)
        runner._running[job_id].process.wait()
        return read

    runner._read_log = read_then_exit
    runner.start()
    try:
        failed = runner.wait(job.id, timeout=30)
    finally:
        runner.stop()
    assert failed.state == "failed" and failed.error == "exit code 1: RuntimeError: the worker fell over", failed.error
    assert failed.log_tail[-1] == "RuntimeError: the worker fell over", failed.log_tail
