"""Wire-format faults a tester found, over HTTP on the real app: `If-Match` parsing and `*`, the
`param` of some 400s, a malformed body's message, `Retry-After` on every answer, feedback on a
response that was not kept, an out-of-range `before`, and an unknown chat model's code."""

from __future__ import annotations

import pytest

from tests.service.tiny import field_named, start_service

COMPARISON = {"type": "comparison", "user": "wire", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("wire-data"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def error(r) -> dict:
    return r.json()["error"]


def test_if_match_with_unbalanced_quotes_is_a_400_naming_it(svc):
    """`"1` and `1"` were taken for version 1 (each quote was optional on its own)."""
    with svc.client() as c:
        assert c.patch("/v1/users/quoter/stated-preferences", json={"preferences": {"length": "less"}}).status_code == 200
        for bad in ('"1', '1"', 'W/"1', "W/1", 'W/1"', '""1"', '"1""', '"1", "2'):
            r = c.patch("/v1/users/quoter/stated-preferences", json={"preferences": {"length": "more"}}, headers={"If-Match": bad})
            assert r.status_code == 400 and field_named(r) == "If-Match", (bad, r.text)
        read = c.get("/v1/users/quoter/stated-preferences")
        assert read.json()["version"] == 1  # none of them wrote
        tag = read.headers["etag"]
        for form, version in (("{}", 1), ("{}", 2), ('"9", {}', 3)):  # the ETag given, alone or in a list
            r = c.patch("/v1/users/quoter/stated-preferences", json={"preferences": {"length": ("less", "more")[version % 2]}},
                        headers={"If-Match": form.format(tag)})
            assert r.status_code == 200 and r.json()["version"] == version + 1, (form, r.text)
            tag = r.headers["etag"]


def test_if_match_star_matches_every_record_get_serves(svc):
    """GET answers 200 with `ETag: "0"` for a user who never stated anything (known or not), so that
    record exists and `If-Match: *` matches it (RFC 9110, 13.1.1); it was a 412 "at version 0, not *"."""
    with svc.client() as c:
        assert c.post("/v1/feedback", json=COMPARISON).status_code == 201
        for user in ("wire", "never-seen"):
            read = c.get(f"/v1/users/{user}/stated-preferences")
            assert read.status_code == 200 and read.headers["etag"] == '"0"', read.text
            r = c.patch(f"/v1/users/{user}/stated-preferences", json={"preferences": {"length": "more"}}, headers={"If-Match": "*"})
            assert r.status_code == 200 and r.json()["version"] == 1 and r.headers["etag"].endswith('.1"'), (user, r.text)
            again = c.patch(f"/v1/users/{user}/stated-preferences", json={"preferences": {"length": "less"}}, headers={"If-Match": "*"})
            assert again.status_code == 200 and again.json()["version"] == 2, again.text


def test_an_empty_attribute_name_is_named_attributes(svc):
    with svc.client() as c:
        r = c.post("/v1/feedback", json={**COMPARISON, "attributes": {"": "v"}})
    assert r.status_code == 400 and field_named(r) == "attributes", r.text
    assert "at `key`" not in error(r)["message"] and error(r)["message"].startswith("`attributes`"), r.text


def test_a_too_long_idempotency_key_is_named_as_the_header(svc):
    with svc.client() as c:
        for key in ("k" * 256, "has space"):
            r = c.post("/v1/feedback", json=COMPARISON, headers={"Idempotency-Key": key})
            assert r.status_code == 400 and field_named(r) == "Idempotency-Key", r.text
            assert error(r)["message"].startswith("`Idempotency-Key`"), r.text


@pytest.mark.parametrize("path,body,field", [
    ("/v1/users/wire/next-comparison", b'{"pool": [{"prompt": "p", "answers": ["a", "b\xff"]}]}', "pool[0].answers[1]"),
    ("/v1/users/wire/next-comparison", b'{"pool": [{"prompt": "p", "answers": ["a", "b"]}, {"answers": ["\xc3", "c"], "prompt": "q"}]}',
     "pool[1].answers[0]"),
    ("/v1/users/wire/next-comparison", b'{"pool": [{"prompt": "p\xff", "answers": ["a", "b"]}]}', "pool[0].prompt"),
    ("/v1/chat/completions", b'{"model": "pluralign", "messages": [{"role": "user", "content": "h\xff"}]}', "messages[0].content"),
    ("/v1/chat/completions", b'{"model": "pluralign", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\"x\\" \xff"}]}]}',
     "messages[0].content[0].text"),
    ("/v1/feedback", b'{"type": "comparison", "user": "wire", "prompt": "p", "chosen": "a", "rejected": "b", "attributes": {"g": "\xff"}}',
     "attributes.g"),
    ("/v1/feedback", b'{"type": "comparison", "user": "wire", "prompt": "p", "chosen": "a", "rejected": "b", "attributes": {"\xff": "v"}}',
     "attributes"),
], ids=["pool-answer", "second-pool-answer", "pool-prompt", "chat-content", "chat-content-part", "attribute-value", "attribute-name"])
def test_invalid_utf8_names_the_dotted_path_of_its_field(svc, path, body, field):
    with svc.client() as c:
        r = c.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and field_named(r) == field, r.text
    assert error(r)["message"].startswith(f"`{field}`: is not valid UTF-8"), r.text


def test_a_malformed_body_says_so_once(svc):
    with svc.client() as c:
        r = c.post("/v1/feedback", content=b'{"type": "comparison", "user": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and field_named(r) == "body" and error(r)["code"] == "invalid_json", r.text
    assert error(r)["message"].count("not valid JSON") == 1, r.text
    assert error(r)["message"].startswith("`body`: the request body is not valid JSON: "), r.text


def test_only_a_429_carries_retry_after(svc):
    """Every answer carried `Retry-After: 1` (the rate limiter's headers, meant for its 429, were
    added to all); the `RateLimit-*` headers stay on every limited answer."""
    with svc.client() as c:
        for r in (c.post("/v1/feedback", json=COMPARISON), c.get("/v1/models"), c.get("/v1/users/nobody-here")):
            assert "retry-after" not in r.headers, (r.status_code, dict(r.headers))
            assert "ratelimit-limit" in r.headers and "ratelimit-remaining" in r.headers, dict(r.headers)


@pytest.mark.parametrize("chat", [{}, {"user": "wire", "store": False}])
def test_feedback_on_a_response_not_kept_says_it_was_not_stored(svc, chat):
    with svc.client() as c:
        served = c.post("/v1/chat/completions", json={**CHAT, **chat, "n": 2})
        assert served.status_code == 200, served.text
        response_id = served.json()["pluralign"]["response_id"]
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": response_id, "chosen_index": 1})
    assert r.status_code == 404 and field_named(r) == "response_id", r.text
    message = error(r)["message"]
    assert "not stored" in message and "store: false" in message and "anonymous" in message, message
    assert "was served" not in message, message


def test_an_out_of_range_before_is_a_400_naming_it(svc):
    with svc.client() as c:
        for before in ("99999999999999999999999", str(2**63), "0", "-1", "x"):
            r = c.get("/v1/users/wire/stated-preferences", params={"before": before})
            assert r.status_code == 400 and field_named(r) == "before", (before, r.text)
        assert c.get("/v1/users/wire/stated-preferences", params={"before": str(2**63 - 1)}).status_code == 200


def test_an_unknown_chat_model_has_code_model_not_found(svc):
    with svc.client() as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"})
    assert r.status_code == 400 and field_named(r) == "model" and error(r)["code"] == "model_not_found", r.text
    assert "gpt-4o" in error(r)["message"], r.text


def test_if_match_compares_strongly_ignores_empty_elements_and_takes_star_alone(svc):
    """The tester's reproducers: a weak `W/"3"` matched version 3 (200), though If-Match uses the
    strong comparison (RFC 9110, 13.1.1); `"5" ,` (an empty list element, which RFC 9110's list
    syntax ignores) was a 400; `"6",*` (`*` with tags, which the grammar does not allow) was taken.
    Each refused PATCH would change something, so a 200 would show."""
    url = "/v1/users/strong/stated-preferences"
    with svc.client() as c:
        tags = {}  # version -> its ETag
        for version in range(1, 4):
            r = c.patch(url, json={"preferences": {"length": ("less", "more")[version % 2]}})
            assert r.json()["version"] == version
            tags[version] = r.headers["etag"]
        for weak in (f'W/{tags[3]}', f'W/{tags[3]}, W/{tags[2]}'):
            r = c.patch(url, json={"preferences": {"length": "less"}}, headers={"If-Match": weak})
            assert r.status_code == 412 and field_named(r) == "If-Match" and r.headers["etag"] == tags[3], (weak, r.text)
        r = c.patch(url, json={"preferences": {"length": "less"}}, headers={"If-Match": f'W/{tags[3]}, {tags[3]}'})
        assert r.status_code == 200, r.text
        tags[4] = r.headers["etag"]
        for listed, version in (("{} ,", 4), (", {}", 5), (f'{tags[1]},, {{}}', 6)):
            r = c.patch(url, json={"preferences": {"length": ("less", "more")[(version + 1) % 2]}},
                        headers={"If-Match": listed.format(tags[version])})
            assert r.status_code == 200 and r.json()["version"] == version + 1, (listed, r.text)
            tags[version + 1] = r.headers["etag"]
        for mixed in ('"7",*', '*, "7"', "*, W/\"7\""):
            r = c.patch(url, json={"preferences": {"length": "less"}}, headers={"If-Match": mixed})
            assert r.status_code == 400 and field_named(r) == "If-Match", (mixed, r.text)
        for nothing in (",", ", ,"):
            r = c.patch(url, json={"preferences": {"length": "less"}}, headers={"If-Match": nothing})
            assert r.status_code == 400 and field_named(r) == "If-Match", (nothing, r.text)
        assert c.get(url).json()["version"] == 7  # none of the refused ones wrote


def test_an_unknown_model_is_named_once_in_the_404(svc):
    """The tester's reproducer: GET /v1/models/nope answered "`model`: no model 'nope'; available:
    pluralign: unknown model", the problem said again after the list."""
    with svc.client() as c:
        r = c.get("/v1/models/nope")
        assert r.status_code == 404 and error(r)["param"] == "model" and error(r)["code"] == "model_not_found", r.text
        message = error(r)["message"]
        assert message.startswith("`model`: no model 'nope'; available: ") and "unknown model" not in message, message


@pytest.mark.parametrize("metadata", [
    {"": "x"},  # the tester's reproducer: an empty key was accepted
    {"k" * 65: "x"},  # OpenAI: keys up to 64 characters
    {"k": "v" * 513},  # values up to 512
    {f"k{i}": "v" for i in range(17)},  # at most 16 pairs (docs/api.md already said so)
])
def test_chat_metadata_out_of_openais_limits_is_a_400_naming_it(svc, metadata):
    body = {"model": "pluralign", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "metadata": metadata}
    with svc.client() as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 400 and error(r)["param"].startswith("metadata"), r.text
        fine = c.post("/v1/chat/completions", json={**body, "metadata": {"k" * 64: "v" * 512, **{f"k{i}": "v" for i in range(15)}}})
        assert fine.status_code == 200, fine.text
