"""Data session 36: every per-user GET answers an unknown user alike: 404 (`not_found_error`) from the
profile, the preferences page and the export, GET or HEAD; the stated preferences answer version 0, as
docs/api.md promises (a first PATCH's `If-Match: *`). Known is anything held: a user row (stated
preferences), a comparison, a chat, or feedback acknowledged and still in the feedback log."""

from __future__ import annotations

import json

import pytest

from service.users.services import READ_INLINE_ROWS, READ_RETRY_AFTER
from tests.service.tiny import start_service

ROUTES = ("/v1/users/{}", "/v1/users/{}/preferences", "/v1/users/{}/export", "/v1/users/{}/export?format=preferences")


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("d36-unknown"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def row(i: int) -> str:
    return json.dumps({"prompt": f"Q{i}?", "chosen": f"Yes {i}.", "rejected": f"No {i}."})


def test_an_unknown_user_is_a_404_from_every_per_user_get(svc):
    """Before: GET .../preferences of a user never seen answered 200 with an empty page, where the
    profile and the export answered 404."""
    with svc.client("acme") as c:
        for route in ROUTES:
            for method in ("GET", "HEAD"):
                r = c.request(method, route.format("nobody"))
                assert r.status_code == 404, (method, route, r.status_code, r.text)
                if method == "GET":
                    error = r.json()["error"]
                    assert (error["type"], error["code"]) == ("not_found_error", "not_found"), error
                    assert error["message"] == "no user 'nobody' in this tenant", error
        stated = c.get("/v1/users/nobody/stated-preferences")  # docs/api.md: version 0 for any user, known or not
        assert stated.status_code == 200 and stated.json()["version"] == 0 and stated.headers["etag"] == '"0"'
        # a user of another tenant is unknown here too
        assert c.post("/v1/users/ona/import", content=row(0)).status_code == 201
    with svc.client("globex") as g:
        assert g.get("/v1/users/ona/preferences").status_code == 404


def test_a_user_known_by_stated_preferences_or_pending_feedback_is_not_unknown(svc):
    with svc.client("acme") as c:
        assert c.patch("/v1/users/sia/stated-preferences", json={"preferences": {"length": "less"}}).status_code == 200
        with svc.runtime.ingest.paused():  # the worker is busy elsewhere: the rows wait in the feedback log
            assert c.post("/v1/users/pia/import", content=row(1)).status_code == 201
            assert c.post("/v1/users/big/import", content="\n".join(row(i) for i in range(READ_INLINE_ROWS + 100))).status_code == 201
            for route in ROUTES:
                assert c.get(route.format("sia")).status_code == 200, route
                r = c.get(route.format("pia"))
                assert r.status_code == 200, (route, r.text)
                r = c.get(route.format("big"))  # still being stored: 503 with Retry-After, not unknown
                assert (r.status_code, r.headers.get("retry-after")) == (503, str(READ_RETRY_AFTER)), (route, r.status_code)
            # gone with its backlog: else the module's worker embedded its 1,800 texts under the next tests (~7 s)
            assert c.delete("/v1/users/big").status_code == 200
        page = c.get("/v1/users/sia/preferences").json()
        assert (page["total"], page["data"]) == (0, [])
        assert c.get("/v1/users/pia/preferences").json()["total"] == 1


def test_a_deleted_user_is_unknown_again(svc):
    with svc.client("acme") as c:
        assert c.post("/v1/users/dee/import", content=row(2)).status_code == 201
        assert c.get("/v1/users/dee/preferences").json()["total"] == 1
        assert c.delete("/v1/users/dee").status_code == 200
        for route in ROUTES:
            assert c.get(route.format("dee")).status_code == 404, route
