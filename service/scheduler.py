"""A fair scheduler for generation (and for DELETEs): its own threads, tenants served in turn, bounded queues.

Generation holds the model for seconds; if it ran on the request thread pool, one tenant's burst
of chats would leave every light route (profiles, feedback lookups) waiting for a thread. Here
generation work runs on the scheduler's own `workers` threads. Waiting work is kept per tenant
and the next task is the waiting one of the tenant whose latest task started longest ago (a tenant
that comes holding nothing ranks as if its latest task had started just before the latest start of
all), so a tenant waits behind at most one task of each other tenant (the one running as it came,
or, for a tenant that had waited before it, its next), however many that tenant queued. A tenant with
`per_tenant` tasks waiting or running, or a full queue (`max_waiting`), gets `Busy` (the service
answers 429 with Retry-After) instead of an ever longer wait.

    scheduler = FairScheduler(workers=1, per_tenant=4, max_waiting=32)
    future = scheduler.submit("acme", lambda: generate(...))  # concurrent.futures.Future

A DELETE may wait minutes for the store's maintenance lease (`pluralign.store.lease`) while another
replica holds it; DELETEs run on a scheduler of their own (`what="deletes"`, one worker) for the same
reason: one tenant's burst of them would otherwise hold every request thread.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import sys
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from service.requestid import in_context

log = logging.getLogger("pluralign.service")


class Busy(Exception):
    """The tenant (or everyone) has as much generation work waiting as allowed; retry later."""

    def __init__(self, reason: str, retry_after: int):
        super().__init__(reason)
        self.retry_after = retry_after  # seconds, at least 1


class Stopping(Exception):
    """The scheduler takes no more work (the service is shutting down); the task never ran."""


@dataclass(eq=False)  # a task is itself: found in its queue by identity
class _Task:
    tenant: str
    fn: Callable[[], Any]
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)
    started_before: int = 0  # the scheduler's count of started tasks when this one was queued
    let_go: bool = False  # running, its caller gone: its tenant's place given back already (`FairScheduler.let_go`)


@dataclass(frozen=True)
class Waited:
    """How a task waited for its turn: seconds queued, and how many other tasks started meanwhile
    (the fairness figure: at most one per other tenant with work)."""

    seconds: float
    behind: int


class FairScheduler:
    def __init__(self, workers: int = 1, per_tenant: int = 4, max_waiting: int = 32, what: str = "generations",
                 running_per_tenant: int | None = None, kept_free: int = 1):
        """`what` names the work in Busy's message and the worker threads. `running_per_tenant`: the most
        workers one tenant's tasks start on while another tenant's task waits (default: all of them). With
        no other tenant's task waiting, a tenant runs on more but leaves `kept_free` workers free, so a task of
        each of `kept_free` other tenants starts at once however long the running ones take; while another's waits
        or runs, the first tenant's further tasks wait for its running ones to drop below its share. With
        `running_per_tenant` 1, a tenant with no task running finds a worker free while at most `kept_free` tenants
        have tasks running (the service's generation scheduler keeps half free: with 4 workers a third tenant's task
        starts at once while two others saturate theirs; with 1 kept free, the first tenant ran on 3, the second
        took the last, and a third's waited for one of theirs to end)."""
        running_per_tenant = workers if running_per_tenant is None else running_per_tenant
        if workers < 1 or per_tenant < 1 or max_waiting < 1 or running_per_tenant < 1:
            raise ValueError("`workers`, `per_tenant`, `max_waiting` and `running_per_tenant` must be at least 1")
        if kept_free < 0:
            raise ValueError(f"`kept_free` must be at least 0, got {kept_free}")
        self.workers, self.per_tenant, self.max_waiting, self.what = workers, per_tenant, max_waiting, what
        self.running_per_tenant = min(running_per_tenant, workers)
        self.kept_free = kept_free
        # daemon threads, started as needed: a task still running when the process ends (a DELETE waiting
        # minutes for the store's lease) does not hold its exit; `close` already refused what waited
        self._threads: list[threading.Thread] = []
        self._started_tasks: queue.SimpleQueue = queue.SimpleQueue()  # (task, waited), None to stop a thread
        self._lock = threading.Lock()
        self._waiting: dict[str, deque[_Task]] = {}  # per tenant, oldest first
        self._turns: deque[str] = deque()  # tenants with waiting work, in the order they are served
        self._held: Counter[str] = Counter()  # tasks waiting or running, per tenant
        self._running = 0
        self._running_of: Counter[str] = Counter()  # tasks running, per tenant (at most running_per_tenant)
        self._running_tasks: dict[Future, _Task] = {}  # by their Future, for `let_go`
        self._last_start: dict[str, float] = {}  # per tenant holding tasks: its rank (`_started` at its latest start)
        self._started = 0  # tasks started so far
        self._seconds = 1.0  # moving average of one task's run time (for Retry-After)
        self._local = threading.local()  # the Waited of the task a worker thread runs
        self._closed: str | None = None  # why it takes no more work (`close`)

    def submit(self, tenant: str, fn: Callable[[], Any]) -> Future:
        """Queue `fn` for `tenant`; its Future has fn's result or exception. Cancelling the Future
        before the task starts drops it. Raises Busy when the tenant or the queue is full, Stopping
        once `close` was called."""
        with self._lock:
            if self._closed is not None:
                raise Stopping(self._closed)
            waiting = sum(len(q) for q in self._waiting.values())
            if self._held[tenant] >= self.per_tenant:
                raise Busy(f"this tenant already has {self._held[tenant]} {self.what} waiting or running "
                           f"(at most {self.per_tenant})", self._retry_after(self._held[tenant]))
            if waiting >= self.max_waiting:
                raise Busy(f"{waiting} {self.what} are waiting (at most {self.max_waiting})", self._retry_after(waiting))
            task = _Task(tenant, in_context(fn), started_before=self._started)  # the request's id goes with it
            if not self._held[tenant]:
                # just before the tenant whose task started last (it goes before that one's next task), not
                # before one that has waited since an earlier start: ranked "never served", a tenant sending
                # its next task once its last was answered went before a tenant with a backlog every time,
                # and two such tenants kept that one's backlog waiting for as long as they sent
                self._last_start[tenant] = self._started - 1.5
            self._waiting.setdefault(tenant, deque()).append(task)
            if tenant not in self._turns:
                self._turns.append(tenant)
            self._held[tenant] += 1
            self._dispatch()
        # the task by a weak reference: the future keeps its callbacks, and a task (its `fn`, the request's texts) held
        # by its own future's would be a cycle with the future's result or error (an answer's texts), freed only by a
        # garbage collection, on a quiet service much later; a task waiting, the one `_forget` drops, its queue holds
        weak = weakref.ref(task)
        task.future.add_done_callback(lambda future: self._forget(weak()) if future.cancelled() else None)
        return task.future

    def _forget(self, task: _Task | None) -> None:
        """A task cancelled while it waited (its client went away) leaves the queue at once, and gives its
        tenant's place back: kept until its turn, it answered the tenant's next requests 429 meanwhile. None: gone
        already (it waits in no queue)."""
        if task is None:
            return
        with self._lock:
            queue = self._waiting.get(task.tenant)
            if queue is None or not any(waiting is task for waiting in queue):
                return  # started, or refused by `close`, already
            queue.remove(task)
            if not queue:
                del self._waiting[task.tenant]
                self._turns.remove(task.tenant)
            self._release(task.tenant)

    def let_go(self, future: Future) -> bool:
        """The caller of `future` (from `submit`) stopped waiting for it (its client went away). A task still waiting
        is dropped (True: it never runs); a running one gives its tenant's place back now, not when it returns (False):
        it still holds its worker until it does (the caller's cancel event stops it at its next step), but waiting for
        the model's turn or a long prefill it sees no step for a while, and the tenant's client sending again at once would get
        429 meanwhile. A task done already changes nothing (False)."""
        if future.cancel():
            return True
        with self._lock:
            task = self._running_tasks.get(future)
            if task is not None and not task.let_go:
                task.let_go = True
                self._release(task.tenant)
        return False

    def waited(self) -> Waited | None:
        """Called from inside a task: how it waited for its turn (None outside a task)."""
        return getattr(self._local, "waited", None)

    def held(self, tenant: str) -> int:
        """The places `tenant` holds: its tasks waiting, and those running whose caller still waits for them
        (`let_go`); `per_tenant` at most."""
        with self._lock:
            return self._held[tenant]

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"running": self._running, "waiting": sum(len(q) for q in self._waiting.values()), "tenants": len(self._turns)}

    def close(self, reason: str) -> int:
        """Take no more work: the tasks still waiting never run, their Futures raise Stopping(`reason`)
        (and so does every later `submit`); running ones finish. Returns how many were refused."""
        with self._lock:
            self._closed = reason
            waiting = [task for queue in self._waiting.values() for task in queue]
            self._waiting.clear()
            self._turns.clear()
            for task in waiting:
                self._release(task.tenant)
        for task in waiting:
            if task.future.set_running_or_notify_cancel():  # False: cancelled already (its client went away)
                task.future.set_exception(Stopping(reason))
        return len(waiting)

    def shutdown(self, wait: bool = False) -> None:
        """The threads end once their task is done; with `wait` this returns once they have (their
        running tasks finished), else at once (their tasks are not waited for)."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._started_tasks.put(None)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    def _worker(self) -> None:
        while (item := self._started_tasks.get()) is not None:
            self._run(*item)
            # not held while this thread waits for its next task: a finished task holds its request (its body, its
            # texts decoded), ~3 MB a thread for 1 MB bodies, for as long as no other task comes
            del item

    def _retry_after(self, ahead: int) -> int:
        return max(1, math.ceil(self._seconds * (ahead + 1) / self.workers))

    def _dispatch(self) -> None:
        """Start waiting tasks while a worker is free, one tenant's turn each: the tenant whose latest task
        started longest ago (its rank, `_last_start`) goes first, so a tenant arriving waits for the
        tasks running, not also for the next task of a tenant whose task is running; a tenant running
        `running_per_tenant` tasks already is passed over and keeps its place while another tenant's task
        waits, and otherwise starts one only if `kept_free` workers stay free after it (caller holds the lock)."""
        while self._running < self.workers:
            ready = [t for t in self._turns if self._running_of[t] < self.running_per_tenant]
            if not ready and self._running + 1 + self.kept_free <= self.workers:  # past their share: none other waits, `kept_free` stay free
                ready = list(self._turns)
            if not ready:
                return
            tenant = min(ready, key=self._last_start.__getitem__)  # the first of equals: arrival order
            self._turns.remove(tenant)
            queue = self._waiting[tenant]
            task = queue.popleft()
            if queue:
                self._turns.append(tenant)  # the tenant's next task waits for everyone else's turn
            else:
                del self._waiting[tenant]
            if not task.future.set_running_or_notify_cancel():  # cancelled while waiting (client gone)
                self._release(tenant)
                continue
            self._running += 1
            self._running_of[tenant] += 1
            self._running_tasks[task.future] = task
            self._last_start[tenant] = self._started
            waited = Waited(time.monotonic() - task.submitted, self._started - task.started_before)
            self._started += 1
            refused = self._add_thread() if len(self._threads) < self.workers else None
            if refused is not None and not self._threads:  # no thread to run it on: its caller is told
                self._ended(task)
                task.future.set_exception(refused)  # running: no callback of ours takes the lock (`_forget`'s: cancelled)
                continue
            self._started_tasks.put((task, waited))

    def _add_thread(self) -> RuntimeError | None:
        """Starts one more worker thread: None, or the system's refusal (RuntimeError "can't start new thread": a
        container's pids limit, no memory for a stack), logged and returned, not raised: the threads already there run
        the started tasks in turn (caller holds the lock). Raised, it would leave the task counted
        running though it never ran and, out of `_run`, end that worker and keep the finished task's caller waiting."""
        thread = threading.Thread(target=self._worker, name=f"{self.what}-{len(self._threads)}", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:
            log.warning("%s: a worker thread could not be started (%s); %d run the tasks", self.what, exc, len(self._threads))
            return exc
        self._threads.append(thread)
        return None

    def _ended(self, task: _Task) -> None:
        """`task` no longer runs: its worker and, unless its caller left (`let_go`), its tenant's place are given back
        (caller holds the lock)."""
        self._running -= 1
        self._running_of[task.tenant] -= 1
        if not self._running_of[task.tenant]:
            del self._running_of[task.tenant]
        del self._running_tasks[task.future]
        if not task.let_go:  # else given back as its caller left
            self._release(task.tenant)

    def _release(self, tenant: str) -> None:
        self._held[tenant] -= 1
        if not self._held[tenant]:
            del self._held[tenant]
            del self._last_start[tenant]  # ranked afresh when it sends again (`submit`)

    def _run(self, task: _Task, waited: Waited) -> None:
        """Runs `task`, gives its place back, then tells its caller: one that has its result finds the task neither
        running nor holding its tenant's place in `stats` and `held` (told first, a caller on a loaded
        machine could read the task still running)."""
        start = time.monotonic()
        self._local.waited = waited
        result, error = None, None
        try:
            result = task.fn()
        except BaseException as exc:  # the caller sees it through the Future
            error = exc
        self._local.waited = None
        try:
            with self._lock:
                self._seconds = 0.8 * self._seconds + 0.2 * (time.monotonic() - start)
                self._ended(task)
                self._dispatch()
        finally:  # told whatever became of the bookkeeping: a caller never waits for a task that ended
            if error is not None:
                task.future.set_exception(error)
            else:
                task.future.set_result(result)
            # not kept in this frame, which the error's traceback holds: a cycle (the error, its traceback, this frame,
            # the task's future) freed only by a garbage collection, on a quiet service much later, and the task's
            # `fn` holds its request's texts (a chat's, its user's shots among them)
            del result, error, task


def request_threads() -> int:
    """How many request threads one caller alone runs on: the event loop's default pool's size (`min(32, cores + 4)`;
    `TenantThreads` keeps one more for another caller)."""
    return min(32, (os.cpu_count() or 1) + 4)


def tenant_share(workers: int) -> int:
    """The most request threads one caller (a tenant, the admin keys, requests without a key) starts work on
    while another caller's work waits: half of them, rounded up (3 of 6 on two cores); alone it runs on all
    of them, and `TenantThreads` keeps one more for another caller. Taking the callers' waiting work in turns alone
    let one tenant run on every thread: its slow requests (a score of 33 long texts: 12-16 s on two busy
    cores, longer side by side) then kept another tenant's one-row read waiting 40-57 s for one to end."""
    return max(1, math.ceil(workers / 2))


class DaemonWorker:
    """`ThreadPoolExecutor(1).submit`: what is submitted runs in order on one thread, started at the first submit,
    and a Future says how it went; but the thread is a daemon thread. A ThreadPoolExecutor's threads are joined at
    the interpreter's exit, so one task that never returned (a store call hung) kept the process from exiting
    however long ago its stop had given up waiting for it."""

    def __init__(self, name: str):
        self.name = name
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        future: Future = Future()
        self._tasks.put((future, partial(fn, *args, **kwargs)))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name=self.name)
                self._thread.start()
        return future

    def stop(self) -> None:
        """From now on its thread ends once nothing waits (what was submitted before runs first; a later `submit` starts
        another, which ends the same way): a stopped service's thread does not wait for a next task for the rest of the
        process (a process that runs services one after another, as a test's does, kept one thread of each)."""
        self._stopped = True
        self._tasks.put(None)  # wakes a thread waiting for its next task

    def _run(self) -> None:
        while True:
            item = self._tasks.get()
            if item is not None:
                future, task = item
                if future.set_running_or_notify_cancel():  # else cancelled while it waited
                    try:
                        result = task()
                    except BaseException as exc:  # as ThreadPoolExecutor: the Future holds it
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
                        del result
                # not held while this thread waits for its next one (`FairScheduler._worker`), a task cancelled too
                del future, task
            del item
            if self._stopped:
                with self._lock:  # `submit` puts its task before it looks at the thread: none is left behind
                    if self._tasks.empty():
                        self._thread = None
                        return


class TenantThreads(ThreadPoolExecutor):
    """The request threads, as the event loop's default executor (`loop.set_default_executor`, where
    Litestar's `sync_to_thread` handlers, streamed answers and the service's own `sync_to_thread` calls
    run): work waits per caller and is taken round-robin over the callers that have some (`FairScheduler`),
    so one tenant's burst of slow requests queues no other tenant's request behind it, however long it
    is: each piece of work (a sync handler; each chunk of a streamed export and each step of an import or
    feedback is a piece of its own, queued again) waits for the next free thread, behind at most one piece
    of each other caller's. There are `workers + 1` threads: a caller alone runs on `workers` (as many as the
    loop's own pool had) and the last is kept for another caller's work, free at once however long the pieces
    holding the others take; while another caller's work waits, a caller starts work on at most
    `tenant_share(workers)` of them. A queued piece whose client went away still runs: nothing cancels a sync
    handler on a disconnect (as with the loop's own pool before).
    Nothing is refused (no bound on what waits: the rate limit and the connection limit bound it).
    `lane()` names the caller of the work being submitted (read in the submitting request's context).
    A subclass because the loop takes only a ThreadPoolExecutor; its own pool is never used."""

    def __init__(self, workers: int, lane: Callable[[], str]):
        super().__init__(max_workers=1, thread_name_prefix="unused")
        self.lane = lane
        # one thread more than a caller alone runs on: a hard cap at half would cost a tenant alone
        # 23-35% of its requests a second and its imports 2.4-3.2x their time; all but one of `workers` 7-16% and
        # 1.4-1.8x (benchmarks/tenant_share.py, 2 cores; BENCHMARKS.md, session 46)
        self.scheduler = FairScheduler(workers=workers + 1, per_tenant=sys.maxsize, max_waiting=sys.maxsize, what="request-threads",
                                       running_per_tenant=tenant_share(workers))

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self.scheduler.submit(self.lane(), partial(fn, *args, **kwargs) if args or kwargs else fn)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Work still waiting never runs (its Future raises Stopping); with `wait`, returns once the work
        running has finished, as the loop's own pool did: `asyncio.run` waits so at exit, and a request
        thread's store write is not killed mid-way with the interpreter (its threads are daemon threads)."""
        self.scheduler.close("the service is stopping")
        self.scheduler.shutdown(wait=wait)
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
