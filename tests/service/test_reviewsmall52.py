"""Review of session small52: what its changes promised and did not keep. A remote generation server (or a proxy in its
place) answering JSON that is not a chat completion is `RemoteGeneratorError` (the chat's 503 to send again), whatever
part of the completion is missing or of another type, streamed or not; stub servers on loopback and the real openai
client (the remote generator's)."""

from __future__ import annotations

import pytest

from pluralign.policy.generator import RemoteGeneratorError
from tests.service.test_small52_remote_encoder import EmbeddingsStub

ANSWERS = {  # each a 200 that is JSON, but not a chat completion (`choices[i].message`, `.index`, `usage` as OpenAI's)
    "no message": b'{"choices": [{"index": 0, "finish_reason": "stop"}]}',
    "choices of numbers": b'{"choices": [1, 2]}',
    "content a number": b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": 5}}]}',
    "usage a number": b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}], "usage": 7}',
    "indexes missing": b'{"choices": [{"message": {"content": "a"}}, {"message": {"content": "b"}}]}',
}
STREAMS = {  # server-sent events whose chunks are not chat completion chunks
    "no delta": b'data: {"choices": [{"index": 0}]}\n\ndata: [DONE]\n\n',
    "choices of numbers": b'data: {"choices": [1]}\n\ndata: [DONE]\n\n',
}


class AnswerStub(EmbeddingsStub):
    """A loopback server answering every POST with 200 and `body` as `content_type`."""

    def __init__(self, body: bytes, content_type: str = "application/json"):
        self.body = body
        super().__init__(content_type=content_type)

    def answer(self, texts):
        with self.lock:
            self.calls.append(texts)
        return self.body, self.content_type


@pytest.fixture
def answering():
    servers: list[AnswerStub] = []

    def start(body: bytes, content_type: str = "application/json"):
        from pluralign.policy.remote import RemoteGenerator, RemotePolicy

        servers.append(AnswerStub(body, content_type))
        return RemoteGenerator(servers[-1].url, "m", policy=RemotePolicy(timeout_s=5, max_retries=0))

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_a_json_answer_that_is_not_a_chat_completion_is_the_generation_servers_failure(answering, answer):
    """Session small52 (e42106ac) promised RemoteGeneratorError for "an answer that is not a chat completion" but kept it
    for a page and for no `choices` only: a completion missing a choice's message, or holding a number where an object
    or a text goes, raised AttributeError or TypeError, which the chat answers as a 500 `internal error`, where the
    server's failure is the 503 to send again."""
    generator = answering(answer)
    with pytest.raises(RemoteGeneratorError, match=r"generation server at http://127\.0\.0\.1:\d+/v1 answered something that is not a chat completion"):
        generator.generate([{"role": "user", "content": "Hi"}], n=2)


@pytest.mark.parametrize("answer", STREAMS.values(), ids=STREAMS.keys())
def test_a_stream_whose_chunks_are_not_chat_completion_chunks_is_the_generation_servers_failure(answering, answer):
    """The same of a streamed answer: before, AttributeError ('NoneType' object has no attribute 'content'), the
    stream's error event a 500 `generation failed: AttributeError`."""
    generator = answering(answer, "text/event-stream")
    with pytest.raises(RemoteGeneratorError, match=r"generation server at http://127\.0\.0\.1:\d+/v1 .*not a chat completion chunk"):
        list(generator.stream([{"role": "user", "content": "Hi"}]))
