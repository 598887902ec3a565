"""A retry answered from the first attempt while a DELETE of its user runs (ver session 40). An `Idempotency-Key`
retry whose rows are acknowledged (feedback, or an import's rows without a `pref_id`) is answered 201 with the first
receipt and `Idempotent-Replayed: true`; nothing is stored or received again, so its rows keep the time they first
came and a DELETE of the user begun before the retry removes them all the same. Once the DELETE is answered the
same key stores anew. docs/api.md ("Retries") says so; this asserts it."""

from __future__ import annotations

import threading

from tests.service.test_replica37_idempotency import USER, comparison, held, import_body


def test_a_retry_replayed_while_a_delete_of_its_user_runs_is_deleted_with_the_first_attempt(serve, monkeypatch):
    data, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        first = acme.post("/v1/feedback", json=comparison(0), headers={"Idempotency-Key": "fb-1"})
        assert first.status_code == 201, first.text
        imported = acme.post(f"/v1/users/{USER}/import", content=import_body(2), headers={"Idempotency-Key": "imp-1"})
        assert imported.status_code == 201, imported.text
        assert len(held(acme)) == 3  # moved into the table

        reached, go = threading.Event(), threading.Event()
        delete_user = rt.store.delete_user

        def held_before_the_rows(tenant, user):  # the DELETE has begun (its journal entry written); the rows still there
            reached.set()
            assert go.wait(30)
            return delete_user(tenant, user)

        monkeypatch.setattr(rt.store, "delete_user", held_before_the_rows)
        answered: list = []
        with svc.client("acme") as deleter:
            delete = threading.Thread(target=lambda: answered.append(deleter.delete(f"/v1/users/{USER}")))
            delete.start()
            try:
                assert reached.wait(30)
                again = acme.post("/v1/feedback", json=comparison(0), headers={"Idempotency-Key": "fb-1"})
                assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true", again.text
                assert again.json()["stored"] == first.json()["stored"]
                retried = acme.post(f"/v1/users/{USER}/import", content=import_body(2), headers={"Idempotency-Key": "imp-1"})
                assert retried.status_code == 201 and retried.headers.get("Idempotent-Replayed") == "true", retried.text
                assert retried.json()["stored"] == imported.json()["stored"]
            finally:
                go.set()
                delete.join(60)
        assert [r.status_code for r in answered] == [200], [r.text for r in answered]
        assert held(acme) == []  # the replayed rows kept their first time: the DELETE, begun before, removed them
        # after the DELETE's answer the same keys store anew
        anew = acme.post("/v1/feedback", json=comparison(0), headers={"Idempotency-Key": "fb-1"})
        assert anew.status_code == 201 and "Idempotent-Replayed" not in anew.headers, anew.text
        assert acme.post(f"/v1/users/{USER}/import", content=import_body(2), headers={"Idempotency-Key": "imp-1"}).status_code == 201
        assert len(held(acme)) == 3
