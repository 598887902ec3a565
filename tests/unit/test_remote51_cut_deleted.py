"""Which generating chats another replica's deletion records stop (`GeneratingChats.cut_deleted` with
`service.deletions.chat_of_deleted`, session remote51)."""

from __future__ import annotations

import threading
from functools import partial

from pluralign.store.deletions import Forget, new_deletion, new_tenant_deletion
from service.deletions import chat_of_deleted
from service.stopping import GeneratingChats


def test_chats_of_a_deleted_user_begun_before_the_record_stop_and_store_nothing():
    chats = GeneratingChats()
    events = {name: threading.Event() for name in ("rae_old", "rae_new", "sam", "anonymous", "globex_old")}
    registered = {
        "rae_old": chats.generating(events["rae_old"], ("acme", "rae")),
        "rae_new": chats.generating(events["rae_new"], ("acme", "rae")),
        "sam": chats.generating(events["sam"], ("acme", "sam")),
        "anonymous": chats.generating(events["anonymous"]),
        "globex_old": chats.generating(events["globex_old"], ("globex", "ann")),
    }
    for name, chat in registered.items():
        chat.began = {"rae_new": 200.0}.get(name, 50.0)
        chat.__enter__()
    forget = Forget.of([new_deletion("acme", "rae", 100.0, 1, began_at=90.0), new_tenant_deletion("globex", 100.0, 1, began_at=90.0)])
    assert chats.cut_deleted(partial(chat_of_deleted, forget)) == 2
    assert {name for name, e in events.items() if e.is_set()} == {"rae_old", "globex_old"}
    assert registered["rae_old"].deleted and not registered["rae_old"].cut
    assert chats.generated(events["rae_old"]) is False  # nothing of it is stored
    assert chats.generated(events["rae_new"]) is True  # begun after the record: the user's again
    assert chats.cut_deleted(partial(chat_of_deleted, forget)) == 0  # each stopped once
