"""A user id holding a `/`, sent percent-encoded in a path (`/v1/users/ann%2Fpreferences`). The server
decodes the path before routing, so the id became two segments: GET /v1/users/ann%2Fpreferences
answered ann's preferences, PATCH /v1/users/ann%2Fstated-preferences changed ann's stated preferences,
and GET/DELETE /v1/users/a%2Fb were a 404 "no route". An encoded `/` now stays inside its segment,
so the id is checked as the one id it is: a 400 naming `user_id` and the id rule, nothing read or changed."""

from __future__ import annotations

import pytest

from pluralign.data.record import USER_ID_RULE
from tests.service.test_break20_delete import give_comparisons

CASES = [
    ("GET", "/v1/users/ann%2Fpreferences", None),
    ("GET", "/v1/users/ann%2fexport", None),
    ("GET", "/v1/users/a%2Fb", None),
    ("GET", "/v1/users/ann%2F", None),
    ("DELETE", "/v1/users/a%2Fb", None),
    ("DELETE", "/v1/users/ann%2F", None),
    ("PATCH", "/v1/users/ann%2Fstated-preferences", {"preferences": {"length": "less"}}),
    ("GET", "/v1/users/ann%2Fstated-preferences", None),
    ("POST", "/v1/users/ann%2Fnext-comparison", {}),
    ("GET", "/v1/users/..%2F..%2Fv1%2Fmodels", None),
    ("GET", "/v1/users/ann%2Fpreferences/preferences", None),
]


@pytest.fixture(scope="module")
def acme_with_ann(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    from tests.service.tiny import start_service

    server, svc = start_service(tmp_path_factory.mktemp("edges35-slash"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server, svc.client("acme") as acme:
        give_comparisons(acme, "ann", "tea", n=2)
        yield acme


@pytest.mark.parametrize(("method", "path", "body"), CASES)
def test_an_encoded_slash_in_a_user_id_is_a_400_naming_the_id_rule_and_reaches_no_one(acme_with_ann, method, path, body):
    acme = acme_with_ann
    r = acme.request(method, path, json=body)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["param"] == "user_id" and USER_ID_RULE in error["message"] and "%2F" in error["message"], error
    # ann is untouched: her rows, and no stated preference set through the PATCH
    assert acme.get("/v1/users/ann/preferences").json()["total"] == 2
    assert acme.get("/v1/users/ann/stated-preferences").json()["preferences"] == {}


def test_other_percent_encoding_in_a_path_still_reads_as_before(acme_with_ann):
    """`%40` is `@`, which a user id may hold: the id is decoded as before (no user of that name: 404)."""
    acme = acme_with_ann
    assert acme.get("/v1/users/ann%40acme").status_code == 404
    assert acme.get("/v1/users/%61nn/preferences").json()["total"] == 2  # `%61` is `a`
    # a model id may hold a `/` (/v1/models/{model_id:path}): sent encoded, it is still one model id
    r = acme.get("/v1/models/HuggingFaceTB%2FSmolLM2-135M-Instruct")
    assert r.status_code == 404 and "no model 'HuggingFaceTB/SmolLM2-135M-Instruct'" in r.json()["error"]["message"], r.text
