"""`Idempotency-Key` retries that reach another replica than the first attempt, and retries after the
user's DELETE. Two replicas on one store in this process (real LanceDB in a temp dir)."""

from __future__ import annotations

import time

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_delete_journal import wait_until
from tests.service.tiny import fixed_answers, start_replicas

SYNC_MS = 200
USER = "ivy-r37"


def comparison(i: int) -> dict:
    return {"type": "comparison", "user": USER, "prompt": f"Tea or coffee, {i}?", "chosen": f"Tea {i}.", "rejected": f"Coffee {i}."}


def import_body(n: int) -> bytes:
    lines = [f'{{"user_id": "{USER}", "prompt": "Juice {i}?", "chosen": "Apple {i}.", "rejected": "Pear {i}."}}' for i in range(n)]
    return "\n".join(lines).encode() + b"\n"


def held(client) -> list[str]:
    page = client.get(f"/v1/users/{USER}/preferences", params={"limit": 100})
    return [] if page.status_code == 404 else sorted(row["prompt"] for row in page.json()["data"])


def test_a_key_used_on_one_replica_and_sent_again_to_another_stores_once(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """The first attempt's 201 was lost while replica a still held the feedback (its embedding backlog);
    the client's retry reached replica b, which could not see it. Before: both replicas moved their copy
    into the store, and the user held the comparison (and the import's rows) twice."""
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=SYNC_MS,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        with a.runtime.ingest.paused():
            r = acme_a.post("/v1/feedback", json=comparison(0), headers={"Idempotency-Key": "fb-1"})
            assert r.status_code == 201, r.text
            r = acme_a.post(f"/v1/users/{USER}/import", content=import_body(3), headers={"Idempotency-Key": "imp-1"})
            assert r.status_code == 201, r.text
            for path, body, key in (("/v1/feedback", comparison(0), "fb-1"),):
                r = acme_b.post(path, json=body, headers={"Idempotency-Key": key})
                assert r.status_code == 201, r.text
            r = acme_b.post(f"/v1/users/{USER}/import", content=import_body(3), headers={"Idempotency-Key": "imp-1"})
            assert r.status_code == 201, r.text
            b.runtime.ingest.flush()
        a.runtime.ingest.flush()
        want = sorted(["Tea or coffee, 0?", "Juice 0?", "Juice 1?", "Juice 2?"])
        assert a.runtime.store.tables["preferences"].count_rows(f"user_id = '{USER}'") == 4
        time.sleep(2 * SYNC_MS / 1000)  # past the replicas' cached histories' staleness
        for client in (acme_a, acme_b):
            assert held(client) == want
            assert client.get(f"/v1/users/{USER}").json()["counts"]["preferences"] == 4
        # the same choice sent again without a key (review of trial45a): its copy through replica b, which cannot
        # see a's log, has the same ids (drawn from the response, the pick and its turn on the response): stored once
        a.runtime.generator.__class__ = fixed_answers(["Tea.", "Coffee."])
        reply = acme_a.post("/v1/chat/completions", json={"model": "pluralign", "user": USER, "n": 2, "messages": [
            {"role": "user", "content": "Tea or coffee?"}], "pluralign": {"candidates": 2, "shots": 0, "styles": False}})
        assert reply.status_code == 200, reply.text
        time.sleep(2 * SYNC_MS / 1000)  # b sees the response
        pick = {"type": "choice", "response_id": reply.json()["id"], "chosen_index": 1}
        with a.runtime.ingest.paused():
            sent = [client.post("/v1/feedback", json=pick) for client in (acme_a, acme_b)]
            assert [r.status_code for r in sent] == [201, 201], [r.text for r in sent]
            assert sent[0].json()["stored"] == sent[1].json()["stored"]
            b.runtime.ingest.flush()
        a.runtime.ingest.flush()
        assert a.runtime.store.tables["preferences"].count_rows(f"user_id = '{USER}'") == 5


def test_a_key_sent_again_after_the_users_delete_stores_again(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """docs/api.md: a key is remembered as long as what it stored. A retry sent after the user's DELETE is
    feedback received after it (kept, as `pluralign data import` run again on an export must be), through
    either replica; it brings back only what it carries, never the rows the DELETE removed."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=SYNC_MS,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        for i in range(2):
            r = acme_a.post("/v1/feedback", json=comparison(i), headers={"Idempotency-Key": f"fb-{i}"})
            assert r.status_code == 201, r.text
        assert acme_a.delete(f"/v1/users/{USER}").status_code == 200
        r = acme_b.post("/v1/feedback", json=comparison(0), headers={"Idempotency-Key": "fb-0"})
        assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers, r.text
        assert wait_until(lambda: b.runtime.store.deletions_since(0))
        b.runtime.deletion_sweep.run_once()
        b.runtime.ingest.flush()
        time.sleep(2 * SYNC_MS / 1000)
        for client in (acme_a, acme_b):
            assert held(client) == ["Tea or coffee, 0?"]
