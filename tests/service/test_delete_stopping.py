"""The service told to stop while a DELETE waits for its turn behind a running one: the waiting DELETE
never begins and its client gets 503 with Retry-After at once (nothing deleted: safe to send again),
not uvicorn's 500 once its graceful wait ran out; the running one finishes. A real SIGTERM of
`pluralign serve` is tests/e2e/test_delete_sigterm.py (slow)."""

from __future__ import annotations

import threading

from service.app import stop_taking_deletes
from service.users import services
from tests.service.test_break20_delete import give_comparisons
from tests.service.tiny import start_service


def test_a_waiting_delete_is_answered_503_when_the_service_stops(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm)
    rt = svc.runtime
    held, gate, answers = threading.Event(), threading.Event(), {}
    delete_user = rt.store.delete_user

    def held_delete(tenant, user_id):  # zed's DELETE holds the DELETEs' one thread until the gate opens
        held.set()
        gate.wait(30)
        return delete_user(tenant, user_id)

    monkeypatch.setattr(rt.store, "delete_user", held_delete)
    with server, svc.client("acme") as acme:
        give_comparisons(acme, "zed", "tea", n=1)
        give_comparisons(acme, "ann", "coffee", n=1)

        def send(user: str) -> None:
            answers[user] = acme.delete(f"/v1/users/{user}")

        zed = threading.Thread(target=send, args=("zed",))
        zed.start()
        assert held.wait(30)
        ann = threading.Thread(target=send, args=("ann",))
        ann.start()
        while rt.deletes.stats()["waiting"] == 0:  # ann's DELETE queued behind zed's
            threading.Event().wait(0.01)
        assert stop_taking_deletes(server.server.config.app) == 1
        ann.join(10)
        r = answers["ann"]
        assert r.status_code == 503 and r.headers["Retry-After"] == "5" and "nothing of the user was deleted" in r.text, r.text
        assert acme.delete("/v1/users/bob").status_code == 503  # and every DELETE received from now on
        gate.set()
        zed.join(30)
        assert answers["zed"].status_code == 200, answers["zed"].text  # the running one finished
        assert acme.get("/v1/users/ann/preferences").json()["total"] == 1  # nothing of ann's was deleted
        # an unfinished DELETE in the journal is left for the next start, without an error, once the service stops
        entry = rt.delete_journal.begin("acme", "ann", 1.0)
        rt.delete_journal.release(entry)
        assert services.UnfinishedDeletes(rt, 3600).run_once() == 0 and rt.delete_journal.pending() == [entry]
