"""Chat reranking over real HTTP: what survived mutation testing (session 39)."""

from __future__ import annotations

import pytest

from tests.service.tiny import fixed_answers, start_service

SHORT = "Rest."
LONG = ("Consider the following, at some length: sleep at regular hours, keep the room dark and cool, "
        "avoid screens late at night, and take a short walk every afternoon so that you are tired by evening.")


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm)
    service.runtime.generator.__class__ = fixed_answers([SHORT, LONG])
    with server:
        yield service


def test_a_new_user_who_stated_a_preference_is_served_by_it(svc):
    """A user with no comparisons who stated `length` less is served the short candidate, one who stated
    more the long one: their stated prior ranks the candidates, not MaxMin over the prototypes."""
    served = {}
    with svc.client() as c:
        for direction in ("less", "more"):
            user = f"stated-{direction}"
            r = c.patch(f"/v1/users/{user}/stated-preferences", json={"preferences": {"length": direction}})
            assert r.status_code == 200, r.text
            r = c.post("/v1/chat/completions", json={"model": "pluralign", "user": user, "messages": [
                {"role": "user", "content": "How do I sleep better?"}], "pluralign": {"candidates": 2, "shots": 0, "styles": False}})
            assert r.status_code == 200, r.text
            served[direction] = r.json()["choices"][0]["message"]["content"]
    assert served == {"less": SHORT, "more": LONG}
