"""Review of retract54 (DELETE /v1/users/{user_id}/preferences/{pref_id}), on the real app over HTTP and a real LanceDB
in a temp folder: what the retraction missed."""

from __future__ import annotations

import json
from urllib.parse import quote

from tests.service.test_retract54 import MISCLICK, give_rule, misclick


def test_an_adapter_made_before_the_misclick_was_imported_again_is_no_longer_served(serve, tiny_generator_dir, tmp_path):
    """An import of the user's export (the same rows, `already_stored`) moves each row's `received_at` to now. The
    retraction took that time for when the row arrived: an adapter registered between the misclick's first arrival and
    the import (it may hold it) was kept and served (and an adapter job queued then, by the same time, left to promote:
    `Admin.forget_adapter_jobs_since` is given the same time, `first_arrival`)."""
    from service.users.services import register_adapter
    from tests.service.test_service_adapters import random_adapter

    _, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        give_rule(acme, "ria", 2)
        oops = misclick(acme, "ria")
        register_adapter(rt, "acme", "ria", random_adapter(tiny_generator_dir, tmp_path / "trained", tiny_generator_dir.name, "user", 1))
        export = acme.get("/v1/users/ria/export?format=preferences")
        assert export.status_code == 200 and MISCLICK in export.text
        again = acme.post("/v1/users/ria/import", content=export.text)  # a nightly sync sends the same file
        assert again.status_code == 201 and oops in again.json()["already_stored"], again.text

        r = acme.delete(f"/v1/users/ria/preferences/{oops}")
        assert r.status_code == 200, r.text
        assert r.json()["adapter_dropped"] is True, r.text
        assert acme.get("/v1/users/ria").json()["adapter"] is None
        assert not rt.adapters.registry.folder("acme", "ria").exists()


def test_an_id_holding_a_slash_is_taken_back_percent_encoded(serve):
    """docs/api.md: "percent-encode an id holding `/` or `%`". The service keeps a `%2F` under /v1/users/ encoded in
    the path it routes on (`service.ids.one_segment_ids`, for user ids), so the handler got `x%2Fy` and answered 404 for
    the row `x/y`: a row whose id holds a `/` could not be taken back at all."""
    ids = ["c/d%2Fe", "x.y"]  # a `/` and a `%2F` that is no slash (a `..`, which an import refuses since review dots54:
    # tests/service/test_dots54_pref_ids.py takes back one an older release stored)
    rows = [{"prompt": f"Which {i}? {MISCLICK}", "chosen": "Long.", "rejected": "Short.", "pref_id": pref_id}
            for i, pref_id in enumerate(ids)]
    _, server, svc = serve()
    with server, svc.client("acme") as acme:
        r = acme.post("/v1/users/ria/import", content="\n".join(json.dumps(row) for row in rows))
        assert r.status_code == 201 and r.json()["stored"] == ids, r.text
        r = acme.delete(f"/v1/users/ria/preferences/{quote('c/d%2Fe', safe='')}")  # c%2Fd%252Fe
        assert r.status_code == 200 and r.json()["retracted"] == "c/d%2Fe", r.text
        r = acme.delete("/v1/users/ria/preferences/x%2Ey")  # a dot percent-encoded or not, the same id
        assert r.status_code == 200 and r.json()["retracted"] == "x.y", r.text
        assert acme.get("/v1/users/ria/preferences").json()["total"] == 0
        r = acme.delete(f"/v1/users/ria/preferences/{quote('c/d%2Fe', safe='')}")  # sent again: done already
        assert r.status_code == 404 and "'c/d%2Fe'" in r.text, r.text



def test_the_misclicks_label_goes_though_the_users_row_could_not_be_written_at_first(serve, monkeypatch):
    """The attributes' clear ran after the row left the store: when the users row could not be written then (no room),
    the 200 said the user would be fitted again at their next read, and that refit kept the row's attributes (a refit
    keeps those of the users row): the misclick's label stayed on their profile for good."""
    from pluralign.store.failures import StoreUnavailable

    _, server, svc = serve()
    store = svc.runtime.store
    with server, svc.client("acme") as acme:
        give_rule(acme, "ria", 2)
        oops = misclick(acme, "ria")
        assert acme.get("/v1/users/ria").json()["attributes"] == {"oops": "yes"}

        def full(*args):
            raise StoreUnavailable("table `users`", "lancedb", "written", "full", "No space left on device", 28)

        with monkeypatch.context() as m:  # the row cannot be deleted: not taken back, its label where it was
            m.setattr(store, "delete_preference", full)
            assert acme.delete(f"/v1/users/ria/preferences/{oops}").status_code == 507
        assert acme.get("/v1/users/ria").json()["attributes"] == {"oops": "yes"}
        with monkeypatch.context() as m:
            m.setattr(store, "put_user_if", full)
            m.setattr(store, "put_user", full)
            r = acme.delete(f"/v1/users/ria/preferences/{oops}")
        if r.status_code == 507:  # not taken back: sent again once there is room
            r = acme.delete(f"/v1/users/ria/preferences/{oops}")
        assert r.status_code == 200, r.text
        after = acme.get("/v1/users/ria").json()
        assert after["counts"]["preferences"] == 2 and after["attributes"] == {}, after


def test_a_request_sent_again_after_part_of_it_was_taken_back_says_so(serve):
    """Review misc54a: docs/api.md: "A feedback sent again with its `Idempotency-Key` after a row of it was taken back is
    no replay any more: ... one of several rows (some still held) is a 422 `idempotency_key_reused`". Its message said "was
    already used for a request of 1 row of this user; this one has 2": the same request, sent again, read as another. Now
    it says the key's rows were taken back in part, which, and what to send; the 422 and nothing stored, as documented."""
    rows = [{"prompt": f"Which {i}? {MISCLICK}", "chosen": f"Long {i}.", "rejected": f"Short {i}."} for i in range(3)]
    body = "\n".join(json.dumps(row) for row in rows)
    _, server, svc = serve()
    with server, svc.client("acme") as acme:
        for user, taken in (("ria", 0), ("ben", 2)):  # the first row taken back; the last (then 2 rows held, a prefix)
            sent = acme.post(f"/v1/users/{user}/import", content=body, headers={"Idempotency-Key": "k-1"})
            assert sent.status_code == 201, sent.text
            ids = sent.json()["stored"]
            assert acme.delete(f"/v1/users/{user}/preferences/{ids[taken]}").status_code == 200
            again = acme.post(f"/v1/users/{user}/import", content=body, headers={"Idempotency-Key": "k-1"})
            assert again.status_code == 422, again.text
            error = again.json()["error"]
            assert (error["param"], error["code"]) == ("Idempotency-Key", "idempotency_key_reused"), error
            assert "taken back" in error["message"], error["message"]
            if taken == 0:  # told for certain: a later row is held, so the first request held it
                assert f"row 1 ({ids[0]})" in error["message"] and "new key" in error["message"], error["message"]
                assert "this one has 3" not in error["message"], error["message"]
            held = acme.get(f"/v1/users/{user}/preferences").json()
            assert sorted(row["pref_id"] for row in held["data"]) == sorted(i for n, i in enumerate(ids) if n != taken)
