"""A chat another replica stored before it saw a DELETE's record, which trial45b's cleanup
(`service.users.services._chats_stored_meanwhile`) left in the store though the rule it documents says it goes.
Deterministic: replica a's record step is wrapped so that replica b's chat is committed at the moment a
real replica b would commit it, with the `created_at` its clock would stamp (b's check of the records found
none: its reads do not see the record yet). Two replicas on one store in this process (real LanceDB)."""

from __future__ import annotations

import time

import pytest

from pluralign.store.failures import StoreUnavailable
from pluralign.store.tables import Interaction
from tests.service.tiny import start_replicas

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("short_read_margin")]  # two services, two DELETEs with replicas: ~6 s

SYNC_MS = 300
SYNC_S = SYNC_MS / 1000
BODY = {"model": "pluralign", "messages": [{"role": "user", "content": "A weekend plan?"}], "pluralign": {"candidates": 1}}


def _chat_of(user: str, created_at: float, response_id: str) -> Interaction:
    """The row replica b's `remember` commits for a chat of `user` served at `created_at` (b's clock)."""
    return Interaction(tenant="acme", user_id=user, response_id=response_id, created_at=created_at, prompt="A weekend plan?",
                       messages=BODY["messages"], candidates=["A walk."], scores=[0.0], chosen_index=0, history=[], model="tiny")


def _stored_chats(rt, user: str) -> set[str]:
    table = rt.store.tables["interactions"]
    table.checkout_latest()
    return {r["response_id"] for r in table.search().where(f"user_id = '{user}'").select(["response_id"]).to_arrow().to_pylist()}


def test_chats_another_replica_stored_before_it_saw_the_record_go_with_the_delete(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                                 minilm, monkeypatch):
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=SYNC_MS,
                                         deletion_sweep_s=3600)
    with first, second, a.client("acme") as acme_a:
        record = a.runtime.deletion_sweep.record
        commit = a.runtime.store.record_deletion

        # 1. b's clock runs 0.25 s ahead of a's (under `store_sync_ms`: the clocks check lets DELETEs run): the chat b
        # commits just before its reads see the record (`store_sync_ms` after its commit) is stamped that much later
        def record_then_b_ahead(tenant, user_id, began_at):
            deletion = record(tenant, user_id, began_at=began_at)
            b.runtime.store.add_interaction(_chat_of(user_id, time.time() + SYNC_S + 0.25, "b-ahead"))
            return deletion

        # 2. the record's commit takes 0.6 s (an object store's PUT): b sees the record `store_sync_ms` after the commit,
        # not after the time stamped in it, and commits a chat in between; the chats are counted no sooner
        committed, counted = [], []
        cleanup = a.runtime.store.delete_feedback_before

        def slow_commit(deletion):
            time.sleep(0.6)
            commit(deletion)
            committed.append(time.time())
            b.runtime.store.add_interaction(_chat_of("slow45", time.time(), "b-slow-commit"))

        def counted_when(*args, **kwargs):
            counted.append(time.time())
            return cleanup(*args, **kwargs)

        for user, patches in (("ahead45", {"deletion_sweep.record": record_then_b_ahead}),
                              ("slow45", {"store.record_deletion": slow_commit, "store.delete_feedback_before": counted_when})):
            assert acme_a.post("/v1/chat/completions", json={**BODY, "user": user}).status_code == 200
            with monkeypatch.context() as m:
                for path, patch in patches.items():
                    owner, name = path.split(".")
                    m.setattr(getattr(a.runtime, owner), name, patch)
                r = acme_a.delete(f"/v1/users/{user}")
            assert r.status_code == 200, r.text
            assert _stored_chats(a.runtime, user) == set(), user
            assert acme_a.get(f"/v1/users/{user}").status_code == 404, user
        # every replica's reads see the record `store_sync_ms` after its commit: counted sooner, a chat b commits in
        # between stays (a lower bound: a loaded machine only makes the wait longer)
        assert counted and counted[0] - committed[0] >= SYNC_S


def test_a_delete_stopped_after_its_record_is_finished_without_the_chats_stored_meanwhile(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                                        minilm, monkeypatch):
    """The cleanup of chats stored meanwhile fails once (an object store's error; or the process is killed in its
    `store_sync_ms` wait): the journal's pass finishes the DELETE. Before: it saw the chat b stored while the DELETE
    ran (after it began) as the user come back (`came_back`), kept it (`forget_before`) and fitted the user's row
    again from it, so the user's profile answered 200 again for good."""
    from service.users import services

    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=SYNC_MS,
                                         deletion_sweep_s=3600)
    user = "stopped45"
    with first, second, a.client("acme") as acme_a:
        record = a.runtime.deletion_sweep.record

        def record_then_b_chats(tenant, user_id, began_at):
            deletion = record(tenant, user_id, began_at=began_at)
            b.runtime.store.add_interaction(_chat_of(user_id, time.time(), "b-meanwhile"))  # b sees no record yet
            return deletion

        def cleanup_fails(*args, **kwargs):
            raise StoreUnavailable("table `interactions`", "s3://bucket", "written", "unreachable", "503 SlowDown")

        assert acme_a.post("/v1/chat/completions", json={**BODY, "user": user}).status_code == 200
        with monkeypatch.context() as m:
            m.setattr(a.runtime.deletion_sweep, "record", record_then_b_chats)
            m.setattr(a.runtime.store, "delete_feedback_before", cleanup_fails)
            r = acme_a.delete(f"/v1/users/{user}")
        assert r.status_code >= 500 and "finishes it by itself" in r.text, r.text
        entry = a.runtime.delete_journal.unfinished("acme", user)
        assert entry is not None
        services.delete(a.runtime, "acme", user, entry)  # what the journal's pass (`UnfinishedDeletes`) runs
        assert a.runtime.delete_journal.unfinished("acme", user) is None
        assert _stored_chats(a.runtime, user) == set()
        assert acme_a.get(f"/v1/users/{user}").status_code == 404
