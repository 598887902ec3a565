"""Review of session small52: what its changes promised and did not keep. A remote generation server (or a proxy in its
place) answering JSON that is not a chat completion is `RemoteGeneratorError` (the chat's 503 to send again), whatever
part of the completion is missing or of another type, streamed or not; stub servers on loopback and the real openai
client (the remote generator's)."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time

import msgspec
import pytest

from pluralign.embed.remote import RemoteEncoder
from pluralign.policy.generator import RemoteGeneratorError
from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback_log import DIM, feedback
from tests.service.test_small52_remote_encoder import EmbeddingsStub
from tests.stores import wait_for

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
        return RemoteGenerator(servers[-1].url, "m", policy=RemotePolicy(timeout_s=5, max_retries=0)), servers[-1]

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
    generator, _ = answering(answer)
    with pytest.raises(RemoteGeneratorError, match=r"generation server at http://127\.0\.0\.1:\d+/v1 answered something that is not a chat completion"):
        generator.generate([{"role": "user", "content": "Hi"}], n=2)


@pytest.mark.parametrize("answer", STREAMS.values(), ids=STREAMS.keys())
def test_a_stream_whose_chunks_are_not_chat_completion_chunks_is_the_generation_servers_failure(answering, answer):
    """The same of a streamed answer: before, AttributeError ('NoneType' object has no attribute 'content'), the
    stream's error event a 500 `generation failed: AttributeError`."""
    generator, _ = answering(answer, "text/event-stream")
    with pytest.raises(RemoteGeneratorError, match=r"generation server at http://127\.0\.0\.1:\d+/v1 .*not a chat completion chunk"):
        list(generator.stream([{"role": "user", "content": "Hi"}]))



def test_a_page_in_place_of_the_tokenizers_count_leaves_later_prompts_counted(answering):
    """The generation server's `/tokenize` (vLLM's, which counts a chat's prompt so `max_prompt_tokens` and
    `max_prefill_tokens` bound it before it is sent) answered once by a proxy's page with a 200, then by the server
    again. That chat goes uncounted; the next is counted. Before, one page was taken for a server without vLLM's route:
    no prompt of the process was counted again until its restart, and neither bound held. A JSON answer without a
    count still is such a server (asked once)."""
    generator, server = answering(b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
    hi = [{"role": "user", "content": "Hi"}]
    assert generator.prompt_tokens(hi) == 0
    server.body, server.content_type = b'{"count": 7, "max_model_len": 2048, "tokens": [1, 2, 3, 4, 5, 6, 7]}', "application/json"
    assert generator.prompt_tokens(hi) == 7
    server.body = b'{"object": "error"}'
    assert [generator.prompt_tokens(hi) for _ in range(2)] == [0, 0]
    assert len(server.calls) == 3, server.calls  # the last asked once

class RefusingEmbeddings(http.server.ThreadingHTTPServer):
    """`/v1/embeddings` on a loopback port as Text Embeddings Inference answers without `--auto-truncate`: a request
    holding a text longer than `longest` characters is refused whole, 413 with TEI's validation error (no retry by the
    client: a 4xx); the others get unit vectors of `dim` numbers. `calls`: the inputs of each request. With
    `dribble_s` set, an answer's headers go at once and its body a byte every `dribble_s` seconds, for 4 s at most
    (session remote54)."""

    def __init__(self, longest: int = 200, dim: int = DIM):
        self.longest, self.dim, self.calls, self.dribble_s = longest, dim, [], 0.0
        super().__init__(("127.0.0.1", 0), _Refusing)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Refusing(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        texts = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))["input"]
        self.server.calls.append(texts)
        if any(len(t) > self.server.longest for t in texts):
            status, answer = 413, {"error": "Input validation error: `inputs` must have less than 512 tokens. Given: 700",
                                   "error_type": "Validation"}
        else:
            data = [{"object": "embedding", "index": i, "embedding": [1.0] + [0.0] * (self.server.dim - 1)} for i in range(len(texts))]
            status, answer = 200, {"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1}}
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self.server.dribble_s:
            return self.wfile.write(body)
        self.wfile.flush()
        began = time.monotonic()
        with contextlib.suppress(OSError):  # the client gave up on it
            for i in range(len(body)):
                if time.monotonic() - began > 4:
                    return
                time.sleep(self.server.dribble_s)
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()

    def log_message(self, *args):
        pass


def test_a_text_the_embeddings_server_refuses_is_set_aside_not_retried_for_ever(tmp_path, quick_retries):
    """A comparison whose answer is longer than the embeddings server takes (TEI without `--auto-truncate` answers 413
    for the whole request) beside another user's of the same tenant. The other is stored, and the record the server
    refuses, alone and twice, while it embeds the probe, is set aside as a dead letter (docs/admin.md): the server's
    refusal of the texts, as a local encoder's ValueError. Before, every 4xx of the server was `RemoteEncoderError`, the
    server's failure (session small52 made every fault of an answer so): the record stayed in the log, retried every few
    seconds for ever, and such records piled up to the tenant's backlog bound, where all its feedback is refused."""
    server = RefusingEmbeddings()
    encoder = RemoteEncoder(server.url, "m", max_retries=0)
    long = feedback("ann", 0, tenant="t1")
    long[0] = msgspec.structs.replace(long[0], chosen="a long answer " * 30)
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), Store(str(tmp_path / "db"), "m", DIM), encoder, tries=3)
    try:
        ingest.submit(long)
        ingest.submit(feedback("bob", 0, tenant="t1"))
        wait_for(lambda: ingest.log.backlog() == (0, 0), timeout=15.0)
        assert ingest.store.count_preferences("t1", "bob") == 1 and ingest.store.count_preferences("t1", "ann") == 0
        assert ingest.set_aside == 1 and ingest.dead_letters.rows_for("t1", "ann") == 1, ingest.dead_letters.names()
    finally:
        ingest.close()
        server.shutdown()
        server.server_close()
