"""The fair generation scheduler: tenants in turn, bounded, cancellable while waiting."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from service.scheduler import Busy, FairScheduler


def test_tenants_are_served_in_turn_whatever_one_of_them_queued():
    scheduler = FairScheduler(workers=1, per_tenant=10, max_waiting=20)
    gate, order = threading.Event(), []
    try:
        first = scheduler.submit("a", gate.wait)  # holds the one worker while the rest queue up
        flood = [scheduler.submit("a", lambda i=i: order.append(f"a{i}")) for i in range(6)]
        late = scheduler.submit("b", lambda: order.append("b"))
    finally:
        gate.set()
    for f in [first, *flood, late]:
        f.result(timeout=10)
    assert order.index("b") <= 1  # b waited behind at most one of a's queued tasks
    assert [x for x in order if x != "b"] == [f"a{i}" for i in range(6)]  # each tenant's own order is kept


def until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def test_a_tenant_alone_runs_past_its_share_but_leaves_a_worker_free_and_yields_to_a_tenant_waiting():
    """Session trial46b: turns alone let one tenant's slow tasks take every worker; another tenant's task then
    waited for one of them to end, however long that took. Review of trial46b: a hard cap at the share left
    a tenant alone (the usual deployment) on half the workers while the rest idled (its imports' steps and
    reads queued behind its own scores: benchmarks/tenant_share.py); alone, it now runs on all workers
    but one, and gives way to another tenant's waiting task once below its share."""
    scheduler = FairScheduler(workers=4, per_tenant=10, max_waiting=20, running_per_tenant=2)
    gates, started = {}, []

    def held(name: str):
        gates[name] = threading.Event()
        return lambda: (started.append(name), gates[name].wait(10))

    try:
        a = [scheduler.submit("a", held(f"a{i}")) for i in range(5)]
        assert scheduler.stats() == {"running": 3, "waiting": 2, "tenants": 1}  # alone: all but one worker
        b = [scheduler.submit("b", held(f"b{i}")) for i in range(2)]
        assert until(lambda: len(started) == 4) and started == ["a0", "a1", "a2", "b0"]  # b found the free worker at once
        gates["a0"].set()
        assert until(lambda: len(started) == 5) and started[-1] == "b1"  # a runs 2 (its share): b's waiting task, not a3
        gates["a1"].set()
        assert until(lambda: len(started) == 6) and started[-1] == "a3"  # below its share again: a's own next
    finally:
        for gate in list(gates.values()):
            gate.set()
    for f in [*a, *b]:
        f.result(timeout=10)
    assert [x for x in started if x[0] == "a"] == ["a0", "a1", "a2", "a3", "a4"]  # a's own order is kept


def test_a_tenant_arriving_waits_for_the_running_task_of_a_busy_tenant_not_for_its_next_one_too():
    """Session trial46b: the round put a tenant arriving behind the busy tenant whose task was running, so it
    waited for that task and the busy tenant's next (acme's chat queued 35-75 s, `queued_behind` 1, behind
    globex's chats of 21 s each). The tenant served longest ago (or never) now goes first."""
    scheduler = FairScheduler(workers=1, per_tenant=10, max_waiting=20)
    gate, order = threading.Event(), []
    try:
        first = scheduler.submit("a", gate.wait)
        flood = [scheduler.submit("a", lambda i=i: order.append(f"a{i}")) for i in range(3)]
        late = [scheduler.submit(t, lambda t=t: order.append(t)) for t in ("b", "c")]
    finally:
        gate.set()
    for f in [first, *flood, *late]:
        f.result(timeout=10)
    assert order == ["b", "c", "a0", "a1", "a2"]  # then in turn: a had the last start before b and c came


def test_busy_tenants_still_take_turns_one_start_each():
    scheduler = FairScheduler(workers=1, per_tenant=10, max_waiting=20)
    gate, order = threading.Event(), []
    try:
        first = scheduler.submit("a", gate.wait)
        tasks = [scheduler.submit(t, lambda t=t, i=i: order.append(f"{t}{i}")) for i in range(3) for t in ("a", "b")]
    finally:
        gate.set()
    for f in [first, *tasks]:
        f.result(timeout=10)
    assert order == ["b0", "a0", "b1", "a1", "b2", "a2"]


def test_a_tenant_with_work_queued_is_not_starved_by_tenants_that_send_one_task_at_a_time():
    """Review of trial46b: a tenant that held nothing came back ranked "never served", ahead of every tenant
    whose task had started once, so two tenants each sending their next task as the last was answered (a user
    chatting, a client reading page after page) always had one of them waiting ranked first, and a's second
    task never started: not behind one task of each other tenant, behind all of theirs."""
    scheduler = FairScheduler(workers=1, per_tenant=10, max_waiting=20)
    order: list[str] = []

    def held(name: str) -> tuple[threading.Event, threading.Event, object]:
        started, gate = threading.Event(), threading.Event()

        def task() -> None:
            order.append(name)
            started.set()
            gate.wait(10)
        return started, gate, task

    a0_started, a0_gate, a0 = held("a0")
    first = scheduler.submit("a", a0)
    second = scheduler.submit("a", lambda: order.append("a1"))  # a's backlog: one more task
    assert a0_started.wait(10)
    running = {}
    for t in ("c", "d"):
        running[t] = held(f"{t}0")
        scheduler.submit(t, running[t][2])
    a0_gate.set()
    first.result(timeout=10)
    try:
        for i in range(1, 4):  # c and d in turn: each sends its next task once its last was answered
            for t, other in (("c", "d"), ("d", "c")):
                assert running[t][0].wait(10), order
                running[t][1].set()  # t's task ends: the next one starts (its release came first) ...
                if "a1" in order:
                    break
                assert running[other][0].wait(10), order
                running[t] = held(f"{t}{i}")
                scheduler.submit(t, running[t][2])  # ... and t asks again, holding nothing meanwhile
            if "a1" in order:
                break
    finally:
        for _, gate, _ in running.values():
            gate.set()
    second.result(timeout=10)
    assert order.index("a1") <= 3, order  # behind at most one task of c and one of d
    assert order[:2] == ["a0", "c0"], order  # c came while a0 ran: it went before a's next (trial46b's order)


def test_a_full_tenant_or_queue_is_busy_with_a_retry_after():
    scheduler = FairScheduler(workers=1, per_tenant=2, max_waiting=3)
    gate = threading.Event()
    try:
        held = [scheduler.submit("a", gate.wait), scheduler.submit("a", gate.wait)]  # one runs, one waits
        with pytest.raises(Busy) as busy:
            scheduler.submit("a", gate.wait)
        assert busy.value.retry_after >= 1 and "at most 2" in str(busy.value)
        others = [scheduler.submit(t, lambda: None) for t in ("b", "c")]  # 3 waiting: the queue is full
        with pytest.raises(Busy, match="waiting"):
            scheduler.submit("d", lambda: None)
    finally:
        gate.set()
    for f in [*held, *others]:
        f.result(timeout=10)
    assert scheduler.submit("a", lambda: 42).result(timeout=10) == 42  # room again


def test_a_task_cancelled_while_waiting_never_runs_and_frees_its_slot():
    scheduler = FairScheduler(workers=1, per_tenant=2, max_waiting=4)
    gate, ran = threading.Event(), []
    try:
        running = scheduler.submit("a", gate.wait)
        waiting = scheduler.submit("a", lambda: ran.append("x"))
        assert waiting.cancel()
    finally:
        gate.set()
    running.result(timeout=10)
    assert scheduler.submit("a", lambda: "ok").result(timeout=10) == "ok"
    assert ran == [] and scheduler.stats()["running"] == 0


def test_errors_reach_the_caller():
    scheduler = FairScheduler()
    with pytest.raises(ZeroDivisionError):
        scheduler.submit("a", lambda: 1 / 0).result(timeout=10)


def test_a_task_knows_how_long_it_waited_and_how_many_started_before_it():
    scheduler = FairScheduler(workers=1, per_tenant=10, max_waiting=20)
    gate = threading.Event()
    try:
        first = scheduler.submit("a", lambda: (gate.wait(), scheduler.waited())[1])
        flood = [scheduler.submit("a", scheduler.waited) for _ in range(4)]
        late = scheduler.submit("b", scheduler.waited)
        threading.Event().wait(0.05)
    finally:
        gate.set()
    assert first.result(timeout=10).behind == 0
    waited = late.result(timeout=10)
    assert waited.behind == 0 and waited.seconds >= 0.05  # b waited for a's running task only: a had just had its turn
    assert [f.result(timeout=10).behind for f in flood] == [1, 2, 3, 4]  # a's first queued task waited for b's turn
    assert scheduler.waited() is None  # outside a task


def test_closing_refuses_the_waiting_tasks_and_lets_the_running_one_finish():
    from service.scheduler import Stopping

    scheduler = FairScheduler(workers=1, per_tenant=4, max_waiting=8)
    gate, ran = threading.Event(), []
    running = scheduler.submit("a", lambda: gate.wait(10) and ran.append("running"))
    waiting = [scheduler.submit(t, lambda t=t: ran.append(t)) for t in ("a", "b")]
    assert scheduler.close("the service is stopping") == 2
    for f in waiting:
        with pytest.raises(Stopping, match="stopping"):
            f.result(timeout=1)
    with pytest.raises(Stopping):
        scheduler.submit("c", lambda: None)
    gate.set()
    running.result(timeout=10)
    assert ran == ["running"] and scheduler.stats() == {"running": 0, "waiting": 0, "tenants": 0}


def test_a_task_still_running_does_not_hold_the_process_exit():
    """`pluralign serve` returns once uvicorn stopped; a DELETE still waiting for the store's lease (minutes)
    on the scheduler's thread held the interpreter's exit (a ThreadPoolExecutor's threads are joined at
    exit) until the orchestrator's SIGKILL, where the signal uvicorn re-raised used to end it at once."""
    import subprocess
    import sys

    code = ("import threading; from service.scheduler import FairScheduler; s = FairScheduler(what='deletes'); "
            "started = threading.Event(); s.submit('acme', lambda: (started.set(), threading.Event().wait(3600))); "
            "assert started.wait(10); print('running', flush=True)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20,
                          cwd=Path(__file__).resolve().parents[2])
    assert (done.returncode, done.stdout) == (0, "running\n"), done.stderr


def test_with_half_the_workers_kept_free_a_third_tenant_starts_while_two_saturate_theirs():
    """The generation scheduler as `Runtime` builds it (session 48): a tenant alone runs on 2 of 4 workers, a second
    tenant's first task takes a third, and a third tenant's task the fourth, with neither of theirs ended. With one kept
    free (before), a took 3, b the last, and c waited for one of them to end."""
    scheduler = FairScheduler(workers=4, per_tenant=10, max_waiting=20, running_per_tenant=1, kept_free=2)
    gates, started = {}, []

    def held(name: str):
        gates[name] = threading.Event()
        return lambda: (started.append(name), gates[name].wait(10))

    try:
        futures = [scheduler.submit("a", held(f"a{i}")) for i in range(4)]
        assert until(lambda: len(started) == 2) and scheduler.stats()["running"] == 2  # alone: half kept free
        futures += [scheduler.submit("b", held(f"b{i}")) for i in range(4)]
        futures.append(scheduler.submit("c", held("c0")))
        assert until(lambda: len(started) == 4) and started[2:] == ["b0", "c0"], started
    finally:
        for gate in list(gates.values()):
            gate.set()
    for future in futures:
        future.result(timeout=10)


def test_a_running_task_let_go_gives_its_tenant_s_place_back_at_once_and_only_once():
    """Session small53: a task whose caller left kept its tenant's place until it returned (a retry at once got Busy).
    `let_go` gives the place back then; the task keeps its worker, and its return gives back nothing more."""
    scheduler = FairScheduler(workers=1, per_tenant=2, max_waiting=4)
    gate = threading.Event()
    try:
        running = scheduler.submit("a", gate.wait)
        waiting = scheduler.submit("a", lambda: "second")
        assert until(lambda: scheduler.stats()["running"] == 1)
        with pytest.raises(Busy):
            scheduler.submit("a", lambda: "third")
        assert scheduler.let_go(running) is False and scheduler.held("a") == 1  # running: not dropped, its place given back
        assert scheduler.let_go(running) is False and scheduler.held("a") == 1  # twice: once
        third = scheduler.submit("a", lambda: "third")
        assert scheduler.stats() == {"running": 1, "waiting": 2, "tenants": 1}  # the worker still taken
        assert scheduler.let_go(third) is True and third.cancelled() and scheduler.held("a") == 1  # waiting: dropped
    finally:
        gate.set()
    assert waiting.result(timeout=10) == "second"
    assert until(lambda: scheduler.held("a") == 0) and scheduler.stats() == {"running": 0, "waiting": 0, "tenants": 0}
