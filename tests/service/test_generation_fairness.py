"""Generation under load, over real HTTP: per-tenant bounds (429 + Retry-After), a prompt cap up
front, a stream whose client leaves stops generating, a failing stream ends with an error event
and [DONE]."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time

import httpx
import pytest

from pluralign.policy.generator import Generator
from tests.service.tiny import LiveServer, Service, burst_within_one_second, field_named

CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "Tell me a long story."}]}


class FailingGenerator(Generator):
    """Streams two pieces, then fails the way a stalled streamer does."""

    def stream(self, messages, sampling=None, adapter=None, cancel=None):
        yield "Once"
        yield " upon"
        raise TimeoutError("the streamer waited 120 s for a token")


@contextlib.contextmanager
def generation_held(svc):
    """Every generation that starts meanwhile waits, holding the one generation worker and its tenant's slot,
    until the block ends (then runs as usual): the tenant's slots kept busy for as long as a test needs them,
    without generating hundreds of tokens to do it (those tests took 8-17 s each under load)."""
    release = threading.Event()
    generator = svc.runtime.generator
    generate = generator.generate

    def held(*args, **kwargs):
        release.wait(60)  # set at the block's end, whatever the test asserted
        return generate(*args, **kwargs)

    generator.generate = held
    try:
        yield release
    finally:
        release.set()
        del generator.generate


def wait_for(check, timeout: float = 30.0):
    """`check()` once it is truthy, else its last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def sent_chat(svc, body: dict, who: str = "acme") -> socket.socket:
    """A connection that has sent the chat `body` (and reads nothing): closing it is the client leaving."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", svc.server.port))
    sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {svc.keys[who]}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data)
    return sock


def serve(data_dir, generator, pal_dir, encoder, **settings):
    from service.app import create_app
    from service.runtime import Runtime
    from service.settings import Settings

    config = Settings(data_dir=str(data_dir), pal_dir=str(pal_dir), max_tokens=12, **settings)
    runtime = Runtime.build(config, generator=generator, encoder=encoder)
    keys = {"acme": runtime.keys.issue("acme"), "globex": runtime.keys.issue("globex")}
    server = LiveServer(create_app(runtime=runtime, admin_handlers=()))
    return server, Service(server, runtime, keys)


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = serve(tmp_path_factory.mktemp("fair"), Generator.from_folder(tiny_generator_dir), tiny_pal_dir, minilm,
                            tenant_generations=2, generation_queue=8, rerank=False, candidates=1,
                            generation_workers=1)  # the tests hold the one worker (since session 47 the default runs 4 in turns)
    with server:
        yield service


def test_a_tenant_over_its_generation_slots_gets_429_with_retry_after_and_others_are_served(svc):
    chat = {**CHAT, "max_tokens": 4, "temperature": 1.0, "seed": 3}
    results: list[httpx.Response] = []
    other: list[httpx.Response] = []

    def send(who: str, into: list) -> None:
        with svc.client(who) as c:
            into.append(c.post("/v1/chat/completions", json=chat))

    threads = [threading.Thread(target=send, args=("acme", results)) for _ in range(6)]
    with generation_held(svc):  # acme's first chat holds the worker: two of its six hold its slots, four are refused
        for t in threads:
            t.start()
        wait_for(lambda: len(results) >= 4)
        globex = threading.Thread(target=send, args=("globex", other))
        globex.start()
        wait_for(lambda: other or svc.runtime.scheduler.stats()["waiting"] >= 2)  # refused, or queued behind acme's
    for t in [*threads, globex]:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) >= 2 and 429 in codes, codes
    busy = next(r for r in results if r.status_code == 429)
    assert int(busy.headers["retry-after"]) >= 1 and "at most 2" in busy.text
    assert other[0].status_code == 200, other[0].text  # another tenant is not refused for acme's load


@pytest.mark.parametrize("change, field", [
    ({"model": "gpt-9"}, "model"), ({"n": 0}, "n"), ({"messages": [{"role": "system", "content": "Be brief."}]}, "messages"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"), ({"user": "no spaces"}, "user"),
    ({"pluralign": {"shots": 99}}, "pluralign.shots"),
])
def test_a_chat_that_can_never_be_served_is_a_400_at_once_while_the_tenant_s_slots_are_busy(svc, change, field):
    """Before: the model, the messages, `n`, the neutral-only fields, the user id and pluralign's options were
    checked on the generation scheduler, in the request's turn: while the tenant's slots were busy such a
    request waited behind them for its 400, or got 429 (the openai client raises RateLimitError, and
    retries it) when the queue was full, for a request no retry could ever get served."""
    chat = {**CHAT, "max_tokens": 4, "temperature": 1.0, "seed": 5}
    def send() -> None:
        with svc.client("acme") as c:
            c.post("/v1/chat/completions", json=chat)

    threads = [threading.Thread(target=send) for _ in range(3)]
    with generation_held(svc):  # the first chat holds the worker, the second waits: both of acme's slots are busy
        for t in threads:
            t.start()
        busy = wait_for(lambda: svc.runtime.scheduler.stats()["running"] == 1 and svc.runtime.scheduler.stats()["waiting"] == 1)
        with svc.client("acme") as c:
            r = c.post("/v1/chat/completions", json={**CHAT, **change}, timeout=30)
        # answered while the held generation still keeps both slots busy: it never waited for a turn (which comes only
        # once the block ends) nor took a place in the queue
        after = svc.runtime.scheduler.stats()
    for t in threads:
        t.join()
    assert busy, svc.runtime.scheduler.stats()
    assert r.status_code == 400 and field_named(r) == field, (r.status_code, r.text)
    assert (after["running"], after["waiting"]) == (1, 1), after


def test_a_chat_whose_client_left_while_it_waited_frees_the_tenant_s_slot_at_once(svc):
    """Before: a chat whose client gave up while it waited kept its place, and its tenant's slot, until its
    turn came (it was dropped only then): with 2 slots, one long chat and one abandoned wait answered the
    tenant's next chat 429 for as long as the long one ran (an impatient client retrying fills them all)."""
    answered: list[httpx.Response] = []

    def send(into: list) -> None:
        with svc.client("acme") as c:
            into.append(c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4, "temperature": 1.0, "seed": 7}, timeout=300))

    runner = threading.Thread(target=send, args=([],))
    with generation_held(svc):  # the first chat holds the worker (and one of acme's two slots) until the block ends
        runner.start()
        wait_for(lambda: svc.runtime.scheduler.stats()["running"] == 1)
        with sent_chat(svc, {**CHAT, "max_tokens": 4}):  # waits behind it, then its client gives up
            assert wait_for(lambda: svc.runtime.scheduler.stats()["waiting"] == 1), "the second chat never waited"
        wait_for(lambda: svc.runtime.scheduler.stats()["waiting"] == 0, timeout=10)  # the service reads the disconnect
        assert svc.runtime.scheduler.stats()["running"] == 1, "the first chat ended before the test could look"
        then = threading.Thread(target=send, args=(answered,))
        then.start()  # before: 429, the abandoned wait still held acme's second slot
        wait_for(lambda: answered or svc.runtime.scheduler.stats()["waiting"] == 1)  # refused, or queued behind the first
    then.join()
    runner.join()
    assert answered[0].status_code == 200, (answered[0].status_code, answered[0].text)


def test_a_prompt_longer_than_the_context_is_a_400_up_front(svc, monkeypatch):
    import msgspec

    # only the model's context (4096 tokens) bounds the prompt (the module's service, read at each request)
    monkeypatch.setattr(svc.runtime, "settings", msgspec.structs.replace(svc.runtime.settings, max_prompt_tokens=None))
    with svc.client("acme") as c:
        huge = c.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "x" * 200_000}]})
        assert huge.status_code == 400 and field_named(huge) == "messages[0].content", huge.text
        started = time.monotonic()
        many = [{"role": "user", "content": "hello " * 3000}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "hello " * 3000}]
        long = c.post("/v1/chat/completions", json={**CHAT, "messages": many})
        assert long.status_code == 400 and "context of 4096 tokens" in long.text, long.text
        assert time.monotonic() - started < 10
        two = [{"role": "user", "content": "hello " * 1750}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "hello " * 1750}]
        near = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1000, "messages": two})
        assert near.status_code == 400 and "max_tokens 1000" in near.text, near.text  # fits alone, not with max_tokens


def test_the_prompt_budget_bounds_one_chat_for_every_tenant(svc):
    """A message over 20,000 characters (its content, refusal or tool calls), or a prompt over
    `max_prompt_tokens` (1,024 by default), is a 400 before any generation: a prompt's prefill holds
    the one generation worker and cannot be interrupted (a 12,000-character chat held every tenant's
    chats for minutes)."""
    with svc.client("acme") as c:
        over = c.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "a" * 20_001}]})
        assert over.status_code == 400 and field_named(over) == "messages[0].content" and "20000" in over.text, over.text
        parts = [{"type": "text", "text": "a" * 10_001}, {"type": "text", "text": "b" * 10_000}]
        split = c.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": parts}]})
        assert split.status_code == 400 and field_named(split) == "messages[0].content", split.text
        refusal = [{"role": "assistant", "content": None, "refusal": "r" * 25_000}, {"role": "user", "content": "hi"}]
        r = c.post("/v1/chat/completions", json={**CHAT, "messages": refusal})
        assert r.status_code == 400 and field_named(r) == "messages[0]" and "refusal and tool calls" in r.text, r.text
        started = time.monotonic()
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "ab " * 300_000}}
        calls = [{"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "user", "content": "hi"}]
        r = c.post("/v1/chat/completions", json={**CHAT, "messages": calls})
        assert r.status_code == 400 and field_named(r) == "messages[0]", r.text
        assert time.monotonic() - started < 10  # refused before any tokenizing (it took 11.9 s behind 17 tokenizations)
        many = [{"role": "user", "content": "hello " * 3000}, {"role": "assistant", "content": "ok " * 6000}, {"role": "user", "content": "hello " * 3000}]
        whole = c.post("/v1/chat/completions", json={**CHAT, "messages": many})  # each under the cap, together far over the budget
        assert whole.status_code == 400 and field_named(whole) == "messages" and "`max_prompt_tokens`" in whole.text, whole.text
        long = c.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "hello " * 1500}]})
        assert long.status_code == 400 and field_named(long) == "messages" and "at most 1024 (`max_prompt_tokens`)" in long.text, long.text
        assert svc.runtime.scheduler.stats()["running"] == 0
        fits = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2, "messages": [{"role": "user", "content": "hello " * 500}]})
        assert fits.status_code == 200, fits.text


def test_a_chat_prefills_at_most_max_prefill_tokens_over_its_candidates(svc):
    """Styled candidates each prefill their own prompt: 8 of a 700-token prompt are cut to the 5 that fit 4,096
    prefill tokens (8 candidates of 2,006 tokens held another tenant's chat for 130 s). Plain candidates of one prompt
    share one prefill (session 48's sliced prefill): `n` 8, or 4 of a prompt that fits the budget once but not 4
    times, is served by plain candidates (until remote49 a 400 naming `n`); a prompt over the budget alone is a 400
    naming `messages`."""
    import msgspec

    prompt = [{"role": "user", "content": "hello " * 700}]
    rt = svc.runtime
    with svc.client("acme") as c:
        tokens = rt.generator.prompt_tokens([{"role": "user", "content": "hello " * 700}])
        assert rt.generator.shared_prefill and tokens > rt.generator.prefill_slice_tokens
        r = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1, "messages": prompt, "pluralign": {"candidates": 8}})
        assert r.status_code == 200, r.text
        assert r.json()["pluralign"]["candidates"] == 4096 // tokens < 8 and r.json()["pluralign"]["styles"], (r.json()["pluralign"], tokens)
        n8 = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1, "n": 8, "messages": prompt})
        assert n8.status_code == 200 and len(n8.json()["choices"]) == n8.json()["pluralign"]["candidates"] == 8, n8.text
        settings = rt.settings
        try:
            rt.settings = msgspec.structs.replace(settings, max_prefill_tokens=3 * tokens)  # once, not 4 times
            n4 = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1, "n": 4, "messages": prompt})
            assert n4.status_code == 200 and len(n4.json()["choices"]) == 4, n4.text  # before: 400 naming `n`
            assert n4.json()["pluralign"]["styles"] is None  # plain: styled ones would prefill 4 prompts
            rt.settings = msgspec.structs.replace(settings, max_prefill_tokens=tokens - 1)
            over = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1, "n": 4, "messages": prompt})
            assert over.status_code == 400 and field_named(over) == "messages" and "`max_prefill_tokens`" in over.text, over.text
        finally:
            rt.settings = settings


def test_retrieved_shots_give_way_to_the_prompt_budget(svc):
    """The service's own additions never make a chat a 400: shots are left out, farthest first,
    until the prompt fits; only the client's messages can be too long."""
    answer = "This answer goes on about the topic at some length. " * 4
    with svc.client("acme") as c:
        for i in range(4):
            r = c.post("/v1/feedback", json={"type": "comparison", "user": "shots-user", "prompt": f"Question {i} " + answer,
                                             "chosen": "Yes. " + answer, "rejected": "No. " + answer})
            assert r.status_code == 201, r.text
        question = {"role": "user", "content": "Question 0 " + "hello " * 800}
        r = c.post("/v1/chat/completions", json={**CHAT, "user": "shots-user", "max_tokens": 2, "pluralign": {"shots": 4}, "messages": [question]})
        assert r.status_code == 200, r.text
        kept = r.json()["pluralign"]["history"]
        assert len(kept) < 4, kept  # the farthest shots left out to fit
        short = c.post("/v1/chat/completions", json={**CHAT, "user": "shots-user", "max_tokens": 2, "pluralign": {"shots": 4},
                                                     "messages": [{"role": "user", "content": "Question 0"}]})
        assert short.status_code == 200 and len(short.json()["pluralign"]["history"]) == 4, short.text  # all fit a short question


LEAVING = 400  # max_tokens of the chats whose client leaves: one left to run generates all of them


@pytest.fixture(scope="module")
def runs_to_length(svc) -> dict:
    """The chat the leaving clients send (seed 1), answered whole: it generates all `LEAVING` tokens (no stop
    token comes first), so a generation left to run after its client went away would be told apart."""
    body = {**CHAT, "max_tokens": LEAVING, "temperature": 1.0, "seed": 1}
    with svc.client("acme") as c:
        whole = c.post("/v1/chat/completions", json=body)
    assert whole.status_code == 200 and whole.json()["choices"][0]["finish_reason"] == "length", whole.text
    assert whole.json()["usage"]["completion_tokens"] == LEAVING, whole.json()["usage"]
    return body


@contextlib.contextmanager
def model_steps(svc):
    """A list whose one item counts the generator model's forward passes meanwhile: one per token a
    one-row generation makes (the prompt's prefill is the first)."""
    steps = [0]
    model = svc.runtime.generator.model
    forward = model.forward

    def counted(*args, **kwargs):
        steps[0] += 1
        return forward(*args, **kwargs)

    model.forward = counted
    try:
        yield steps
    finally:
        del model.forward


def test_a_stream_whose_client_leaves_stops_generating(svc, runs_to_length):
    """Told by the tokens generated, not by the time: before, the stream went on to `LEAVING` tokens."""
    body = {**runs_to_length, "stream": True}
    with model_steps(svc) as steps, svc.client("acme") as c:
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            for _ in range(4):
                next(lines)
        # the connection is closed here
        stopped = wait_for(lambda: svc.runtime.scheduler.stats()["running"] == 0, timeout=120)
        # the next chat takes the model once it is free: a generation still running on counts its tokens first
        again = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4})
        generated = steps[0]
    assert stopped and again.status_code == 200, again.text
    assert generated < LEAVING // 2, generated  # the left stream's tokens and the next chat's few


def cancelled_chats(svc) -> float:
    """`pluralign_chat_cancelled_total` now (streams that were left count too)."""
    for line in httpx.get(svc.url + "/metrics").text.splitlines():
        if line.startswith("pluralign_chat_cancelled_total "):
            return float(line.split()[1])
    return 0.0


def test_a_non_streaming_chat_whose_client_leaves_stops_generating_and_frees_its_slot(svc, runs_to_length):
    """The client leaves (closes its connection) once the generation is under way; told by the tokens
    generated, not by the time: before, the chat went on to `LEAVING` tokens, holding its slot."""
    cancelled_before = cancelled_chats(svc)
    with model_steps(svc) as steps:
        with sent_chat(svc, runs_to_length):
            assert wait_for(lambda: steps[0] >= 5, timeout=60), "the generation never began"
        # the client closed its connection here, the generation under way
        stopped = wait_for(lambda: svc.runtime.scheduler.stats()["running"] == 0, timeout=120)
        assert stopped and svc.runtime.scheduler.stats() == {"running": 0, "waiting": 0, "tenants": 0}
        with svc.client("acme") as c:  # the slot is free and the model answers the next request
            again = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4})
        generated = steps[0]
    assert again.status_code == 200, again.text
    assert generated < LEAVING // 2, generated  # not run on to max_tokens (the next chat's few tokens counted too)
    assert cancelled_chats(svc) == cancelled_before + 1


@pytest.fixture(scope="module")
def failing(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    base = Generator.from_folder(tiny_generator_dir)
    generator = FailingGenerator(base.model, base.tokenizer, base.model_id)
    server, service = serve(tmp_path_factory.mktemp("failing"), generator, tiny_pal_dir, minilm, rerank=False, candidates=1)
    with server:
        yield service


def test_a_failing_stream_ends_with_an_error_event_then_done(failing):
    with failing.client("acme") as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = [line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])
    assert "error" in error and "generation failed" in json.dumps(error)
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "Once"


RATE_TRIES = 10  # bursts sent at most: one that straddled two seconds is sent again in the next


@pytest.fixture(scope="module")
def limited(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = serve(tmp_path_factory.mktemp("limited"), Generator.from_folder(tiny_generator_dir), tiny_pal_dir, minilm,
                            tenant_requests_per_second=20)
    with server:
        yield service


def test_a_tenant_over_its_request_rate_gets_429_and_another_tenant_does_not(limited):
    """20 requests a second: the 21st within one second is a 429. Litestar's window is the wall clock's whole second
    (tests/service/test_mutsvc39_limits.py). Before, 60 requests in a row were judged by their count (at most 40
    answered: "a burst may straddle two" seconds), but on a loaded machine they spread over three (2 cores at load 11:
    46 answered, the test failed). Now each burst of 21 starts a second, and only one this client saw begin and end
    within that second is judged (another is sent again); its 21st is the one refused. Another tenant's request is
    the burst's 22nd, in that same second: sent after it, one limit for all tenants passed unseen whenever it fell in
    the next second (a loaded machine)."""
    with limited.client("acme") as c, limited.client("globex") as g:
        senders = itertools.cycle([c] * 21 + [g])  # each try sends 22: the cycle starts over with each
        answers = burst_within_one_second(lambda: next(senders).get("/v1/models"), 22, RATE_TRIES)
        codes = [r.status_code for r in answers]
        assert codes == [200] * 20 + [429, 200], codes
        for r in answers:  # RateLimit-* on every answer, Retry-After on the 429s only (every 200 had it too)
            assert "ratelimit-limit" in r.headers and ("retry-after" in r.headers) == (r.status_code == 429), dict(r.headers)
        assert int(next(r for r in answers if r.status_code == 429).headers["retry-after"]) >= 1
    assert httpx.get(limited.url + "/health").status_code == 200  # not limited


@pytest.fixture(scope="module")
def crowd(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = serve(tmp_path_factory.mktemp("crowd"), Generator.from_folder(tiny_generator_dir), tiny_pal_dir, minilm,
                            tenant_generations=60, generation_queue=64, rerank=False, candidates=1, tenant_requests_per_second=0)
    with server:
        yield service


def test_another_tenants_light_reads_are_served_while_50_chats_wait(crowd):
    """Issue 13's 44 concurrent chats left no request thread for another tenant's profile read (76 s);
    waiting chats now hold no thread: the read is answered while most of the chats still wait."""
    with crowd.client("globex") as g:
        assert g.post("/v1/feedback", json={"type": "comparison", "user": "gil", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}).status_code == 201
    results: list[int] = []

    def send() -> None:
        with crowd.client("acme") as c:
            results.append(c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4, "temperature": 1.0}, timeout=300).status_code)

    threads = [threading.Thread(target=send) for _ in range(50)]
    with generation_held(crowd):  # the first chat holds the worker: the other 49 wait until the block ends
        for t in threads:
            t.start()
        wait_for(lambda: crowd.runtime.scheduler.stats()["waiting"] >= 40)
        assert crowd.runtime.scheduler.stats()["waiting"] >= 40
        with crowd.client("globex") as g:
            g.timeout = httpx.Timeout(30)  # before, the read waited for a thread a waiting chat held: until the block ends
            started = time.monotonic()
            reads = [g.get("/v1/users/gil").status_code for _ in range(5)]
            took = time.monotonic() - started
        still_waiting = crowd.runtime.scheduler.stats()["waiting"]
    for t in threads:
        t.join()
    assert reads == [200] * 5
    assert still_waiting >= 30, still_waiting  # answered while the chats still waited
    assert results.count(200) == 50
    assert took < 10, took


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_whose_client_left_mid_generation_gives_its_place_back_at_once(svc, stream):
    """Before (session small53): a chat whose client left while it generated kept its tenant's place until its task
    returned. Its generation stops at its next token, but one waiting for the model's turn (another chat's token step,
    a long prefill) sees none for a while: a client that sent again at once, within the limit, got 429 (two were seen in
    one trial run). Now its place is given back as its client leaves; its worker stays taken until it stops."""
    from tests.serving import generation_held as model_held

    rt, body = svc.runtime, {**CHAT, "max_tokens": 4, "stream": stream}
    answered: list[httpx.Response] = []

    def send() -> None:
        with svc.client("acme") as c:
            answered.append(c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4}, timeout=60))

    again = threading.Thread(target=send)
    with model_held(rt) as release:
        first = sent_chat(svc, body)  # takes the one worker, and waits for the model's turn
        assert wait_for(lambda: rt.scheduler.stats()["running"] == 1, timeout=10), "the first chat never started"
        with sent_chat(svc, body):  # waits behind it: acme's two places are taken
            assert wait_for(lambda: rt.scheduler.stats()["waiting"] == 1, timeout=10), "the second chat never waited"
            first.close()  # its client drops the connection mid-generation
            assert wait_for(lambda: rt.scheduler.held("acme") == 1, timeout=30), rt.scheduler.held("acme")
            again.start()  # at once, within the limit of 2: before, 429
            wait_for(lambda: answered or rt.scheduler.stats()["waiting"] == 2, timeout=10)  # refused, or queued
            release()
            again.join()
    assert answered[0].status_code == 200, (answered[0].status_code, answered[0].text)
    assert wait_for(lambda: rt.scheduler.stats() == {"running": 0, "waiting": 0, "tenants": 0}, timeout=30), rt.scheduler.stats()
