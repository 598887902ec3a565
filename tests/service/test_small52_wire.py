"""Session small52: defects a client of the real app over HTTP met. Image, audio and file parts in a chat's messages
are told as what this text model does not read, with the parts the message's role takes."""

from __future__ import annotations

import json

import pytest

from tests.service.tiny import field_named, start_service

CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "A weekend plan?"}], "max_tokens": 2,
        "pluralign": {"candidates": 1}}
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
