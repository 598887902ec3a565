"""A remote generator's prompt counts (vLLM's `POST /tokenize`) and their bound, through the real app over HTTP on a
stub OpenAI-compatible server (`tests.vllm_like`'s answers, served in this process, its `/tokenize` made slow or
failing at will), configured as an operator does (`PLURALIGN_GENERATOR=openai:URL`, `generator_timeout_s` 1: session
remote52)."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import openai
import pytest

from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.service.tiny import LiveServer, Service, minilm, tiny_pal_dir  # noqa: F401
from tests.stub_openai import served
from tests.vllm_like import BASE, Handler, tokens

BUDGET = 300  # max_prompt_tokens: the client's messages fit, with all four shots they do not (a token: 4 characters)


class Tokenizing(Handler):
    """`tests.vllm_like`'s server whose `/tokenize` waits `delay_s` before it answers, and answers `failing` (a 5xx) when
    set, or sends its answer's body a byte every `dribble_s` seconds when set (its headers at once), or with `garbled` set
answers that status with a body labelled gzip that is not (a broken proxy's); with `chat_dribble_s` set, its chat
completions go so too, a byte every `chat_dribble_s` seconds (session remote54); it counts the `/tokenize` requests
    it got (`asked`), those it failed (`failed`) and the most it held at once (`most_at_once`), and keeps their
    `X-Request-Id` (`ids`)."""

    adapters: dict[str, str] = {}
    weights: dict[str, str] = {}
    delay_s = 0.0
    failing = 0
    dribble_s = 0.0
    garbled = 0
    chat_dribble_s = 0.0
    asked = 0
    failed = 0
    at_once = 0
    most_at_once = 0
    ids: list[str | None] = []
    counting = threading.Lock()  # the counts of one chat come at once (`PromptCounter.each`): no increment lost

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        if self.path != "/tokenize":
            return super().do_POST()
        body = self.read_json()
        kind = type(self)
        with kind.counting:
            kind.asked += 1
            kind.at_once += 1
            kind.most_at_once = max(kind.most_at_once, kind.at_once)
            kind.ids.append(self.headers.get("x-request-id"))
        try:
            self.count(kind, body)
        finally:
            with kind.counting:
                kind.at_once -= 1

    def answer(self, status: int, body) -> None:
        if self.path == "/v1/chat/completions" and status == 200 and type(self).chat_dribble_s:
            self.status = status
            with contextlib.suppress(ConnectionError):  # the client gave up on it
                return self.dribble(body, type(self).chat_dribble_s, "chat_dribble_s")
        return super().answer(status, body)

    def count(self, kind: type[Tokenizing], body: dict) -> None:
        time.sleep(kind.delay_s)
        if kind.garbled:
            return self.garble(kind.garbled)
        if kind.failing:
            with kind.counting:
                kind.failed += 1
            return self.error(kind.failing, "InternalServerError", "the tokenizer failed")
        count = tokens("".join(m["content"] for m in body["messages"]))
        with contextlib.suppress(ConnectionError):  # a count the client stopped waiting for
            if kind.dribble_s:
                return self.dribble({"count": count}, kind.dribble_s)
            self.answer(200, {"count": count, "max_model_len": 512, "tokens": list(range(count))})

    def garble(self, status: int) -> None:
        payload = b'{"count": 5} is not gzip'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def dribble(self, body: dict, every_s: float, knob: str = "dribble_s") -> None:
        """`body` as the JSON answer, its headers at once, then a byte every `every_s` seconds (each read of the client's
        gets one well within any read timeout), while the class's `knob` is set."""
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.flush()
        for i in range(len(payload)):
            time.sleep(every_s)
            if not getattr(type(self), knob):  # the test is over (its client gave up on this answer long ago)
                return
            self.wfile.write(payload[i : i + 1])
            self.wfile.flush()


@pytest.fixture(scope="module")
def front(tmp_path_factory, tiny_pal_dir, minilm):  # noqa: F811
    """The real app with `generator=openai:URL` on a `Tokenizing` server, `generator_timeout_s` 1, no retries, a stream
    given up after 1 s without a piece of it (`generator_stream_idle_s`)."""
    with served(Tokenizing) as root:
        config = Settings(data_dir=str(tmp_path_factory.mktemp("remote52")), generator=f"openai:{root}/v1", generator_model=BASE,
                          generator_timeout_s=1, generator_retries=0, generator_stream_idle_s=1, pal_dir=str(tiny_pal_dir),
                          max_tokens=4, rerank=False, candidates=1, max_prompt_tokens=BUDGET)
        runtime = Runtime.build(config, encoder=minilm)
        service = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
        with service.server:
            yield service


@pytest.fixture
def tokenizer():
    """`Tokenizing`, its counts from 0, its knobs put back after the test."""
    Tokenizing.asked = Tokenizing.failed = Tokenizing.most_at_once = 0
    Tokenizing.ids = []
    yield Tokenizing
    Tokenizing.delay_s, Tokenizing.failing, Tokenizing.dribble_s, Tokenizing.garbled = 0.0, 0, 0.0, 0
    Tokenizing.chat_dribble_s = Tokenizing.slow_stream = Tokenizing.stall_s = 0.0
    Tokenizing.stall_after = None
    until = time.monotonic() + 5
    while Tokenizing.at_once and time.monotonic() < until:  # counts given up on, still held by the stub: ended first
        time.sleep(0.01)


CHAT = {"model": "pluralign", "max_tokens": 4, "messages": [{"role": "user", "content": "Plan my weekend, please"}]}


def test_a_count_in_a_real_servers_round_trip_is_given_at_a_one_second_generator_timeout(front, tokenizer):
    """At `generator_timeout_s` 1 a count had a tenth of it, 0.1 s: less than a real server's round trip under load (here
    0.3 s), so every chat was a 503 "did not count the prompt's tokens" while the server answered each count. Now a count
    has at least 1 s (`RemotePolicy.tokenize_timeout_s`: a tenth of the timeout, at least 1 s, at most 5 s)."""
    tokenizer.delay_s = 0.3
    with front.client("acme") as c:
        got = c.post("/v1/chat/completions", json=CHAT)
    assert got.status_code == 200, got.text  # before: 503 "... (its /tokenize: no answer within 0.1 s) ..."
    assert got.json()["usage"]["prompt_tokens"] == tokens(CHAT["messages"][0]["content"])


def shots_of(c, user: str, shots: int = 4) -> None:
    """`shots` comparisons of `user`'s, each a shot of ~160 tokens (4 characters a token): two fit `BUDGET`, three do not."""
    answer = "This answer goes on about the topic at some length. " * 4
    for i in range(shots):
        r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Question {i} about weekends",
                                         "chosen": "Yes. " + answer, "rejected": "No. " + answer})
        assert r.status_code == 201, r.text


def test_a_slow_tokenizer_holds_a_chat_whose_shots_are_dropped_no_longer_than_the_bound(front, tokenizer):
    """A chat whose retrieved shots do not fit `max_prompt_tokens` is counted again and again: its prompt, its messages
    alone, then once for each shot left out. Each count had the whole bound (1 s here, 5 s by default), so a `/tokenize`
    answering in 0.6 s held the chat here ~2.4 s (4 counts: two shots of four left out) and it was sent; up to (shots + 2) x 5 s by default. Now the bound
    holds for the chat's counts together: the chat is the 503 naming `/tokenize` once 1 s has passed. With the server
    answering at once, the shots are still left out, farthest first, until the prompt fits."""
    with front.client("acme") as c:
        shots_of(c, "sam")
        chat = {**CHAT, "user": "sam", "pluralign": {"shots": 4}}
        fits = c.post("/v1/chat/completions", json=chat)
        assert fits.status_code == 200 and 0 < len(fits.json()["pluralign"]["history"]) < 4, fits.text
        assert fits.json()["usage"]["prompt_tokens"] <= BUDGET
        tokenizer.delay_s, asked = 0.6, tokenizer.asked
        began = time.monotonic()
        slow = c.post("/v1/chat/completions", json=chat)
        took = time.monotonic() - began
    assert slow.status_code == 503, slow.text  # before: 200 after ~3 s
    assert "(its /tokenize: no answer within 1 s)" in slow.json()["error"]["message"], slow.text
    # before: 4 counts, ~2.4 s; the prompt's count, then (review remote52) those keeping 0 to 3 shots asked at once (a
    # request given up on may not have reached the stub's handler yet)
    assert took < 2.2 and 1 <= tokenizer.asked - asked <= 5, (took, tokenizer.asked - asked)


@contextlib.contextmanager
def first_generation_held_at_its_end(rt):
    """The first generation of the service whose Runtime is `rt` to end meanwhile (a stream's: its last piece and its
    usage read from the server) held there, as a busy machine's scheduler may hold the thread, until the test sets
    `proceed` (after 30 s at the latest). Yields (ended, proceed): `ended` is set once it is held. After: proceed set,
    the generator's own `generation` back."""
    use = rt.generator._use
    generation, ended, proceed, first = use.generation, threading.Event(), threading.Event(), threading.Lock()

    @contextlib.contextmanager
    def held(name):
        with generation(name):
            yield
        if first.acquire(blocking=False):
            ended.set()
            proceed.wait(30)

    use.generation = held
    try:
        yield ended, proceed
    finally:
        proceed.set()
        del use.generation


def events_of(answer) -> list[dict]:
    return [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: {")]


def test_a_streams_usage_is_the_servers_own_never_a_count_asked_after_the_answer_streamed(front, tokenizer):
    """A stream's usage was counted after the whole answer streamed: the remote generator kept the server's count from
    the stream's last event for the service to ask next, keyed by the conversation, and a chat of the same conversation
    planned meanwhile took it. The stream's count was then asked of `/tokenize`, after its client had read the answer:
    a `/tokenize` failing (or slow) then made it an error event after the whole answer (nothing stored). Now the stream's
    usage is the server's `usage` of that stream, handed over with its answer: no count is asked once it began."""
    rt = front.runtime
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    streamed: list = []
    with first_generation_held_at_its_end(rt) as (ended, proceed), front.client("acme") as c:
        stream = threading.Thread(target=lambda: streamed.append(c.post("/v1/chat/completions", json=body)), daemon=True)
        stream.start()
        assert ended.wait(30), "the stream never ended"
        same = c.post("/v1/chat/completions", json=CHAT)  # the same conversation, planned (counted) meanwhile
        assert same.status_code == 200, same.text
        tokenizer.failing = 503
        proceed.set()
        stream.join(30)
    events = events_of(streamed[0])
    assert streamed[0].status_code == 200 and all("error" not in e for e in events), events  # before: an error event last
    assert "".join(ch["delta"].get("content") or "" for e in events for ch in e["choices"]) == "answered by base"
    assert events[-1]["usage"]["prompt_tokens"] == tokens(CHAT["messages"][0]["content"]), events[-1]
    assert tokenizer.failed == 0  # nothing asked of /tokenize after the stream began


def test_a_chat_whose_shots_are_left_out_is_served_by_a_server_answering_each_count_in_a_round_trip(front, tokenizer):
    """Review remote52: with one bound for all of a chat's counts, the counts were asked one after another (the prompt,
    the messages alone, the prompt again for each shot left out), so a server answering each in 0.3 s (the round
    trip the 1 s floor is for) made a chat leaving 2 of 4 shots out (4 counts) a 503 "send it again", at every try, while it
    answered every count. Now the counts of the prompts it could send are asked a few at once (`TOKENIZE_AT_ONCE`, 4: the
    prompt's, then one round of 4 for these 4 shots, two round trips in all; a round more for up to 24 shots, session
    remote53's search); the same shots are kept as before (the most that fit, nearest first), and each count carries the
    chat's `X-Request-Id` (docs/operations.md: the server's log names the request it served)."""
    with front.client("acme") as c:
        shots_of(c, "kim")
        tokenizer.delay_s, asked, tokenizer.ids = 0.3, tokenizer.asked, []
        chat = {**CHAT, "user": "kim", "pluralign": {"shots": 4}}
        got = c.post("/v1/chat/completions", json=chat)
    assert got.status_code == 200, got.text  # before: 503 "... (its /tokenize: no answer within 1 s) ..."
    assert len(got.json()["pluralign"]["history"]) == 2 and got.json()["usage"]["prompt_tokens"] <= BUDGET, got.text
    assert tokenizer.asked - asked == 5  # the prompt, then with 0, 1, 2 and 3 of its shots, at once
    assert tokenizer.ids == [got.headers["x-request-id"]] * 5, tokenizer.ids


def test_a_tokenizer_dribbling_its_answer_holds_a_chat_no_longer_than_the_bound(front, tokenizer):
    """Session remote53: httpx's timeouts bound each read of an answer, not the whole of it, so a `/tokenize` sending its
    answer a byte every 0.3 s (each read well within the bound) held the chat until its last byte (~4 s for
    `{"count": 5}`), then sent it. Now the bound holds for the whole of a chat's counts (the chat waits for its counts'
    threads until its deadline, no longer; session counts53, where remote53 had `asyncio.timeout_at`): the chat is the
    503 naming `/tokenize` once 1 s has passed."""
    tokenizer.dribble_s = 0.3
    began = time.monotonic()
    with front.client("acme") as c:
        got = c.post("/v1/chat/completions", json=CHAT)
    took = time.monotonic() - began
    assert got.status_code == 503, got.text  # before: 200 after ~4 s
    assert "(its /tokenize: no answer within 1 s)" in got.json()["error"]["message"], got.text
    assert took < 2.0, took
    # the count given up on is not read to its last byte (~4.2 s) on its thread either: closed at its first piece past the
    # deadline (session counts53; the stub sees it closed at its next write or two, 0.3 s apart)
    while tokenizer.at_once and time.monotonic() - began < 3.5:
        time.sleep(0.02)
    assert tokenizer.at_once == 0, round(time.monotonic() - began, 2)


@pytest.mark.parametrize("status", [200, 500])
def test_a_tokenizer_answering_a_body_that_does_not_decode_is_a_503_not_a_500(front, tokenizer, status):
    """Review counts53: a count's body read a piece at a time (`RemoteGenerator._body_by`, and the client's own read of a
    5xx's body) raised httpx's DecodingError for a body labelled gzip that is not (a broken proxy's), which no `except`
    took: the chat's 500 `internal error`. Before session counts53 the client's read of it was its connection error, the
    chat's 503 naming `/tokenize` (PromptNotCounted, "unreachable"), as now (since session remote54 the count's body is
    read by httpx's own client, `_body_by` gone: its DecodingError is a RequestError, "unreachable")."""
    tokenizer.garbled = status
    with front.client("acme") as c:
        got = c.post("/v1/chat/completions", json=CHAT)
    assert got.status_code == 503, got.text  # before: 500
    assert "(its /tokenize: unreachable)" in got.json()["error"]["message"], got.text
    assert tokenizer.asked == 1


def test_a_chat_whose_many_shots_are_left_out_asks_a_few_counts_at_once(front, tokenizer):
    """Session remote53: a chat whose retrieved shots did not fit asked the server for the count of every prompt it could
    send at once (one per number of shots kept: 8 requests at once for 8 shots, 16 for 16), a burst on the generation
    server's API process for each such chat. Now at most `TOKENIZE_AT_ONCE` (4) at once, and the number kept is found
    by a search over those counts (4 at a time): the same shots are kept, the most that fit, nearest first."""
    with front.client("acme") as c:
        shots_of(c, "lee", 8)
        tokenizer.delay_s, asked = 0.05, tokenizer.asked
        chat = {**CHAT, "user": "lee", "pluralign": {"shots": 8}}
        got = c.post("/v1/chat/completions", json=chat)
    assert got.status_code == 200, got.text
    assert len(got.json()["pluralign"]["history"]) == 2 and got.json()["usage"]["prompt_tokens"] <= BUDGET, got.text
    assert tokenizer.most_at_once <= 4, tokenizer.most_at_once  # before: 8 (those keeping 0 to 7 shots)
    assert tokenizer.asked - asked <= 6, tokenizer.asked - asked  # the prompt, 4 kept counts at once, then 1


def test_a_generation_server_dribbling_its_answer_is_a_503_at_the_timeout_and_the_tenants_place_is_given_back(front, tokenizer):
    """Session remote54: a chat completion was bounded per read only (`generator_timeout_s` a read), so a server sending
    its answer a byte every 20 ms held the chat, and its tenant's place on the scheduler, until the last byte (~6 s
    here), then served it. Now `generator_timeout_s` bounds each try whole: the chat is the 503 naming the generation
    server and the bound at 1 s, its tenant's place free, and its next chat served."""
    tokenizer.chat_dribble_s = 0.02
    with front.client("acme") as c:
        began = time.monotonic()
        got = c.post("/v1/chat/completions", json=CHAT)
        took = time.monotonic() - began
        assert got.status_code == 503, got.text  # before: 200 after ~6 s
        assert got.headers["retry-after"] == "10"
        assert ("the generation server (PLURALIGN_GENERATOR) did not send its whole answer within 1 s "
                "(PLURALIGN_GENERATOR_TIMEOUT_S)") in got.json()["error"]["message"], got.text
        assert took < 2.0, took
        assert front.runtime.scheduler.held("acme") == 0
        tokenizer.chat_dribble_s = 0.0
        again = c.post("/v1/chat/completions", json=CHAT)
    assert again.status_code == 200 and again.json()["choices"][0]["message"]["content"] == "answered by base", again.text


def test_a_stream_longer_than_the_timeout_sent_steadily_is_served_whole(front, tokenizer):
    """Session remote54 bounded a streamed chat whole by `generator_timeout_s` (1 s here, 120 s by default), the bound of a
    non-streamed call: a server sending an event every 0.3 s had its answer cut at 1 s, an error event (503) after the
    pieces so far. Since session stream55 a stream is bounded by the time without a piece of it
    (`generator_stream_idle_s`, 1 s here) and by its own bound for the whole (`generator_stream_timeout_s`, 600 s): the
    whole answer, ~2.4 s, is served and stored, through the `openai` client as an app reads it."""
    tokenizer.slow_stream = 0.3
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key=front.keys["acme"], max_retries=0)
    began = time.monotonic()
    chunks = list(client.chat.completions.create(**{**CHAT, "user": "ola"}, stream=True))  # before: an APIError at 1 s
    took = time.monotonic() - began
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "answered by base", chunks
    assert took > 1.5, took
    assert front.runtime.store.count_interactions("acme", "ola") == 1
    assert front.runtime.scheduler.held("acme") == 0


def test_a_stream_the_engine_stalls_mid_way_ends_with_an_error_naming_the_idle_bound_and_nothing_stored(front, tokenizer):
    """An engine that sends a stream's first pieces and then nothing (its connection open) holds the chat no longer than
    `generator_stream_idle_s` (1 s) past its last piece, though `generator_stream_timeout_s` is far off: the client
    (the `openai` one) reads the pieces so far, then the error event (503 `unavailable`) naming the generation server, the
    bound and its setting; nothing of the chat is stored, and its tenant's place is free for its next chat."""
    tokenizer.stall_after, tokenizer.stall_s = 2, 4.0  # "answered", " by", then nothing for 4 s
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key=front.keys["acme"], max_retries=0)
    pieces: list[str] = []
    began = time.monotonic()
    with pytest.raises(openai.APIError) as cut:
        for chunk in client.chat.completions.create(**{**CHAT, "user": "ida"}, stream=True):
            pieces += [c.delta.content or "" for c in chunk.choices]
    took = time.monotonic() - began
    assert "".join(pieces) == "answered by", pieces
    assert cut.value.body["code"] == "unavailable", cut.value.body
    assert ("the generation server (PLURALIGN_GENERATOR) sent nothing more of its streamed answer for 1 s "
            "(PLURALIGN_GENERATOR_STREAM_IDLE_S); the chat was not finished: send it again") in cut.value.message, cut.value
    assert 1.0 < took < 2.5, took  # the stall's end (4 s) not waited for
    assert front.runtime.store.count_interactions("acme", "ida") == 0
    assert front.runtime.scheduler.held("acme") == 0 and not front.runtime.generator.adapters_in_use
    tokenizer.stall_after = None
    again = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**{**CHAT, "user": "ida"}, stream=True)
                    if c.choices)
    assert again == "answered by base" and front.runtime.store.count_interactions("acme", "ida") == 1
