"""Data session 36: a conversational row's message takes `role` and `content` only; any other key is
refused naming its path (`line 1.chosen[1].foo`), as an unknown key of the row itself is, by the import
route, and the library and the CLI alike (tests/unit/test_data36_cli.py)."""

from __future__ import annotations

import json

import pytest

from tests.service.tiny import field_named, start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("d36-messages"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def conversation(answer: str, **extra) -> list[dict]:
    return [{"role": "user", "content": "Tea or coffee?"}, {"role": "assistant", "content": answer, **extra}]


@pytest.mark.parametrize(("row", "named"), [
    ({"chosen": conversation("Tea.", foo=1), "rejected": conversation("Coffee.")}, "chosen[1].foo"),
    ({"chosen": conversation("Tea."), "rejected": conversation("Coffee.", name="bob")}, "rejected[1].name"),
    ({"prompt": [{"role": "user", "content": "Tea?", "foo": 0}], "chosen": [{"role": "assistant", "content": "Tea."}],
      "rejected": [{"role": "assistant", "content": "Coffee."}]}, "prompt[0].foo"),
])
def test_an_imported_messages_unknown_key_is_a_400_naming_its_path(svc, row, named):
    """Before: 201, the row stored as its flattened text and the key silently dropped (the library kept it
    in `Preference.trl`, the service stores text only), where an unknown key of the row itself is a 400."""
    with svc.client("acme") as c:
        good = {"prompt": "Milk?", "chosen": "Yes.", "rejected": "No."}
        r = c.post("/v1/users/mia/import", content=json.dumps(good) + "\n" + json.dumps(row))
        assert r.status_code == 400, (r.status_code, r.text)
        assert field_named(r) == f"line 2.{named}", r.json()
        error = r.json()["error"]
        assert error["message"].startswith(f"`line 2.{named}`: unknown field"), error
        assert "`role` and `content`" in error["message"], error
        # the same key on the row itself: the same rule and code
        top = c.post("/v1/users/mia/import", content=json.dumps({**good, "foo": 1}))
        assert top.status_code == 400 and top.json()["error"]["code"] == error["code"], top.json()
        assert c.get("/v1/users/mia/preferences").json().get("total", 0) == 0  # nothing of the body was stored


def test_a_message_without_unknown_keys_still_imports(svc):
    with svc.client("acme") as c:
        row = {"chosen": conversation("Tea."), "rejected": conversation("Coffee.")}
        r = c.post("/v1/users/max/import", content=json.dumps(row))
        assert r.status_code == 201, r.text
        (stored,) = c.get("/v1/users/max/preferences").json()["data"]
        assert (stored["prompt"], stored["chosen"], stored["rejected"]) == ("Tea or coffee?", "Tea.", "Coffee.")


def test_feedback_takes_no_message_lists(svc):
    """POST /v1/feedback's comparison takes text, not TRL's message lists: a list is a 400 naming the field."""
    with svc.client("acme") as c:
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "mia", "prompt": "Tea?",
                                         "chosen": conversation("Tea.", foo=1), "rejected": "Coffee."})
        assert r.status_code == 400 and field_named(r) == "chosen", r.json()


@pytest.mark.parametrize(("row", "named"), [
    ({"chosen": conversation("Tea."), "rejected": [{"role": "user", "content": "Tea or coffee?"}, {"role": "bot", "content": "Coffee."}]},
     "rejected[1].role"),
    ({"prompt": "Milk?", "chosen": "Yes.", "rejected": "No.", "created_at": -5}, "created_at"),
    ({"prompt": "Milk?", "chosen": "Yes.", "rejected": "No.", "created_at": 1e300}, "created_at"),
    ({"prompt": "Milk?", "chosen": "Yes.", "rejected": "No.", "created_at": "2024-05-01"}, "created_at"),
])
def test_an_imported_role_or_time_no_row_takes_is_a_400_naming_it(svc, row, named):
    """Session rows42. Before: 201 for a message role `bot` (stored as "bot: Coffee.", a role the chat route
    refuses), and for `created_at` -5 or 1e300 (stored, sorting the user's pages before 1970 or past any date
    a client shows); a date string was a 400 saying only "Expected `float | null`, got `str`"."""
    with svc.client("acme") as c:
        good = {"prompt": "Milk?", "chosen": "Yes.", "rejected": "No."}
        r = c.post("/v1/users/ria/import", content=json.dumps(good) + "\n" + json.dumps(row))
        assert r.status_code == 400, (r.status_code, r.text)
        assert field_named(r) == f"line 2.{named}", r.json()
        message = r.json()["error"]["message"]
        assert ("must be one of `system`, `developer`, `user`, `assistant`, `tool`" if named.endswith("role")
                else "must be a Unix time in seconds") in message, message
        assert c.get("/v1/users/ria/preferences").json().get("total", 0) == 0  # nothing of the body was stored
