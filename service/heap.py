"""The objects a service holds from its start (torch, transformers, LanceDB, the models: over 600,000 of them)
kept out of Python's full garbage collections while it serves.

A full collection walks every object the collector tracks, on whichever thread allocated past its threshold, holding
the interpreter lock throughout: 0.7-0.9 s here over a started service's heap. Decoding a request body of many JSON
arrays or objects (1 MB holds 240,000 `[]`) allocates past that threshold several times, so one tenant's bodies of
nested arrays (refused with a 400 or not) stalled every tenant's requests: another tenant's profile reads went from
p50 50 ms to 5.4 s (max 14 s) under one such client. `gc.freeze()` moves the objects alive at the start to the
permanent generation, which collections skip (Python's documented use: a heap made once before serving); the
collections that still run walk only what came after, the same attack then left the reads at p50 0.7 s.

Frozen objects are still freed when their last reference goes; only a reference cycle among them outlives its last
use (an object swapped out later: a reloaded population model), until the last service of the process stops and
`thaw` hands them back to the collector. Several services in one process (tests, replicas in one interpreter) share
one count: the heap is frozen again at each start (what that one loaded) and thawed when the last one stops."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_serving = 0  # services of this process between `freeze_started_heap` and `thaw`


def freeze_started_heap() -> int:
    """Freeze every object the collector tracks now (`gc.freeze`, O(1)). Call once a service has loaded what it
    serves with; returns how many services of the process now serve (this one included). No collection first: one
    over a started service's heap took 1.5 s here and found 30 objects of garbage, which stay frozen with the rest
    until `thaw`. Nor a count of what is frozen: `gc.get_freeze_count()` walks the whole frozen list (0.06 s over a
    test process's 600,000 objects, at each of the suite's 1,000 service starts)."""
    global _serving
    with _lock:
        _serving += 1
        gc.freeze()
        return _serving


def thaw() -> None:
    """A service stops: once no other service of the process is serving, frozen objects go back to the collector
    (`gc.unfreeze`), so a process that starts and stops services (a test run) frees their cycles."""
    global _serving
    with _lock:
        _serving = max(0, _serving - 1)
        if _serving == 0:
            gc.unfreeze()


@contextmanager
def thawed() -> Iterator[None]:
    """The frozen objects handed back to the collector for the block, then frozen again with whatever came since (as a
    start freezes what it loaded): `gc.get_objects()` leaves frozen objects out, so a search of every object alive (the
    tests' search for what still holds a deleted user's texts) runs inside it. A service starting or stopping meanwhile
    waits for the block's end; with nothing frozen the block runs as it is (freezing after it would leave every later
    cycle of the process uncollected)."""
    with _lock:
        if not gc.get_freeze_count():
            yield
            return
        gc.unfreeze()
        try:
            yield
        finally:
            gc.freeze()
