"""A DELETE through one replica while another serves the user's chats (trial45b, found against moto's S3
with two `pluralign serve`: 16 chats replica b stored while replica a's DELETE ran were in the bucket after
its 200, and the user's profile answered 200 on both replicas, though nothing was sent after the 200).

Replica b checks the store's deletion records before it stores a chat (`service.chat.services.remember`), but
the record is written at the end of the DELETE, and b's reads see it up to `store_sync_ms` later: every chat
b stored before then stayed for good, as b's sweep applied the record only to feedback it had moved in."""

from __future__ import annotations

import threading
import time

import pytest

from pluralign.store.deletions import user_hash
from tests.service.tiny import start_replicas

pytestmark = pytest.mark.slow  # two services on one store and a DELETE with replicas: ~10 s (`make test-scaleout`)

USER = "chatting45"


def _stored_response_ids(rt) -> set[str]:
    table = rt.store.tables["interactions"]
    table.checkout_latest()
    rows = table.search().where(f"user_id = '{USER}'").select(["response_id"]).to_arrow().to_pylist()
    return {r["response_id"] for r in rows}


def test_chats_another_replica_stored_while_a_delete_ran_go_with_it(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=300,
                                         deletion_sweep_s=3600)  # b's sweep is run by hand below
    body = {"model": "pluralign", "user": USER, "messages": [{"role": "user", "content": "A weekend plan?"}],
            "max_tokens": 1, "pluralign": {"candidates": 1}}  # short chats: more of them start inside the DELETE, shorter since purge50
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        sent: list[tuple[float, str]] = []  # (when the chat was sent, its response id), chats b answered
        stop = threading.Event()

        def chat_on_b() -> None:
            while not stop.is_set():
                at = time.time()
                r = acme_b.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
                sent.append((at, r.json()["id"]))

        chats = threading.Thread(target=chat_on_b)
        chats.start()
        try:
            while not sent:  # the user is b's before the DELETE
                time.sleep(0.01)
            r = acme_a.delete(f"/v1/users/{USER}")
        finally:
            stop.set()
            chats.join()
        assert r.status_code == 200, r.text
        (record,) = [d for d in a.runtime.store.deletions_since(0) if d.user_hash == user_hash("acme", USER)]
        during = [rid for at, rid in sent if record.began() <= at < record.deleted_at]
        assert during, "no chat was sent while the DELETE ran: the test saw nothing"
        # the user back right after the 200, through b, before b applied the record: that chat is theirs
        after = acme_b.post("/v1/chat/completions", json=body).json()["id"]
        b.runtime.deletion_sweep.run_once()  # and b applied the record (within deletion_sweep_s in a service)

        before_record = {rid for at, rid in sent if at < record.deleted_at}
        stored = _stored_response_ids(b.runtime)
        assert stored & before_record == set()
        assert after in stored
