"""Task breakD62: a remote generation server answering a chat completion whose values are of another type than OpenAI's
(`finish_reason` a number, `usage` a number or its counts not whole numbers) is the server's failure,
RemoteGeneratorError (the chat's 503 to send again), as any other answer that is not a chat completion
(tests/service/test_reviewsmall52.py). Before, the `openai` client's unchecked values went through: a plain chat's 200
relayed `"finish_reason": 7` or `"completion_tokens": 3.0` to the client, and a stream's `usage` of 7 was an
AttributeError out of `RemoteGenerator.stream`. Stub servers on loopback; the service app over HTTP for the plain chat."""

from __future__ import annotations

import json

import pytest

from pluralign.embed.remote import RemoteEncoder, RemoteEncoderError
from pluralign.policy.generator import RemoteGeneratorError
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.service.test_feedback_log import DIM, feedback
from tests.service.test_reviewsmall52 import AnswerStub, answering  # noqa: F401
from tests.service.test_small52_remote_encoder import EmbeddingsStub, stub  # noqa: F401
from tests.service.tiny import LiveServer, Service, minilm, tiny_pal_dir  # noqa: F401
from tests.stores import wait_for

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
    server = AnswerStub(answer.encode())
    config = Settings(data_dir=str(tmp_path / "data"), generator=f"openai:{server.url}", pal_dir=str(tiny_pal_dir), max_tokens=4)
    runtime = Runtime.build(config, generator=RemoteGenerator(server.url, "m", policy=RemotePolicy(timeout_s=5, max_retries=0)), encoder=minilm)
    service = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
    try:
        with service.server, service.client("acme") as c:
            reply = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "rae", "max_tokens": 4, "messages": MESSAGES})
    finally:
        server.shutdown()
        server.server_close()
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


def test_an_embeddings_server_answering_another_vector_size_than_at_start_sets_nothing_aside(stub, tmp_path, quick_retries):  # noqa: F811
    """The embeddings server behind the URL is replaced by one of another model (another vector size) after the service
    started, for 3 calls, then put back. `RemoteEncoder` learned its size at its construction, and vectors of another are
    the server's failure (RemoteEncoderError, naming the shape), not the texts': the feedback worker tries the record
    again, sets nothing aside, and stores it once the server answers as before. That check had no test (removed, every
    test passed); without it the store's refusal of the vectors is retried as well, so the encoder's own error is
    asserted at the end."""
    server = stub()
    encoder = RemoteEncoder(server.url, "hash", max_retries=0)
    server.calls.clear()
    server.dim = DIM + 1
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), Store(str(tmp_path / "db"), "hash", DIM), encoder, tries=3)
    try:
        ingest.submit(feedback("ann", 0, tenant="t1"))
        wait_for(lambda: len(server.calls) >= 3, timeout=30.0)
        server.dim = DIM
        wait_for(lambda: ingest.log.backlog() == (0, 0), timeout=30.0)
        assert ingest.store.count_preferences("t1", "ann") == 1 and ingest.set_aside == 0
    finally:
        ingest.close()
    with pytest.raises(RemoteEncoderError, match=r"returned vectors of shape \(1, 9\)"):
        server.dim = DIM + 1
        encoder.encode(["a question"])


class NaNEmbeddings(EmbeddingsStub):
    """`EmbeddingsStub` whose vectors are NaN (JSON's `NaN`, which Python's json reads): all of them while `nan` is set,
    else those of `nan_texts`."""

    nan = False
    nan_texts: frozenset[str] = frozenset()

    def answer(self, texts):
        if not self.nan and not self.nan_texts.intersection(texts):
            return super().answer(texts)
        with self.lock:
            self.calls.append(texts)
        data = [{"object": "embedding", "index": i, "embedding": [float("nan") if self.nan or t in self.nan_texts else 1.0] * self.dim}
                for i, t in enumerate(texts)]
        return json.dumps({"object": "list", "data": data, "model": "hash"}).encode(), "application/json"


def test_a_chat_and_a_score_whose_embeddings_server_answers_nan_are_a_503_to_send_again(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """An embeddings server answering NaN vectors (JSON's `NaN`, which the client reads), after its dimension probe: a chat
    and a score are the 503 of the server's failure (`VectorsNotFinite`, a RemoteEncoderError). Before, each was a 500
    `internal error`: the chat's a StoreError (`vector` is not finite), the score's the cache's ValueError."""
    embeddings = NaNEmbeddings(dim=minilm.dim)
    config = Settings(data_dir=str(tmp_path / "data"), encoder=f"openai:{embeddings.url}", pal_dir=str(tiny_pal_dir), max_tokens=4)
    runtime = Runtime.build(config, generator=None, encoder=RemoteEncoder(embeddings.url, minilm.encoder_id, max_retries=0))
    service = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
    embeddings.nan = True
    try:
        with service.server, service.client("acme") as c:
            answers = [c.post("/v1/chat/completions", json={"model": "pluralign", "user": "rae", "max_tokens": 4,
                                                             "messages": [{"role": "user", "content": "Plan my weekend"}]}),
                       c.post("/v1/rewards/score", json={"user": "rae", "prompt": "Hi?", "responses": ["Hello.", "Hey."]})]
    finally:
        embeddings.shutdown()
        embeddings.server_close()
    for answer in answers:
        assert answer.status_code == 503 and answer.json()["error"]["message"].startswith("embedding is unavailable"), answer.text


def test_the_feedback_worker_sets_aside_a_record_the_embeddings_server_answers_nan_for_and_waits_out_a_server_nan_for_all(
        tmp_path, quick_retries):
    """The remote encoder's NaN is a ValueError too (`VectorsNotFinite`), as a local encoder's vector not finite is found
    by the feedback worker: a record holding a text the server answers NaN for (its probe finite) is set aside, the
    others stored; while the server answers NaN for every text, the probe's too, nothing is set aside and the record is
    stored once it answers again. Before (the NaN vectors returned), a server that answered NaN for every text and came
    back between the record's embedding and the worker's probe had the good record set aside as its texts' fault (the
    store refused its vectors, the probe passed): `count_preferences('t1', 'cy')` 0, 3 runs of 3."""
    server = NaNEmbeddings()
    try:
        encoder = RemoteEncoder(server.url, "hash", max_retries=0)
        server.nan_texts = frozenset({"good answer 1.0"})
        ingest = Ingestor(FeedbackLog(tmp_path / "log"), Store(str(tmp_path / "db"), "hash", DIM), encoder, tries=3)
        try:
            ingest.submit(feedback("ann", 0, tenant="t1"))
            ingest.submit(feedback("bob", 1, tenant="t1"))
            wait_for(lambda: ingest.log.backlog() == (0, 0), timeout=30.0)
            assert (ingest.store.count_preferences("t1", "ann"), ingest.store.count_preferences("t1", "bob"), ingest.set_aside) == (1, 0, 1)
            server.nan, calls = True, len(server.calls)
            ingest.submit(feedback("cy", 2, tenant="t1"))
            wait_for(lambda: len(server.calls) >= calls + 3, timeout=30.0)  # tries met every vector NaN
            server.nan = False
            wait_for(lambda: ingest.log.backlog() == (0, 0), timeout=30.0)
            assert ingest.store.count_preferences("t1", "cy") == 1 and ingest.set_aside == 1
        finally:
            ingest.close()
    finally:
        server.shutdown()
        server.server_close()
