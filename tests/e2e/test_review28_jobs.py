"""Review of session 28's removed job log: the runner holds its worker's log and output files open, so a
cleanup that removes them (`*.log`, `*.out`) while the job runs takes nothing the runner needs: it reads
what the worker writes from the files it holds, progress and log lines and the result line."""

from __future__ import annotations

import time

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.runner import LocalJobRunner, RunnerConfig


def test_a_job_whose_output_and_log_files_are_removed_while_it_runs_succeeds_with_its_result(tmp_path, caplog):
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)
    runner.start()
    try:
        job = runner.submit("work", {"seconds": 1})
        while runner.get(job.id).pid is None:  # recorded running once its worker exists
            time.sleep(0.05)
        for suffix in ("out", "log"):
            runner.store.path(job.id, suffix).unlink()
        done = runner.wait(job.id, timeout=30)
    finally:
        runner.stop()
    assert done.state == "succeeded" and done.metrics["heldout_accuracy"] == 0.5, done  # was failed: No such file <id>.out
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.records
