"""freeze60: the holder search (`tests.holders`) reads the objects a running service froze at its start too."""

from __future__ import annotations

import gc
import uuid

from service.heap import freeze_started_heap, thaw
from tests.holders import holders_of


def test_the_holder_search_finds_a_text_in_a_container_frozen_at_a_start_and_filled_after():
    """A container made before a service's start (a module-level cache, a worker's dict) is frozen with the start's
    heap (`service.heap`), and one of a user's texts put into it later is in no object `gc.get_objects()` lists: the
    search read only what came after the start (~2,900 objects in a running service) and saw no holder."""
    cache: dict[str, object] = {"sizes": []}  # (a dict of strs alone is not tracked by gc at all)
    marker = uuid.uuid4().hex
    freeze_started_heap()
    try:
        cache["last"] = f"a text of {marker}"  # mutated in place: the dict stays frozen
        assert id(cache) not in map(id, gc.get_objects())
        assert holders_of([marker]) == [f"1 builtins.dict holding texts[0] ({marker[:12]}...)"]
        assert gc.get_freeze_count() > 0 and id(cache) not in map(id, gc.get_objects())  # frozen again after it
        del cache["last"]
        assert holders_of([marker], collect=False) == []
    finally:
        thaw()
    assert gc.get_freeze_count() == 0
