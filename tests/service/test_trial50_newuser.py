"""Session trial50: a new user and a hostile client of the whole product, over real HTTP on the real app
(each test drives what that user did and saw go wrong)."""

from __future__ import annotations

import pytest

from tests.service.tiny import field_named, start_service

CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "A weekend plan?"}], "max_tokens": 4,
        "pluralign": {"candidates": 1}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("trial50-data"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def test_feedback_on_a_deleted_users_response_says_the_user_was_deleted(svc):
    """A user chatted, was deleted (their DELETE removes their responses), and the app then sent the rating of
    that chat: the 404 named `response_id` but blamed an anonymous chat or `store: false`, neither of which
    this chat was, so the app's developer went looking for a missing `user` field."""
    with svc.client() as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "user": "gone50"})
        assert r.status_code == 200, r.text
        assert c.delete("/v1/users/gone50").status_code == 200
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": r.json()["id"], "rating": 5})
        assert r.status_code == 404 and field_named(r) == "response_id", r.text
        assert "DELETE removes their responses" in r.json()["error"]["message"], r.text
