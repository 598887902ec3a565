"""Session small52: defects a client of the real app over HTTP met. Image, audio and file parts in a chat's messages
are told as what this text model does not read, with the parts the message's role takes; an `X-Pluralign-User` header
(what the load balancer routes a user's requests by, deploy/README.md) that names another user than the request is a
400 naming both, on every route that reads a user from its path or body."""

from __future__ import annotations

import json

import pytest

from tests.service.tiny import field_named, start_service

CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "A weekend plan?"}], "max_tokens": 2,
        "pluralign": {"candidates": 1}}
HEADER = "X-Pluralign-User"
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
FILE = {"type": "file", "file": {"file_id": "file-abc123"}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("small52-data"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


@pytest.fixture(scope="module")
def openai_client(svc):
    import openai

    return openai.OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0, timeout=60)


@pytest.mark.parametrize(("part", "what"), [(IMAGE, "image"), (AUDIO, "audio"), (FILE, "file")])
def test_an_image_audio_or_file_part_of_a_user_message_is_said_unsupported_by_this_text_model(openai_client, part, what):
    """The openai client's vision (audio, file) input, as an app sends it: a 400 naming the part's `type`, saying this
    text model does not read it and that a `user` message's parts here are `text`. Before: "must be one of `text`,
    `refusal`; got 'image_url'", which names a part a user message may not hold and does not say images are unsupported."""
    import openai

    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in this?"}, part]}]
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model="pluralign", user="parts52", messages=messages, max_tokens=2)
    message = caught.value.message
    assert caught.value.param == "messages[0].content[1].type", message
    assert f"`{part['type']}`" in message and what in message and "not supported" in message and "text model" in message, message
    assert "a `user` message's parts are `text`" in message and "refusal" not in message, message
    assert caught.value.code == "unsupported_value", caught.value.body


@pytest.mark.parametrize(("role", "parts"), [("system", "`text`"), ("developer", "`text`"), ("assistant", "`text`, `refusal`"),
                                             ("tool", "`text`")])
def test_a_part_of_another_kind_lists_the_parts_its_messages_role_takes(svc, role, parts):
    """OpenAI's chat API: system and developer parts are text, assistant parts text or refusal, tool parts text; an
    image there (and a part of a kind OpenAI has not, `input_text` of its Responses API, in a user message) is told with
    what that role takes. Before, every role was told `text`, `refusal`."""
    message = {"role": role, "content": [IMAGE]}
    if role == "tool":
        message["tool_call_id"] = "call_1"
    with svc.client() as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "messages": [message, *CHAT["messages"]]})
        assert r.status_code == 400 and field_named(r) == "messages[0].content[0].type", r.text
        said = r.json()["error"]["message"]
        assert f"must be one of {parts}; got 'image_url'" in said and f"`{role}` message" in said, said
        unknown = {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
        r = c.post("/v1/chat/completions", json={**CHAT, "messages": [unknown]})
        assert r.status_code == 400 and field_named(r) == "messages[0].content[0].type", r.text
        assert "must be one of `text`; got 'input_text'" in r.json()["error"]["message"], r.text


def _other(r) -> None:
    """`r` is the 400 of a header naming `other` where the request names `routed52`."""
    assert r.status_code == 400 and field_named(r) == HEADER, (r.status_code, r.text)
    said = r.json()["error"]["message"]
    assert "'other52'" in said and "'routed52'" in said, said


def test_a_user_header_naming_another_user_than_the_request_is_a_400_naming_both(svc):
    """deploy/README.md: the load balancer hashes the API key and `X-Pluralign-User`, so a request whose header names
    another user than its path or body reaches that user's replica, not its own: its writes are not read by the user's
    next request there (read-your-writes), nor its reads of what the user's replica holds. Each route that reads a user
    refuses it, nothing done; the same header naming the request's user, or no header, is served. Before, every one of
    these requests was served (200/201)."""
    other = {HEADER: "other52"}
    comparison = {"type": "comparison", "user": "routed52", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
    with svc.client() as c:
        assert c.post("/v1/feedback", json=comparison, headers={HEADER: "routed52"}).status_code == 201
        answered = c.post("/v1/chat/completions", json={**CHAT, "user": "routed52"}, headers={HEADER: "routed52"})
        assert answered.status_code == 200, answered.text
        _other(c.post("/v1/chat/completions", json={**CHAT, "user": "routed52"}, headers=other))
        _other(c.post("/v1/chat/completions", json={**CHAT, "safety_identifier": "routed52", "user": "other52"}, headers=other))
        _other(c.post("/v1/feedback", json=comparison, headers=other))
        rating = {"type": "rating", "response_id": answered.json()["id"], "rating": 5}
        _other(c.post("/v1/feedback", json=rating, headers=other))  # the response's user
        _other(c.post("/v1/rewards/score", json={"user": "routed52", "prompt": "Hi?", "responses": ["Hello."]}, headers=other))
        for method, path, body in [("GET", "", None), ("GET", "/preferences", None), ("GET", "/export", None),
                                   ("GET", "/stated-preferences", None),
                                   ("PATCH", "/stated-preferences", {"preferences": {"length": "less"}}),
                                   ("POST", "/next-comparison", {}), ("DELETE", "", None)]:
            _other(c.request(method, f"/v1/users/routed52{path}", json=body, headers=other))
        line = json.dumps({"prompt": "Cats?", "chosen": "Yes.", "rejected": "No."}) + "\n"
        _other(c.post("/v1/users/routed52/import", content=line, headers={**other, "Content-Type": "application/x-ndjson"}))
        # nothing of those was done: one comparison and one chat of the user's, no rating, stated preference nor import
        profile = c.get("/v1/users/routed52", headers={HEADER: "routed52"})
        assert profile.status_code == 200, profile.text
        assert c.get("/v1/users/routed52/preferences").json()["total"] == 1
        assert c.get("/v1/users/routed52/stated-preferences").json().get("preferences") in ({}, None)
        r = c.get("/v1/users/routed52", headers=[(HEADER, "routed52"), (HEADER, "other52")])  # which one routed it?
        assert r.status_code == 400 and field_named(r) == HEADER and "2 `X-Pluralign-User` headers" in r.text, r.text
        # a chat naming no user reads and writes nothing of one: any header is served
        assert c.post("/v1/chat/completions", json=CHAT, headers=other).status_code == 200


@pytest.fixture
def heard(svc):
    """The `X-Pluralign-User` field lines of each request the service receives meanwhile, by path: the real app's
    connections, each new one handed to it through a wrapper that notes the header (uvicorn's protocols take
    `config.loaded_app` as each connection opens)."""
    config = svc.server.server.config
    app, seen = config.loaded_app, []

    async def noting(scope, receive, send):
        if scope["type"] == "http":
            seen.append((scope["path"], [v.decode() for k, v in scope["headers"] if k == HEADER.lower().encode()]))
        await app(scope, receive, send)

    config.loaded_app = noting
    yield seen
    config.loaded_app = app


def test_pluralign_data_import_sends_each_users_routing_header(svc, heard, tmp_path, capsys):
    """`pluralign data import --url` posts each user's rows to /v1/users/{user}/import: behind several replicas the load
    balancer routes them by `X-Pluralign-User` (deploy/README.md), which the command never sent, so every user's import
    reached the replica that an empty header hashes to, not theirs. Now each request names its user."""
    from tests.unit.clitools import cli, write_jsonl

    rows = [{"user_id": user, "prompt": f"Q{i} of {user}?", "chosen": "Yes.", "rejected": "No."} for user in ("imp52a", "imp52b")
            for i in range(2)]
    code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", write_jsonl(tmp_path / "rows.jsonl", rows),
                         "--url", svc.url, "--key", svc.keys["acme"])
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["stored"] == 4, (code, out, err)
    imports = [(path, lines) for path, lines in heard if path.endswith("/import")]
    assert imports == [("/v1/users/imp52a/import", ["imp52a"]), ("/v1/users/imp52b/import", ["imp52b"])], heard
