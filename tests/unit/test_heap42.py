"""`service.heap`: the started heap frozen while services serve, thawed when the last one of the process stops."""

from __future__ import annotations

import gc

from service.heap import freeze_started_heap, thaw


def test_the_heap_is_thawed_when_the_last_service_of_the_process_stops():
    made = object.__new__(type("Made", (), {}))  # alive before the starts: frozen with the rest
    assert freeze_started_heap() > 0
    assert freeze_started_heap() > 0  # a second service in the process
    try:
        assert not any(o is made for o in gc.get_objects())
        thaw()  # one stops: the other still serves
        assert gc.get_freeze_count() > 0 and not any(o is made for o in gc.get_objects())
    finally:
        thaw()
    assert gc.get_freeze_count() == 0  # the last stopped: a cycle of theirs is collected again
    assert any(o is made for o in gc.get_objects())


def test_a_start_freezes_without_walking_what_is_frozen(monkeypatch):
    """`gc.get_freeze_count()` walks the whole frozen list: 0.06 s of CPU over a test process's heap, at each of the suite's
    1,000 service starts, for a figure nothing read. A start freezes and counts the services serving instead."""
    import service.heap

    walks = []
    monkeypatch.setattr(service.heap.gc, "get_freeze_count", lambda: walks.append(1) or 1)
    serving = service.heap._serving  # 0, unless a service an earlier test of this process started still serves
    try:
        assert freeze_started_heap() == serving + 1
        assert freeze_started_heap() == serving + 2  # a second service in the process
        assert walks == []
    finally:
        thaw()
        thaw()
