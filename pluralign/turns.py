"""A lock taken in turns by callers: when it is released, the caller that waited is served before
the caller that just held it comes back for its next piece of work.

`threading.Lock` is not fair: a thread that releases it and takes it again at once (an encoder's
next batch) usually wins over a thread that has waited all along. One tenant's loop of big batches
held the shared text encoder so, and another tenant's one short text waited behind all of them
(p50 22 s, max 38 s, in a hostile-tenant trial). Work that holds a `Turns` in short pieces, one
turn each, lets every other caller in between two of its pieces:

    turns = Turns()
    lane = caller()  # who the work is for: read once, in the caller's thread
    for piece in pieces:
        with turns.turn(lane):
            work(piece)

Waiters are kept per lane and served round-robin over the lanes that have one; within a lane,
first come first served. A caller waits behind at most one turn of each other lane.
"""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

# who the work being done is for: the service sets `tenant:<name>` (or `admin`) once a request's key is
# known (`service.auth`), for its request threads' turns and for the encoder's; "" (the default, and in
# the CLI and jobs) makes each thread a lane of its own
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("pluralign_caller", default="")


def caller() -> Hashable:
    """The lane of the work the current thread does: `CALLER` when set, else the thread itself."""
    return CALLER.get() or ("thread", threading.get_ident())


class Turns:
    """One holder at a time; on release, the turn goes to the next lane that waits, round-robin.

    Not reentrant: a holder taking a turn again waits for itself for ever."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = False
        self._lanes: dict[Hashable, deque[threading.Event]] = {}  # lanes with waiters, in the order they are served

    def waiting(self) -> int:
        """How many callers wait for a turn now."""
        with self._lock:
            return sum(len(waiters) for waiters in self._lanes.values())

    @contextmanager
    def turn(self, lane: Hashable) -> Iterator[None]:
        """Held for the block: taken at once when free, else after the lanes already waiting have had theirs."""
        self._take(lane)
        try:
            yield
        finally:
            self._give()

    def pass_turn(self, lane: Hashable) -> bool:
        """Held by `lane`'s caller: when another caller waits, hand the turn over and wait for it to come back
        (behind the lanes waiting now, and behind `lane`'s own earlier waiters); else keep it. Returns whether
        it was handed over. A long piece of work held in one `turn` calls this between its steps (a generation:
        after each token), so it takes turns without leaving the block."""
        with self._lock:
            if not self._lanes:
                return False
        self._give()
        try:
            self._take(lane)
        except BaseException:  # (Ctrl-C in the main thread): the block's exit gives the turn back, so it must be held
            self._take(lane)
            raise
        return True

    def _take(self, lane: Hashable) -> None:
        with self._lock:
            if not self._held:
                self._held = True
                return
            granted = threading.Event()
            self._lanes.setdefault(lane, deque()).append(granted)  # a new lane goes last in the round
        try:
            granted.wait()  # `_give` handed the turn over (still held: no other thread can take it in between)
        except BaseException:  # interrupted while waiting: the turn, if handed over meanwhile, goes on to the next
            with self._lock:
                handed = granted.is_set()
                if not handed:
                    self._lanes[lane].remove(granted)
                    if not self._lanes[lane]:
                        del self._lanes[lane]
            if handed:
                self._give()
            raise

    def _give(self) -> None:
        with self._lock:
            if not self._lanes:
                self._held = False
                return
            lane = next(iter(self._lanes))
            waiters = self._lanes.pop(lane)
            granted = waiters.popleft()
            if waiters:
                self._lanes[lane] = waiters  # the lane's next waiter: last in the round
            granted.set()
