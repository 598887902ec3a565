"""Session small52: a remote server's proxy answering its page with a 200 where the server should be (or the server
failing) is the server's failure. The remote encoder says it as `RemoteEncoderError`, so the feedback worker retries it
with one call per try (no probes), and the remote generator as `RemoteGeneratorError`; a request either failed is the
503 to send again, not a 500. Stub servers on loopback count the calls; a real feedback log, real LanceDB folders, and
the real app over HTTP."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from pluralign.embed.remote import RemoteEncoder, RemoteEncoderError
from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import PROBE_TEXT, Ingestor
from tests.service.test_feedback_log import DIM, feedback
from tests.stores import wait_for

PROXY_PAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


class EmbeddingsStub(http.server.ThreadingHTTPServer):
    """`/v1/embeddings` on a loopback port: the inputs of every call in `calls` (of a call to another route, its path); the
    first `failing` calls answered 200 with `PROXY_PAGE` as `content_type` (a proxy's page where the server should be),
    the others with unit vectors of `dim` numbers."""

    def __init__(self, failing: int = 0, content_type: str = "application/json", dim: int = DIM):
        self.calls: list[list[str]] = []
        self.failing, self.content_type, self.dim = failing, content_type, dim
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()  # its stop: a poll away

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def answer(self, texts: list[str]) -> tuple[bytes, str]:
        with self.lock:
            self.calls.append(texts)
            failing = len(self.calls) <= self.failing
        if failing:
            return PROXY_PAGE, self.content_type
        data = [{"object": "embedding", "index": i, "embedding": [1.0] + [0.0] * (self.dim - 1)} for i in range(len(texts))]
        return json.dumps({"object": "list", "data": data, "model": "hash", "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode(), "application/json"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answer, content_type = self.server.answer(json.loads(body).get("input", [self.path]))  # a chat's: its path
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    servers: list[EmbeddingsStub] = []

    def start(**kwargs) -> EmbeddingsStub:
        servers.append(EmbeddingsStub(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("content_type", ["application/json", "text/html"])
def test_a_proxy_page_in_place_of_embeddings_is_the_servers_failure(stub, content_type):
    """Told as `RemoteEncoderError` naming the server, as the docstring promises of "something that is not an
    embeddings list". Before, a page labelled JSON raised JSONDecodeError (a ValueError, which the feedback worker
    takes for a text the encoder refuses) and one labelled HTML AttributeError ('str' object has no attribute 'data')."""
    server = stub(content_type=content_type)
    encoder = RemoteEncoder(server.url, "hash", max_retries=0)
    server.failing = len(server.calls) + 1
    with pytest.raises(RemoteEncoderError, match=r"embeddings server at http://127\.0\.0\.1:\d+/v1"):
        encoder.encode(["a question"])


def test_the_feedback_worker_makes_one_call_per_try_while_the_server_answers_a_proxy_page(stub, tmp_path, quick_retries):
    """The embeddings server behind a proxy is down for a while (the proxy's page, with a 200, for 4 calls), then back.
    Each try of the record is one call of its texts, and the record is stored once the server answers, nothing set
    aside. Before, each try was the call and two calls of `PROBE_TEXT` (the worker read the page's JSONDecodeError as a
    text refused, and probed the encoder twice to see whether it works): 3 calls per try, 12 for the 4 failing."""
    server = stub()
    encoder = RemoteEncoder(server.url, "hash", max_retries=0)  # its dimension probe: a call before the record's
    server.calls.clear()
    server.failing = 4
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), Store(str(tmp_path / "db"), "hash", DIM), encoder, tries=3)
    try:
        ingest.submit(feedback("ann", 0, tenant="t1"))
        wait_for(lambda: ingest.log.backlog() == (0, 0), timeout=30.0)
        assert ingest.store.count_preferences("t1", "ann") == 1 and ingest.set_aside == 0
    finally:
        ingest.close()
    texts = ["question 0 of ann", "good answer 0.0", "bad answer 0.0"]
    assert [c for c in server.calls if PROBE_TEXT in c] == []
    assert server.calls == [texts] * 5, server.calls  # 4 tries that met the page, the fifth stored


def test_a_chat_whose_embeddings_or_generation_server_answers_a_proxy_page_is_a_503_to_send_again(stub, tmp_path, tiny_pal_dir,
                                                                                                  minilm):
    """The service on a remote encoder and a remote generator (`PLURALIGN_ENCODER` and `PLURALIGN_GENERATOR` =
    `openai:URL`), each behind a proxy that answers its page with a 200 while the server is away. A chat of a user is
    the 503 with Retry-After that a generation server down is (test_reviewsmall48_remote_down), the servers' addresses in
    the log only, whether the embeddings server (its prompt embedded to find the user's history) or the generation
    server answers the page, labelled JSON or HTML; a stream and a score so too. Before, each was a 500 "internal error": the embeddings server's
    failure was never a 503 (nor is it when it is down), and the generation server's page left RemoteGenerator as a
    JSONDecodeError or an AttributeError ('str' object has no attribute 'choices')."""
    from pluralign.policy.remote import RemoteGenerator, RemotePolicy
    from service.app import create_app
    from service.runtime import Runtime
    from service.settings import Settings
    from tests.service.tiny import LiveServer, Service

    embeddings, generation = stub(dim=minilm.dim), stub(failing=10**6)  # the generation server: the page, every call
    config = Settings(data_dir=str(tmp_path / "data"), generator=f"openai:{generation.url}", encoder=f"openai:{embeddings.url}",
                      pal_dir=str(tiny_pal_dir), max_tokens=4)
    runtime = Runtime.build(config, generator=RemoteGenerator(generation.url, "m", policy=RemotePolicy(timeout_s=5, max_retries=0)),
                            encoder=RemoteEncoder(embeddings.url, minilm.encoder_id, max_retries=0))
    service = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
    body = {"model": "pluralign", "user": "rae", "max_tokens": 4, "messages": [{"role": "user", "content": "Plan my weekend"}],
            "pluralign": {"candidates": 1}}
    with service.server, service.client("acme") as c:
        said = []
        for failing, content_type in ((embeddings, "application/json"), (embeddings, "text/html"),
                                      (generation, "application/json"), (generation, "text/html")):
            failing.content_type = content_type
            embeddings.failing = 10**6 if failing is embeddings else 0
            answer = c.post("/v1/chat/completions", json=body)
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "10", (failing.url, content_type, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "unavailable" and "send it again" in error["message"], error
            assert embeddings.url not in error["message"] and generation.url not in error["message"], error
            said.append(error["message"].split(":")[0])
        embeddings.failing = 10**6  # a stream and a score: the same 503 (the stream's before its headers)
        for path, sent in (("/v1/chat/completions", {**body, "stream": True}),
                           ("/v1/rewards/score", {"user": "rae", "prompt": "Hi?", "responses": ["Hello.", "Hey."]})):
            answer = c.post(path, json=sent)
            assert answer.status_code == 503 and answer.json()["error"]["message"].startswith("embedding is unavailable"), answer.text
    assert said == ["embedding is unavailable for now"] * 2 + ["generation is unavailable for now"] * 2, said
