"""freeze60: after each way a user's data is deleted, nothing in the service's process holds their texts: neither an
object the service froze at its start and filled since (`tests.holders` reads frozen objects too), nor garbage
awaiting a collection (the collector is off from the first request to the search), driven over real HTTP. One search
after all the deletes (a search reads ~720,000 objects: seconds of CPU), each path's texts holding its own marker, so
a holder found names the path that left it."""

from __future__ import annotations

import gc
import uuid

from tests.holders import assert_none_hold
from tests.service.test_delete_journal import wait_until
from tests.service.tiny import start_service


def _comparisons(c, user: str, marker: str, n: int = 2) -> None:
    for i in range(n):
        body = {"type": "comparison", "user": user, "prompt": f"Tell me {i} about {marker}?",
                "chosen": f"Briefly {i} {marker}.", "rejected": f"At length {i} {marker}."}
        assert c.post("/v1/feedback", json=body).status_code == 201


def _chat(c, user: str, marker: str) -> None:
    r = c.post("/v1/chat/completions", json={"model": "pluralign", "user": user, "max_tokens": 6, "seed": 1,
                                             "messages": [{"role": "user", "content": f"Tell me about {marker}?"}]})
    assert r.status_code == 200, r.text


def test_no_delete_path_leaves_a_users_texts_in_memory(tmp_path, tiny_generator_dir, tiny_pal_dir, sentence_encoder):
    """A user's stated preferences set, a PATCH refused for a feature name holding their text, then cleared, then their
    DELETE; a user's export then DELETE; a user's feedback still pending in the ingest log (the worker paused) when
    their DELETE comes; a user whose own LoRA adapter served their chat (loaded in the pool) then DELETE; and globex's
    removal (an admin's), its user having given feedback and chatted."""
    from service.admin.controllers import ADMIN_HANDLERS
    from service.users.services import register_adapter
    from tests.service.test_service_adapters import random_adapter

    markers = {path: f"{path}-{uuid.uuid4().hex}" for path in ("stated", "export", "pending", "adapter", "tenant")}
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, sentence_encoder,
                                admin_handlers=ADMIN_HANDLERS, adapter_every=1_000_000)
    rt = svc.runtime
    register_adapter(rt, "acme", "adapted-f60", random_adapter(tiny_generator_dir, tmp_path / "lora", rt.adapters.base_model,
                                                                "user", 60))
    with server, svc.client("acme") as acme, svc.client("globex") as globex, svc.client("admin") as admin:
        gc.collect()
        gc.disable()
        try:
            stated = "/v1/users/stated-f60/stated-preferences"
            assert acme.patch(stated, json={"preferences": {"length": "more"}}).status_code == 200
            r = acme.patch(stated, json={"preferences": {f"{markers['stated']} length": "less"}})
            assert r.status_code == 400 and "is not a named feature" in r.text, r.text
            assert acme.patch(stated, json={"preferences": {"length": None}}).status_code == 200
            assert acme.delete("/v1/users/stated-f60").status_code == 200

            _comparisons(acme, "exported-f60", markers["export"])
            r = acme.get("/v1/users/exported-f60/export")
            assert r.status_code == 200 and markers["export"] in r.text, r.text
            assert acme.delete("/v1/users/exported-f60").status_code == 200

            with rt.ingest.paused():
                _comparisons(acme, "pending-f60", markers["pending"])
                assert rt.ingest.log.pending_for("acme", "pending-f60")
                assert acme.delete("/v1/users/pending-f60").status_code == 200

            _comparisons(acme, "adapted-f60", markers["adapter"])
            rt.ingest.flush()
            _chat(acme, "adapted-f60", markers["adapter"])
            assert rt.adapters.adapter_for("acme", "adapted-f60"), "the chat was not served by the user's adapter"
            assert acme.delete("/v1/users/adapted-f60").status_code == 200

            _comparisons(globex, "removed-f60", markers["tenant"])
            rt.ingest.flush()
            _chat(globex, "removed-f60", markers["tenant"])
            assert admin.post("/admin/tenants/globex/removal").status_code == 202
            assert wait_until(lambda: admin.get("/admin/tenants/globex/removal").json()["state"] == "done")
            del r
            rt.wait_for_background()
            assert_none_hold(list(markers.values()), collect=False)
        finally:
            gc.enable()
