"""Task breakD62: a remote generation server answering a chat completion whose values are of another type than OpenAI's
(`finish_reason` a number, `usage` a number or its counts not whole numbers) is the server's failure,
RemoteGeneratorError (the chat's 503 to send again), as any other answer that is not a chat completion
(tests/service/test_reviewsmall52.py). Before, the `openai` client's unchecked values went through: a plain chat's 200
relayed `"finish_reason": 7` or `"completion_tokens": 3.0` to the client, and a stream's `usage` of 7 was an
AttributeError out of `RemoteGenerator.stream`. Stub servers on loopback; the service app over HTTP for the plain chat."""

from __future__ import annotations

import pytest

from pluralign.policy.generator import RemoteGeneratorError
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.service.test_reviewsmall52 import AnswerStub, answering  # noqa: F401
from tests.service.tiny import LiveServer, Service, minilm, tiny_pal_dir  # noqa: F401

CHOICE = '{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"}}'
USAGE = '{"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}'


def completion(choice: str, usage: str) -> str:
    return '{"choices": [' + choice + '], "usage": ' + usage + "}"


ANSWERS = {  # what a plain chat relayed with a 200
    "finish_reason a number": completion(CHOICE.replace('"stop"', "7"), USAGE),
    "completion_tokens a fraction": completion(CHOICE, USAGE.replace("2,", "2.5,")),
}
PIECE = 'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]}\n\n'
STREAMS = {
    "usage a number": PIECE + 'data: {"choices": [], "usage": 7}\n\ndata: [DONE]\n\n',  # before: AttributeError
    "usage without counts": PIECE + 'data: {"choices": [], "usage": {"prompt_tokens": null, "completion_tokens": null}}\n\n'
                            "data: [DONE]\n\n",  # before: a Candidate of `tokens` None
}
MESSAGES = [{"role": "user", "content": "Plan my weekend"}]


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_a_completion_with_values_of_another_type_is_a_503_to_send_again(tmp_path, tiny_pal_dir, minilm, answer):  # noqa: F811
    stub = AnswerStub(answer.encode())
    config = Settings(data_dir=str(tmp_path / "data"), generator=f"openai:{stub.url}", pal_dir=str(tiny_pal_dir), max_tokens=4)
    runtime = Runtime.build(config, generator=RemoteGenerator(stub.url, "m", policy=RemotePolicy(timeout_s=5, max_retries=0)), encoder=minilm)
    service = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
    try:
        with service.server, service.client("acme") as c:
            reply = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "rae", "max_tokens": 4, "messages": MESSAGES})
    finally:
        stub.shutdown()
        stub.server_close()
    assert reply.status_code == 503, reply.text  # before: 200, `"finish_reason": 7` / `"completion_tokens": 3.0` relayed
    assert reply.json()["error"]["code"] == "unavailable", reply.text


@pytest.mark.parametrize("answer", STREAMS.values(), ids=STREAMS.keys())
def test_a_stream_whose_usage_is_not_a_chat_completions_is_the_generation_servers_failure(answering, answer):  # noqa: F811
    generator, _ = answering(answer.encode(), "text/event-stream")
    with pytest.raises(RemoteGeneratorError, match=r"generation server at http://127\.0\.0\.1:\d+/v1 sent a usage that is not"):
        list(generator.stream(MESSAGES))


def test_a_prompt_count_that_is_not_a_whole_number_is_the_generation_servers_failure(answering):  # noqa: F811
    generator, _ = answering(completion(CHOICE, USAGE.replace("3", '"three"')).encode())
    with pytest.raises(RemoteGeneratorError, match=r"`usage\.prompt_tokens` is 'three', not a whole number"):
        generator.generate(MESSAGES)  # before: returned the count 'three'
