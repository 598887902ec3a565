"""Session locks52: the job runner puts a promoted job into service (`on_promote`) on a thread of its own, without its
lock (`LocalJobRunner._promotions_of`). What that keeps: other jobs run meanwhile, a cancel of the job waits for its
promotion and finds it ended, a job purged meanwhile (its user's DELETE) is never recorded again and what it replaced is
named again, and two jobs of one key go into service in the order their workers ended.

Real worker processes of the small job kind of test_train39_promotion_cut (a few lines of Python writing a model file)."""

from __future__ import annotations

import threading
import time

from tests.e2e.test_train39_promotion_cut import KINDS as PROMOTED
from tests.e2e.test_train39_promotion_cut import train
from training.jobs.kinds import JobKind
from training.jobs.record import Job
from training.jobs.runner import LocalJobRunner, RunnerConfig

KINDS = {**PROMOTED, "plain": JobKind("plain", train)}  # "plain": nothing to promote


class HeldPromotions:
    """An `on_promote` that notes each job it is called with and, for the jobs named in `held`, waits inside until the
    test sets `go` (30 s at most); `entered` is set once a held one is inside. A job no longer in the runner (purged
    meanwhile) is refused, as `Admin.put_into_service` refuses it under the user's lock."""

    def __init__(self, held: set[str] | None = None):
        self.held, self.served, self.entered, self.go = held if held is not None else set(), [], threading.Event(), threading.Event()
        self.runner: LocalJobRunner | None = None

    def __call__(self, job, key) -> None:
        if job.params["model"] in self.held:
            self.entered.set()
            assert self.go.wait(30), "the test never let the promotion go on"
        if self.runner.get(job.id) is None:
            raise ValueError(f"job {job.id} was purged while it was promoted")
        self.served.append(job.params["model"])


def started(tmp_path, on_promote: HeldPromotions, workers: int = 1) -> LocalJobRunner:
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=workers), KINDS, on_promote=on_promote)
    on_promote.runner = runner
    runner.start()
    return runner


def check_a_promotion_waiting_holds_up_no_other_job_and_a_cancel_of_its_job_waits_for_it(runner, promotions, wait_s: float) -> Job:
    """On a started `runner` with one worker whose `promotions` hold "first": another job runs to its end while the
    promotion waits, and a cancel of the promoting job answers only once the promotion is done, as it ended (the local
    runner here, the Ray runner in tests/e2e/test_reviewlocks52_ray_promotion.py; `wait_s` for a worker's start). Returns the cancel's answer."""
    try:
        first = runner.submit("pal", {"model": "first", "accuracy": 0.6})
        assert promotions.entered.wait(wait_s)
        other = runner.wait(runner.submit("plain", {"model": "other", "accuracy": 0.5}).id, timeout=wait_s)  # one worker: free again
        assert other.state == "succeeded" and runner.get(first.id).state == "running"
        answers = {}
        cancel = threading.Thread(target=lambda: answers.update(cancel=runner.cancel(first.id)), daemon=True)
        cancel.start()
        cancel.join(0.3)
        assert cancel.is_alive(), "the cancel answered while the job's promotion was under way"
        promotions.go.set()
        cancel.join(30)
    finally:
        promotions.go.set()
        runner.stop()
    assert answers["cancel"].state == "succeeded" and answers["cancel"].promoted is True
    assert promotions.served == ["first"] and runner.promotions.served("pal").job_id == first.id
    return answers["cancel"]


def test_a_promotion_waiting_holds_up_no_other_job_and_a_cancel_of_its_job_waits_for_it(tmp_path):
    promotions = HeldPromotions({"first"})
    cancelled = check_a_promotion_waiting_holds_up_no_other_job_and_a_cancel_of_its_job_waits_for_it(started(tmp_path, promotions), promotions, 30)
    assert not cancelled.cancel_requested


def test_a_job_purged_while_it_is_put_into_service_is_never_recorded_again(tmp_path):
    promotions = HeldPromotions({"second"})
    runner = started(tmp_path, promotions)
    try:
        first = runner.wait(runner.submit("pal", {"model": "first", "accuracy": 0.6}).id, timeout=30)
        second = runner.submit("pal", {"model": "second", "accuracy": 0.8})
        assert promotions.entered.wait(30)
        began = time.monotonic()
        assert runner.purge(second.id) is not None  # as a DELETE of its user does, holding the user's lock
        took = time.monotonic() - began
        promotions.go.set()
        deadline = time.monotonic() + 30
        while runner._due and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        promotions.go.set()
        runner.stop()
    assert took < 5, f"the purge waited {took:.1f} s for the promotion"
    assert runner.get(second.id) is None and not (runner.config.folder / f"{second.id}.job.json").exists()
    assert not (runner.config.folder / "artifacts" / second.id).exists()
    assert promotions.served == ["first"] and runner.promotions.served("pal").job_id == first.id  # named again


def test_two_jobs_of_one_key_go_into_service_in_the_order_their_workers_ended(tmp_path):
    promotions = HeldPromotions({"first"})
    runner = started(tmp_path, promotions, workers=2)
    try:
        first = runner.submit("pal", {"model": "first", "accuracy": 0.6})
        assert promotions.entered.wait(30)
        second = runner.submit("pal", {"model": "second", "accuracy": 0.8})
        deadline = time.monotonic() + 30
        while runner.get(second.id).state == "queued" or second.id in runner._running:  # its worker ends; it waits its turn
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert runner.get(second.id).state == "running" and promotions.served == []
        promotions.go.set()
        done = [runner.wait(job.id, timeout=30) for job in (first, second)]
    finally:
        promotions.go.set()
        runner.stop()
    assert [job.promoted for job in done] == [True, True] and promotions.served == ["first", "second"]
    assert runner.promotions.served("pal").job_id == second.id
    assert done[1].metrics["replaced_heldout_accuracy"] == 0.6  # compared with what the first left served


def test_a_stop_waits_for_a_promotion_under_way_and_the_job_ends_promoted(tmp_path):
    promotions = HeldPromotions({"first"})
    runner = started(tmp_path, promotions)
    try:
        first = runner.submit("pal", {"model": "first", "accuracy": 0.6})
        assert promotions.entered.wait(30)
        threading.Timer(0.5, promotions.go.set).start()  # its user's refit ends half a second into the stop
    finally:
        began = time.monotonic()
        runner.stop()
        took = time.monotonic() - began
        promotions.go.set()
    done = runner.get(first.id)
    assert 0.3 < took < 9, took
    assert done.state == "succeeded" and done.promoted is True and promotions.served == ["first"], done


def test_a_promotion_a_stop_left_waiting_writes_nothing_after_it_and_the_next_runner_finishes_it(tmp_path, monkeypatch):
    """Review of locks52. A stop waits for the promotions under way within its wait (`DISPATCH_STOP_WAIT_S`); one still
    waiting then (its user's lock held past it) goes on on its thread, and its job, still `running` on disk and named in
    promotions.json, is finished by the next start (`_finish_cut_promotion`), as the stop's docstring says. Before, that
    thread, once its wait ended, wrote its outcome after the stop: here its `on_promote` fails (the service it would serve
    in is gone), and it took the job out of promotions.json and recorded it `promoted: false` over what the next runner
    on the folder (a service started again in this process) had recorded: it promoted and served the job. Now a
    promotion a stop left writes nothing once it is over."""
    import training.jobs.runner as runner_module

    monkeypatch.setattr(runner_module, "DISPATCH_STOP_WAIT_S", 0.5)
    promotions = HeldPromotions({"first"})
    gone = RuntimeError("the service this runner served in has stopped")

    def stopped_meanwhile(job, key) -> None:
        promotions(job, key)
        raise gone

    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), KINDS, on_promote=stopped_meanwhile)
    promotions.runner = runner
    runner.start()
    try:
        first = runner.submit("pal", {"model": "first", "accuracy": 0.6})
        assert promotions.entered.wait(30)
        runner.stop()  # its wait over: the promotion still waits
        assert runner._due
        again = HeldPromotions()
        restarted = started(tmp_path, again)
        try:
            done = restarted.wait(first.id, timeout=30)  # finished from promotions.json, not run again
            assert done.state == "succeeded" and done.promoted is True and done.attempts == 1, done
            promotions.go.set()  # the first runner's promotion ends now, failing
            deadline = time.monotonic() + 30
            while runner._due and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not runner._due
        finally:
            restarted.stop()
    finally:
        promotions.go.set()
    from training.jobs.store import JobStore

    record = JobStore(tmp_path / "jobs").get(first.id)  # as the next start reads it
    assert record.promoted is True and again.served == ["first"], (record.promoted, record.promotion_note)
    assert runner_module.Promotions(tmp_path / "jobs" / "promotions.json").served("pal").job_id == first.id
