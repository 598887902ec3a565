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


@pytest.fixture(scope="module")
def remote(tmp_path_factory, tiny_pal_dir, minilm):  # noqa: F811
    """(a client of tenant acme, the generation stub, the embeddings stub) of one app on a remote generator and a remote
    encoder, both stubs on loopback: the generation server answers `body` to every request (`/tokenize` too: a
    server without it), the embeddings server unit vectors of MiniLM's size unless told NaN."""
    generation, embeddings = AnswerStub(b""), NaNEmbeddings(dim=minilm.dim)
    config = Settings(data_dir=str(tmp_path_factory.mktemp("data")), generator=f"openai:{generation.url}",
                      encoder=f"openai:{embeddings.url}", pal_dir=str(tiny_pal_dir), max_tokens=4)
    runtime = Runtime.build(config, generator=RemoteGenerator(generation.url, "m", policy=RemotePolicy(timeout_s=5, max_retries=0)),
                            encoder=RemoteEncoder(embeddings.url, minilm.encoder_id, max_retries=0))
    service = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
    try:
        with service.server, service.client("acme") as c:
            yield c, generation, embeddings
    finally:
        for server in (generation, embeddings):
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_a_completion_with_values_of_another_type_is_a_503_to_send_again(remote, answer):
    c, generation, _ = remote
    generation.body = answer.encode()
    reply = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "rae", "max_tokens": 4, "messages": MESSAGES})
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
    again, sets nothing aside, and stores it once the server answers as before. That check had no test (no test named its error);
    without it the store's refusal of the vectors is retried as well, so the encoder's own error is
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


def test_a_chat_and_a_score_whose_embeddings_server_answers_nan_are_a_503_to_send_again(remote):
    """An embeddings server answering NaN vectors (JSON's `NaN`, which the client reads), after its dimension probe: a chat
    and a score are the 503 of the server's failure (`VectorsNotFinite`, a RemoteEncoderError). Before, each was a 500
    `internal error`: the chat's a StoreError (`vector` is not finite), the score's the cache's ValueError."""
    c, generation, embeddings = remote
    generation.body = completion(CHOICE, USAGE).encode()
    embeddings.nan = True
    try:
        answers = [c.post("/v1/chat/completions", json={"model": "pluralign", "user": "sam", "max_tokens": 4, "messages": MESSAGES}),
                   c.post("/v1/rewards/score", json={"user": "sam", "prompt": "Hi?", "responses": ["Hello.", "Hey."]})]
    finally:
        embeddings.nan = False
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
        ingest = Ingestor(FeedbackLog(tmp_path / "log"), Store(str(tmp_path / "db"), "hash", DIM), encoder)  # tries: the default
        try:
            ingest.submit(feedback("ann", 0, tenant="t1"))
            ingest.submit(feedback("bob", 1, tenant="t1"))
            wait_for(lambda: ingest.log.backlog() == (0, 0), timeout=30.0)
            assert (ingest.store.count_preferences("t1", "ann"), ingest.store.count_preferences("t1", "bob"), ingest.set_aside) == (1, 0, 1)
            # (review breakD62) as deploy/README.md says: after 3 tries, each finding the text failing twice alone
            letter = ingest.dead_letters.read(*ingest.dead_letters.names())
            assert (letter.tries, letter.rows[0].user_id) == (3, "bob") and "twice alone (VectorsNotFinite" in letter.error, letter
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


class Reindexed(EmbeddingsStub):
    """`EmbeddingsStub` whose answer, once `indexes` is set, holds one vector per index there (each its index's unit
    vector), whatever the texts."""

    indexes: list[int] | None = None

    def answer(self, texts):
        if self.indexes is None:
            return super().answer(texts)
        with self.lock:
            self.calls.append(texts)
        data = [{"object": "embedding", "index": i, "embedding": [float(j == i % self.dim) for j in range(self.dim)]} for i in self.indexes]
        return json.dumps({"object": "list", "data": data, "model": "hash"}).encode(), "application/json"


@pytest.mark.parametrize(("indexes", "said"), [([0], "returned 1 vectors for 2 texts"), ([0, 1, 2], "returned 3 vectors for 2 texts"),
                                               ([0, 0], r"indexes \[0, 0\] for 2 texts"), ([1, 2], r"indexes \[1, 2\] for 2 texts")])
def test_an_embeddings_answer_whose_vectors_do_not_name_each_text_once_is_the_servers_failure(indexes, said):
    """Each vector of the answer names its text by `index`. An answer of another count, or whose indexes repeat one or
    miss one (a proxy merging batches), is the server's failure (RemoteEncoderError): before, indexes [0, 0] or [1, 2]
    for two texts were taken in the order they came, a text stored with a vector of another's (the count check had
    no test)."""
    server = Reindexed()
    try:
        encoder = RemoteEncoder(server.url, "hash", max_retries=0)
        server.indexes = indexes
        with pytest.raises(RemoteEncoderError, match=said):
            encoder.encode(["a question", "an answer"])
        server.indexes = [1, 0]  # the answer's order is not the texts': each vector goes to its index
        assert encoder.encode(["a question", "an answer"]).argmax(axis=1).tolist() == [0, 1]
    finally:
        server.shutdown()
        server.server_close()


def choices(indexes: list[int], content: str = '"answer"') -> str:
    """A chat completion of one choice per index of `indexes`, each of `content` (JSON)."""
    return completion(", ".join(CHOICE.replace('"index": 0', f'"index": {i}').replace('"Hi"', content) for i in indexes), USAGE)


@pytest.mark.parametrize(("indexes", "status"), [([0], 503), ([0, 1, 2], 503), ([0, 0], 503), ([1, 2], 503), ([1, 0], 200)],
                         ids=["one of two", "three of two", "0 twice", "1 and 2", "both, in another order"])
def test_a_completion_of_other_choices_than_asked_for_is_a_503_to_send_again(remote, indexes, status):
    """review breakD62: a chat of `n` 2 (2 candidates: the server is asked `n` 2) whose server answers another number of
    choices, or choices whose `index` values are not 0 and 1 (one repeated, one missing), is the server's failure: the
    503 to send again, as an embeddings answer whose vectors do not name each text once. Before, a 200: one choice for
    `n` 2 (a client reading `choices[1]` failed), or three reranked and their completion tokens shared by three."""
    c, generation, _ = remote
    generation.body = choices(indexes).encode()
    reply = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "rae", "n": 2, "max_tokens": 4, "messages": MESSAGES,
                                                 "pluralign": {"candidates": 2}})
    assert reply.status_code == status, reply.text
    if status == 503:
        assert reply.json()["error"]["code"] == "unavailable", reply.text
    else:
        assert reply.json()["pluralign"]["candidates"] == 2 and len(reply.json()["choices"]) == 2, reply.text


@pytest.mark.parametrize("content", ["0", "[]"])
def test_a_choice_whose_content_is_not_a_text_is_the_generation_servers_failure(answering, content):  # noqa: F811
    """review breakD62: a choice's `content` that is neither a text nor null is the server's failure, also where it is a
    falsy value (0, an empty list). Before, `content or ""` served those as an empty answer (a 200)."""
    generator, server = answering(choices([0], content).encode())
    with pytest.raises(RemoteGeneratorError, match=r"not a chat completion \(ValueError: `content` is"):
        generator.generate(MESSAGES)
    server.body = (PIECE.replace('"Hi"', content) + f"data: {{\"choices\": [], \"usage\": {USAGE}}}\n\ndata: [DONE]\n\n").encode()
    server.content_type = "text/event-stream"
    with pytest.raises(RemoteGeneratorError, match=r"not a chat completion chunk \(ValueError: `content` is"):
        list(generator.stream(MESSAGES))


def test_a_stream_holding_a_second_choice_is_the_generation_servers_failure(answering):  # noqa: F811
    """review breakD62: a stream (one choice asked for) whose chunks hold a choice of `index` 1 is the server's failure.
    Before, its pieces were taken as the one answer's: "Hi" and "Ho" served as "HiHo"."""
    second = PIECE.replace('"index": 0', '"index": 1').replace('"Hi"', '"Ho"')
    generator, _ = answering((PIECE + second + f"data: {{\"choices\": [], \"usage\": {USAGE}}}\n\ndata: [DONE]\n\n").encode(),
                             "text/event-stream")
    with pytest.raises(RemoteGeneratorError, match=r"not a chat completion chunk \(ValueError: a choice of `index` 1"):
        list(generator.stream(MESSAGES))
