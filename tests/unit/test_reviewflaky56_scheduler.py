"""Review of flaky56: `FairScheduler._run` tells a task's caller after the task's bookkeeping (its place given back,
the next task started). When the system refuses the next task's worker thread (RuntimeError "can't start new
thread": a container's pids limit, no memory for its stack), that bookkeeping raised: the finished task's caller
then never got its result (told before it, before flaky56, it did), the task whose thread was refused was counted
running but never ran, and the scheduler's one worker thread had died of it, so nothing ran again. Now a task whose
thread is refused runs on the threads already there, in turn; with none there (a first task), its caller gets the
RuntimeError through its Future and the scheduler takes the next task as if it had never started."""

from __future__ import annotations

import threading

import pytest

from service.scheduler import FairScheduler


@pytest.fixture
def refused_threads(monkeypatch):
    """Threads named `refused-*` (the schedulers below name theirs so) cannot start while `refusing` is set."""
    start, refusing = threading.Thread.start, threading.Event()

    def start_unless_refused(thread: threading.Thread) -> None:
        if refusing.is_set() and thread.name.startswith("refused-"):
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_unless_refused)
    return refusing


def test_a_finished_task_s_caller_gets_its_result_when_the_next_task_s_thread_is_refused(refused_threads):
    """Before: `first.result` waited forever (TimeoutError here) and `second` never ran."""
    scheduler = FairScheduler(workers=2, per_tenant=4, max_waiting=4, what="refused", running_per_tenant=1, kept_free=1)
    gate = threading.Event()
    try:
        first = scheduler.submit("a", lambda: gate.wait(10) and "first")
        second = scheduler.submit("a", lambda: "second")  # waits: a runs its share, one worker kept free
        assert scheduler.stats() == {"running": 1, "waiting": 1, "tenants": 1}
        refused_threads.set()  # `first`'s end starts `second`, which needs a second thread
    finally:
        gate.set()
    assert first.result(timeout=5) == "first"
    assert second.result(timeout=5) == "second"  # on the thread there was, after `first`
    assert scheduler.stats() == {"running": 0, "waiting": 0, "tenants": 0} and scheduler.held("a") == 0
    assert scheduler.submit("a", lambda: "third").result(timeout=5) == "third"


def test_a_task_with_no_thread_to_run_on_fails_and_the_scheduler_takes_the_next(refused_threads):
    """Before: `submit` raised the RuntimeError but counted the task running for ever: with one worker, the next
    task, its thread started, waited for ever (TimeoutError here)."""
    scheduler = FairScheduler(workers=1, per_tenant=4, max_waiting=4, what="refused")
    refused_threads.set()
    with pytest.raises(RuntimeError, match="can't start new thread"):
        scheduler.submit("a", lambda: "never").result(timeout=5)
    assert scheduler.stats() == {"running": 0, "waiting": 0, "tenants": 0} and scheduler.held("a") == 0
    refused_threads.clear()
    assert scheduler.submit("a", lambda: "next").result(timeout=5) == "next"


def test_a_caller_told_of_its_result_finds_the_task_neither_running_nor_holding_its_place():
    """A guard for flaky56's `_run` order, which it tested only with a sleep put into the scheduler: the Future's
    callback runs as the caller is told. Told before the bookkeeping (as at 255f591b) it read {'running': 1}, held 1."""
    scheduler = FairScheduler(workers=1, per_tenant=4, max_waiting=4)
    gate, seen = threading.Event(), []
    future = scheduler.submit("a", lambda: gate.wait(10))
    future.add_done_callback(lambda _: seen.append((scheduler.stats()["running"], scheduler.held("a"))))
    gate.set()
    assert future.result(timeout=5) is True
    assert seen == [(0, 0)]
