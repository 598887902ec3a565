"""Review of session small48: a chat whose remote generation server (`PLURALIGN_GENERATOR=openai:URL`) cannot be
reached, or fails, is a 503 telling the client to send it again, as one whose generation process ended is (session 46);
it was a 500 "internal error"."""

from __future__ import annotations

import json
import socket

from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.service.tiny import LiveServer, Service, minilm, tiny_pal_dir  # noqa: F401


def test_a_chat_whose_generation_server_is_down_is_a_503_to_send_again(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    config = Settings(data_dir=str(tmp_path / "data"), generator=f"openai:{url}", pal_dir=str(tiny_pal_dir), max_tokens=4)
    generator = RemoteGenerator(url, "m", policy=RemotePolicy(timeout_s=5, max_retries=0))
    runtime = Runtime.build(config, generator=generator, encoder=minilm)
    service = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
    body = {"model": "pluralign", "user": "rae", "max_tokens": 4, "messages": [{"role": "user", "content": "Plan my weekend"}]}
    with service.server, service.client("acme") as c:
        answer = c.post("/v1/chat/completions", json=body)
        assert answer.status_code == 503, answer.text  # before: 500 "internal error"
        error = answer.json()["error"]
        assert error["code"] == "unavailable" and "send it again" in error["message"], error
        assert url not in error["message"] and answer.headers["Retry-After"] == "10"  # the server's address stays in the log
        streamed = c.post("/v1/chat/completions", json={**body, "stream": True})
        if streamed.status_code == 200:  # its headers went before the generation failed: the stream's error event
            events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
            assert events[-1]["error"]["code"] == "unavailable", events
        else:
            assert streamed.status_code == 503, streamed.text
