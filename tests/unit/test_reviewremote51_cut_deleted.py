"""Review of session remote51: a chat registering as generating after the deletion sweep's pass stopped the chats of
its records' users (`GeneratingChats.cut_deleted`) asks the records applied lately, as begun when its plan began."""

from __future__ import annotations

import threading
from functools import partial

from pluralign.store.deletions import Forget, new_deletion
from service.deletions import chat_of_deleted
from service.stopping import GeneratingChats


def test_a_chat_registering_after_the_sweeps_cut_is_stopped_when_its_plan_began_before_the_record():
    """Rae's DELETE through another replica was recorded at 100; this replica's pass stopped the chats generating then
    (none). Before this review a chat of her adapter planned at 95 and registering after that pass was never stopped
    (and counted as begun at its registration, after the record). Now it is stopped as it registers, stores nothing;
    one planned after the record (her adapter is new) and another user's go on."""
    chats = GeneratingChats()
    forget = Forget.of([new_deletion("acme", "rae", 100.0, 0, began_at=90.0)])
    chats.deleted_lately = partial(chat_of_deleted, forget)  # the sweep's `deletes_chat`, its one pass applied
    assert chats.cut_deleted(partial(chat_of_deleted, forget)) == 0  # the pass: nothing registered yet
    planned_before, planned_after, sam = threading.Event(), threading.Event(), threading.Event()
    with chats.generating(planned_before, ("acme", "rae"), began=95.0) as chat:
        assert chat.deleted and planned_before.is_set() and not chat.cut  # before: neither
        assert chats.generated(planned_before) is False  # nothing of it is stored
    with chats.generating(planned_after, ("acme", "rae"), began=101.0) as chat:
        assert not chat.deleted and not planned_after.is_set()
        assert chats.generated(planned_after) is True
    with chats.generating(sam, ("acme", "sam"), began=95.0) as chat:
        assert not chat.deleted and not sam.is_set()
