"""A hostile pass on today's fixes (break session 18d), on the wire: an import line nested deeper
than the decoder goes was named `body` (the generic RecursionError answer), while every other
malformed import line is named `line N` (code invalid_json)."""

from __future__ import annotations

import pytest

from tests.service.tiny import field_named, start_service

OK_ROW = b'{"prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}'


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("break18d"), tiny_generator_dir, tiny_pal_dir, minilm, adapter_every=1_000_000)
    with server:
        yield service


DEEP = 5_000  # deeper than msgspec decodes (1,000), under MAX_JSON_CONTAINERS (10,000): the decoder's refusal


@pytest.mark.parametrize("line", [b"[" * DEEP + b"]" * DEEP,
                                  b'{"prompt": "p", "chosen": "a", "rejected": "b", "attributes": {"g": ' + b"[" * DEEP + b"]" * DEEP + b"}}"])
def test_an_import_line_nested_too_deeply_is_named_by_its_line(svc, line):
    with svc.client() as c:
        r = c.post("/v1/users/deep18d/import", content=OK_ROW + b"\n\n" + line + b"\n", headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 400 and field_named(r) == "line 3", r.text
        assert r.json()["error"]["code"] == "invalid_json" and "nested too deeply" in r.json()["error"]["message"], r.text
        assert c.get("/v1/users/deep18d/preferences").status_code == 404  # nothing of the body stored


def test_an_import_line_opening_more_containers_than_the_cap_is_named_by_its_line_before_decoding(svc):
    """100,000 nested arrays (the case above until session 42) are past the container cap (hostile42), which
    answers from the line's bytes before the decoder sees it: still `line 3`, and nothing stored."""
    line = b"[" * 100_000 + b"]" * 100_000
    with svc.client() as c:
        r = c.post("/v1/users/deep18d/import", content=OK_ROW + b"\n\n" + line + b"\n", headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 400 and field_named(r) == "line 3", r.text
        assert "opens 100000 JSON objects and arrays; a line may open at most 10000" in r.json()["error"]["message"], r.text
        assert c.get("/v1/users/deep18d/preferences").status_code == 404
