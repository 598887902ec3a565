"""Review of tests58: the waits that a "did not happen" check follows (`wait_passes`, `wait_rounds`) count only passes
and dispatcher rounds that ran through. One that raised (a damaged file, the store unreachable) stopped before it
could do what the check says it did not: counted, the check after it passed with the code path never run (a deletion
sweep that fails at every pass "keeps" every job it should have kept)."""

from __future__ import annotations

import pytest

from service.periodic import Periodic
from tests.e2e.job_kinds import TEST_KINDS, wait_rounds
from tests.service.tiny import wait_passes
from training.jobs.runner import LocalJobRunner, RunnerConfig


class Failing(Periodic):
    """A pass that raises its first `fails` times, then runs through (counted in `ran`)."""

    def __init__(self, fails: int):
        super().__init__(0.05, "failing-pass", "a test's pass")
        self.fails, self.ran = fails, 0

    def run_once(self) -> None:
        if self.fails:
            self.fails -= 1
            raise RuntimeError("the store is unreachable")
        self.ran += 1


def refused_by(wait, failing) -> None:
    """`wait` for two of `failing`'s passes or rounds, each of which raises: an AssertionError saying they raised."""
    failing.start()
    try:
        with pytest.raises(AssertionError, match="raised"):
            wait(failing, 2, timeout=2.0)  # before: returned after two that had both raised
    finally:
        failing.stop()


def test_a_pass_that_raised_is_not_waited_for_as_one_that_ran():
    always = Failing(fails=10**9)
    refused_by(wait_passes, always)
    assert always.ran == 0 and always.failed >= 2


def test_the_passes_waited_for_ran_through_after_failed_ones():
    flaky = Failing(fails=5)
    flaky.start()
    try:
        wait_passes(flaky, 2)
        assert flaky.ran >= 2 and flaky.failed == 5
    finally:
        flaky.stop()


def test_a_dispatcher_round_that_raised_is_not_waited_for_as_one_that_ran(tmp_path, monkeypatch):
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)

    def unreachable() -> None:
        raise OSError("the jobs folder is unreachable")

    monkeypatch.setattr(runner, "_poll", unreachable)
    refused_by(wait_rounds, runner)
    assert runner.rounds == 0 and runner.failed_rounds >= 2
