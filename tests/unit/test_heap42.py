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
