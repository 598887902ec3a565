"""The service driven by the real clients of its ecosystem: the official `openai` client, LangChain's
ChatOpenAI and LiteLLM. Errors reach them with message, param and code; the fields they send by
default are accepted; unsupported values are refused naming the field; streaming with n > 1."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.service.tiny import start_service

HI = [{"role": "user", "content": "What should I cook tonight?"}]


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


@pytest.fixture()
def client(svc):
    from openai import OpenAI

    return OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0, timeout=120)


def test_errors_reach_the_openai_client_with_message_param_and_code(client):
    import openai

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="pluralign", messages=HI, temperature=3)
    assert bad.value.param == "temperature" and bad.value.code == "invalid_value"
    assert "temperature" in bad.value.message and "[0, 2]" in bad.value.message
    assert bad.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as typed:  # msgspec's type error, located by path
        client.chat.completions.create(model="pluralign", messages=[{"role": "wizard", "content": "x"}])
    assert typed.value.param == "messages[0].role" and "messages[0].role" in typed.value.message
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model="pluralign", messages=HI, extra_body={"frequency_pen": 1})
    assert unknown.value.param == "frequency_pen" and unknown.value.code == "unknown_parameter"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert missing.value.code == "model_not_found" and "gpt-9" in missing.value.message
    from openai import OpenAI

    with pytest.raises(openai.AuthenticationError) as denied:
        OpenAI(base_url=client.base_url, api_key="pk-wrong", max_retries=0).models.list()
    assert denied.value.code == "invalid_api_key" and "unknown API key" in denied.value.message


def test_fields_clients_send_by_default_are_accepted(client, svc):
    history = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "refusal": None, "audio": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
        {"role": "assistant", "content": [{"type": "text", "text": "It is sunny."}]},
        {"role": "user", "content": [{"type": "text", "text": "So what should I cook tonight?", "prompt_cache_breakpoint": {"mode": "explicit"}}]},
    ]
    completion = client.chat.completions.create(
        model="pluralign", messages=history, user="dora", seed=3, max_completion_tokens=8,
        response_format={"type": "text"}, metadata={"session": "s1"}, store=True,
        frequency_penalty=0.5, presence_penalty=0.0, parallel_tool_calls=True, logprobs=False, top_logprobs=0,
        logit_bias={}, tool_choice="none", modalities=["text"], service_tier="auto", prompt_cache_key="k1",
        reasoning_effort="low", verbosity="medium", prompt_cache_options={"mode": "implicit"},
    )
    assert completion.choices[0].message.role == "assistant" and completion.usage.total_tokens > 0
    chunks = list(client.chat.completions.create(
        model="pluralign", messages=HI, user="dora", max_tokens=6, stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
    ))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_the_docs_table_covers_every_field_of_the_openai_client():
    """docs/api.md has a row for each field of the installed openai client's chat request, and the
    request schema takes each of them (supported, ignored, or refused by value, never unknown)."""
    import re
    from pathlib import Path

    from openai.types.chat.completion_create_params import CompletionCreateParamsBase

    from service.chat.schemas import ChatRequest

    doc = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    table = doc[doc.index("### Every OpenAI chat field") : doc.index("### Clients")]
    rows = {name for line in table.splitlines() if line.startswith("| `") for name in re.findall(r"`([a-z_.]+)`", line.split("|")[1])}
    fields = set(CompletionCreateParamsBase.__annotations__)
    assert fields - rows == set() and fields - set(ChatRequest.__struct_fields__) == set()


def test_store_false_keeps_no_interaction(client, svc):
    with svc.client() as c:
        before = c.get("/v1/users/dora/export").text.count('"interaction"')
        client.chat.completions.create(model="pluralign", messages=HI, user="dora", max_tokens=4, store=False)
        after = c.get("/v1/users/dora/export").text.count('"interaction"')
    assert after == before


@pytest.mark.parametrize("field,value,param", [
    ("frequency_penalty", 2.5, "frequency_penalty"),
    ("logprobs", True, "logprobs"),
    ("top_logprobs", 3, "top_logprobs"),
    ("response_format", {"type": "json_object"}, "response_format.type"),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}], "tools"),
    ("tool_choice", "required", "tool_choice"),
    ("modalities", ["text", "audio"], "modalities"),
    ("logit_bias", {"50256": -100}, "logit_bias"),
    ("prediction", {"type": "content", "content": "x"}, "prediction"),
    ("moderation", {"model": "omni-moderation-latest"}, "moderation"),
    # an empty object is not null: OpenAI searches the web with `web_search_options: {}` (its defaults), and a
    # `moderation` asked for and not run must not pass silently (before session user42 both were served)
    ("web_search_options", {}, "web_search_options"),
    ("moderation", {}, "moderation"),
])
def test_unsupported_values_are_refused_naming_the_field(client, field, value, param):
    import openai

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="pluralign", messages=HI, **{field: value})
    assert bad.value.param == param and param in bad.value.message


def test_a_reply_s_message_sent_back_as_the_client_dumps_it_is_accepted(client):
    """A multi-turn app keeps the history as dicts: `messages.append(reply.choices[0].message.model_dump())`.
    The openai client's dump of an assistant message carries every field of its type, `annotations`
    (OpenAI's URL citations, null or a list) among them, which OpenAI takes back in history. Before session
    user42 `annotations` was an unknown field: a 400 on the second turn of such an app."""
    import openai

    fast = {"pluralign": {"candidates": 1}}
    first = client.chat.completions.create(model="pluralign", messages=HI, max_tokens=4, extra_body=fast)
    sent = first.choices[0].message.model_dump()
    assert "annotations" in sent
    citation = {"type": "url_citation", "url_citation": {"start_index": 0, "end_index": 4, "title": "T", "url": "https://example.com"}}
    for cited in (None, [citation]):
        history = [*HI, dict(sent, annotations=cited), {"role": "user", "content": "And for dessert?"}]
        reply = client.chat.completions.create(model="pluralign", messages=history, max_tokens=4, extra_body=fast)
        assert reply.choices[0].message.role == "assistant"
    with pytest.raises(openai.BadRequestError) as bad:  # citations belong to an assistant's answer
        client.chat.completions.create(model="pluralign", messages=[{**HI[0], "annotations": [citation]}], max_tokens=4)
    assert bad.value.param == "messages[0].annotations" and "assistant" in bad.value.message


def test_models_retrieve(client, svc):
    for name in [svc.runtime.generator.model_id, "pluralign"]:
        model = client.models.retrieve(name)
        assert model.id == name and model.object == "model"
    assert {m.id for m in client.models.list()} >= {"pluralign", "default"}


def test_streaming_n2_interleaves_chunks_per_index(client, svc):
    stream = client.chat.completions.create(
        model="pluralign", messages=HI, user="nico", n=2, max_tokens=10, seed=5, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    texts, finished, order = {0: "", 1: ""}, {}, []
    for chunk in chunks:
        for choice in chunk.choices:
            order.append(choice.index)
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
    assert set(finished) == {0, 1} and set(finished.values()) <= {"stop", "length"}
    assert order[:2] == [0, 1]  # both choices open before either finishes: interleaved, not one after the other
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    info = next(c.model_extra["pluralign"] for c in chunks if c.model_extra.get("pluralign"))
    with svc.client() as c:
        lines = [json.loads(x) for x in c.get("/v1/users/nico/export").text.splitlines()]
    served = next(r for r in lines if r.get("response_id") == info["response_id"])
    ranked = sorted(range(len(served["scores"])), key=lambda i: -served["scores"][i])[:2]
    assert [texts[0].strip(), texts[1].strip()] == [served["candidates"][i] for i in ranked]


def test_a_streams_pluralign_object_is_read_from_its_chunks_as_documented(client, svc):
    """openai's `chat.completions.stream(...).get_final_completion()` builds its completion from the
    first chunk's top-level fields and only the choices, usage and fingerprint of later ones, so it
    drops `pluralign` (carried by the finishing chunk: the compare pair and reranking are only known
    once the answers are). docs/api.md's way reads it from the chunks, with either call."""
    from openai import LengthFinishReasonError

    with client.chat.completions.stream(model="pluralign", messages=HI, user="sina", n=2, max_tokens=8, seed=3) as stream:
        info = None
        for event in stream:
            if event.type == "chunk" and event.chunk.model_extra.get("pluralign"):
                info = event.chunk.model_extra["pluralign"]
        final = stream.current_completion_snapshot  # what get_final_completion() parses (and it raises for a cut answer)
        with pytest.raises(LengthFinishReasonError) as cut:  # the tiny model's answers stop at max_tokens
            stream.get_final_completion()
    assert cut.value.completion is final and final.choices[0].finish_reason == "length"
    assert "pluralign" not in (final.model_extra or {})  # the library's accumulation (if a release keeps it, say so in the docs)
    assert info is not None and info["response_id"] == final.id and len(final.choices) == 2
    assert info["compare"] is None or sorted(info["compare"]) == [0, 1]  # indices of the final completion's choices
    assert info["candidates"] >= 2 and len(info["generation_index"]) == 2  # the reranking: each choice's candidate
    chunks = list(client.chat.completions.create(model="pluralign", messages=HI, user="sina", n=2, max_tokens=8, seed=3, stream=True))
    again = next(c.model_extra["pluralign"] for c in chunks if c.model_extra.get("pluralign"))
    assert again["response_id"] == chunks[0].id and again.keys() == info.keys()


def test_langchain_chat_openai_with_user_in_extra_body(svc):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], model="pluralign", max_tokens=6,
                     max_retries=0, extra_body={"user": "lena", "pluralign": {"shots": 2}})
    reply = llm.invoke("What should I cook tonight?")
    assert isinstance(reply.content, str)
    with svc.client() as c:
        assert c.get("/v1/users/lena/export").text.count('"interaction"') == 1  # `user` reached the service


@pytest.mark.slow  # LiteLLM's import (~4 CPU-s): `make test-generation`; `user` in extra_body reaching the service and a
# refusal reaching the client: the LangChain test above and test_errors_reach_the_openai_client_with_message_param_and_code
def test_litellm_with_user_in_extra_body(svc):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
    litellm = pytest.importorskip("litellm")

    reply = litellm.completion(
        model="openai/pluralign", api_base=svc.url + "/v1", api_key=svc.keys["acme"], messages=HI, max_tokens=6,
        extra_body={"user": "lior"},  # docs/api.md: LiteLLM drops a plain `user=` for OpenAI-compatible servers
    )
    assert reply.choices[0].message.role == "assistant"
    litellm.completion(model="openai/pluralign", api_base=svc.url + "/v1", api_key=svc.keys["acme"], messages=HI,
                       max_tokens=4, user="lior-plain")
    with svc.client() as c:
        assert c.get("/v1/users/lior/export").text.count('"interaction"') == 1
        assert c.get("/v1/users/lior-plain").status_code == 404  # why the docs say extra_body
    with pytest.raises(litellm.BadRequestError, match="temperature"):
        litellm.completion(model="openai/pluralign", api_base=svc.url + "/v1", api_key=svc.keys["acme"], messages=HI, temperature=5)



@pytest.mark.slow  # LiteLLM's import: `make test-generation`; a stream's chunks' id is its response id in the default
# suite: test_a_streams_pluralign_object_is_read_from_its_chunks_as_documented (the openai client)
def test_a_litellm_stream_gives_the_response_id_as_its_chunks_id(svc):
    """LiteLLM's stream of `n` >= 2 choices drops the `pluralign` object (with one it passes it on), so a LiteLLM app
    streaming the choices it lets its user pick from never sees `pluralign.response_id` (nor `compare`); docs/api.md
    says to send feedback with the chunks' `id`, which is the response id (every reply's `id` is its response id)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
    litellm = pytest.importorskip("litellm")

    chunks = list(litellm.completion(model="openai/pluralign", api_base=svc.url + "/v1", api_key=svc.keys["acme"], messages=HI,
                                     max_tokens=4, n=2, stream=True, extra_body={"user": "lisa"}))
    assert not any("response_id" in str(chunk.model_dump()) for chunk in chunks)  # what makes the docs' advice needed
    (response_id,) = {chunk.id for chunk in chunks}
    with svc.client("acme") as c:
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": response_id, "chosen_index": 1})
        assert r.status_code == 201, r.text

@pytest.fixture(scope="module")
def limited(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("limited"), tiny_generator_dir, tiny_pal_dir, minilm, tenant_requests_per_second=5)
    with server:
        yield service


def test_the_rate_limit_s_429_says_which_limit_and_when_to_retry(limited):
    """Before: the openai client raised RateLimitError with the message "Too Many Requests" (Litestar's
    default), which named neither the limit, nor its setting, nor when to send again."""
    import openai
    from openai import OpenAI

    client = OpenAI(base_url=limited.url + "/v1", api_key=limited.keys["acme"], max_retries=0)
    with pytest.raises(openai.RateLimitError) as limited_error:
        for _ in range(30):
            client.models.list()
    error = limited_error.value
    assert error.code == "rate_limit_exceeded" and error.type == "rate_limit_error"
    retry_after = error.response.headers["retry-after"]
    assert "5 requests a second" in error.message and "PLURALIGN_TENANT_REQUESTS_PER_SECOND" in error.message, error.message
    assert f"retry after {retry_after} s" in error.message, error.message
    # a client without a known key is limited by its address, and told so
    stranger = OpenAI(base_url=limited.url + "/v1", api_key="pk-unknown", max_retries=0)
    for _ in range(30):
        with pytest.raises(openai.APIStatusError) as anonymous:
            stranger.models.list()
        if anonymous.value.status_code == 429:
            break
    assert anonymous.value.status_code == 429 and "without a known key from this address" in anonymous.value.message, anonymous.value.message


def test_a_long_stop_string_is_refused_before_it_reaches_the_generator(client, svc):
    """Before: `stop` took strings of any length, and transformers' stop-string set-up costs ~8 ms of the
    generation process a character (SmolLM2's vocabulary): one request with a 100,000-character stop held
    the generator, which then served every tenant one generation at a time (until session 47), for minutes (seen: 4 minutes and
    counting, while every other chat queued and then got 429). Here the generator refuses any call meanwhile, and none
    reaches it (with the 64-character check removed the request did not come back before the client's read timed out)."""
    import openai

    generator, reached = svc.runtime.generator, []

    def reached_the_generator(*args, **kwargs):
        reached.append(kwargs.get("stop"))
        raise RuntimeError("a chat with a stop string too long reached the generator")

    generator.generate = reached_the_generator
    try:
        with pytest.raises(openai.BadRequestError) as long_stop:
            client.chat.completions.create(model="pluralign", messages=HI, max_tokens=1, stop="x" * 100_000)
        with pytest.raises(openai.BadRequestError) as second:  # the list form is checked string by string
            client.chat.completions.create(model="pluralign", messages=HI, max_tokens=1, stop=["###", "y" * 65])
    finally:
        del generator.generate
    assert long_stop.value.param == "stop" and "64 characters" in long_stop.value.message, long_stop.value.message
    assert second.value.param == "stop[1]", second.value.param
    assert reached == []
    assert client.chat.completions.create(model="pluralign", messages=HI, max_tokens=2, stop=["z" * 64]).choices  # 64 is served


class _Watched:
    """An httpx transport handing on the real one's answers while keeping their bytes, calling `on_comment` once a
    line starting with `:` (an SSE comment) has come."""

    def __init__(self, on_comment):
        import httpx

        self.inner, self.on_comment, self.read = httpx.HTTPTransport(), on_comment, bytearray()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def handle_request(self, request):
        import httpx

        response = self.inner.handle_request(request)
        watched = self

        class Stream(httpx.SyncByteStream):
            def __iter__(self):
                for piece in response.stream:
                    watched.read += piece
                    if b"\n:" in b"\n" + watched.read:
                        watched.on_comment()
                    yield piece

            def close(self):
                response.stream.close()

        return httpx.Response(response.status_code, headers=response.headers, stream=Stream(), extensions=response.extensions)


def test_an_n2_stream_keeps_the_connection_alive_while_its_candidates_are_generated(svc):
    """Before (wire44): with n > 1 every candidate is generated and reranked before the first event, and nothing went
    before it, its headers neither: no `: keep-alive` comment (`sse_keepalive_s`) either, so a proxy's read timeout cut
    a long rerank. Now, once a keep-alive is due, the headers and the comment go, and the openai client, skipping the
    comment, reads the stream as before. The generator's lock is held (as a chat ahead of it would) until the comment
    has come; the timer only ends a wait that never sees one."""
    import httpx
    from openai import OpenAI

    from tests.serving import generation_held

    with generation_held(svc.runtime) as release:
        watched = _Watched(release)
        client = OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0, timeout=120,
                        http_client=httpx.Client(transport=watched, timeout=120))
        chunks = list(client.chat.completions.create(model="pluralign", messages=HI, user="kai", n=2, max_tokens=8, seed=4,
                                                     stream=True, extra_body={"pluralign": {"candidates": 3}}))
    wire = bytes(watched.read).decode()
    assert wire.startswith(": keep-alive\n\n"), wire[:200]  # before any event: the candidates were still generating
    assert [c.choices[0].index for c in chunks[:2]] == [0, 1] and chunks[0].choices[0].delta.role == "assistant"
    finished = {c.choices[0].index: c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason}
    assert set(finished) == {0, 1}, chunks
    texts = {i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i) for i in (0, 1)}
    info = next(c.model_extra["pluralign"] for c in chunks if c.model_extra.get("pluralign"))
    with svc.client() as c:
        served = next(r for r in map(json.loads, c.get("/v1/users/kai/export").text.splitlines())
                      if r.get("response_id") == info["response_id"])
    ranked = sorted(range(len(served["scores"])), key=lambda i: -served["scores"][i])[:2]
    assert [texts[0].strip(), texts[1].strip()] == [served["candidates"][i] for i in ranked]


def test_an_n2_stream_that_fails_says_so_by_its_status_or_once_its_headers_went_by_an_error_event(svc, monkeypatch, caplog):
    """wire44's other half, which no test drove (reviewwi44): an n > 1 stream whose generation fails before a keep-alive
    went is a plain 500 (the openai client raises InternalServerError); once the keep-alive (and so the headers) went,
    it ends with an error event and `data: [DONE]` (the client raises APIError), not a 200 that ends without a word."""
    import threading

    import httpx
    import msgspec
    import openai
    from openai import OpenAI

    rt = svc.runtime
    commented = threading.Event()

    def failing(*args, **kwargs):
        if rt.settings.sse_keepalive_s < 1:  # fail once the client has read the keep-alive
            assert commented.wait(30)
        raise RuntimeError("the generator broke")

    monkeypatch.setattr(rt.generator, "generate", failing)
    monkeypatch.setattr(rt.generator, "generate_styled", failing, raising=False)
    watched = _Watched(commented.set)
    client = OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0, timeout=120,
                    http_client=httpx.Client(transport=watched, timeout=120))
    ask = {"model": "pluralign", "messages": HI, "user": "kai", "n": 2, "max_tokens": 8, "stream": True}
    with pytest.raises(openai.InternalServerError):  # within sse_keepalive_s (15 s): nothing went, a plain status
        list(client.chat.completions.create(**ask))
    assert not watched.read.startswith(b": keep-alive")
    settings = rt.settings
    monkeypatch.setattr(rt, "settings", msgspec.structs.replace(settings, sse_keepalive_s=0.05))
    watched.read.clear()
    with pytest.raises(openai.APIError) as told:
        list(client.chat.completions.create(**ask))
    assert not isinstance(told.value, openai.APIStatusError) and "generation failed: RuntimeError" in told.value.message, told.value
    assert watched.read.startswith(b": keep-alive\n\n"), bytes(watched.read)
    commented.clear()  # the whole stream, read as it comes, as the client stopped reading at the error
    with httpx.Client(transport=_Watched(commented.set), timeout=120) as raw:
        wire = raw.post(svc.url + "/v1/chat/completions", json=ask, headers={"Authorization": f"Bearer {svc.keys['acme']}"}).text
    assert wire.startswith(": keep-alive\n\n") and '"generation failed: RuntimeError"' in wire and wire.endswith("data: [DONE]\n\n"), wire
    # the log line names the stream that failed (wire44b: it said "a stream failed", as if none could be told apart)
    failed = [r.getMessage() for r in caplog.records if r.name == "pluralign.service" and r.getMessage().endswith(" failed")]
    assert failed and all(re.fullmatch(r"stream chatcmpl-[0-9a-f]{32} failed", line) for line in failed), failed


class _HeldSlots:
    """Every generation slot held (as chats of other tenants would) until `free()` is called, or for 10 s. One tenant
    each: one tenant alone leaves a worker free for another's chat (since session 47 there are 4)."""

    def __init__(self, rt):
        import threading
        import time

        # an earlier test's generation (a chat whose client left, a holder finishing) may still hold a slot on a loaded
        # machine: held beside it, one of these would wait and the test would read two chats queued, not one
        deadline = time.monotonic() + 30
        while (stats := rt.scheduler.stats())["running"] or stats["waiting"]:
            assert time.monotonic() < deadline, f"the generation slots never came free: {stats}"
            time.sleep(0.01)
        self.freed = threading.Event()
        self.holders = [rt.scheduler.submit(f"globex{i}", lambda: self.freed.wait(10)) for i in range(rt.scheduler.workers)]

    def free(self) -> None:
        self.freed.set()

    def freed_in_time(self) -> bool:
        """Whether `free()` ended the hold, not its 10 s (frees it first: a test that failed leaves none held)."""
        ended = all(holder.result(30) for holder in self.holders)
        self.free()
        return ended


def _keepalive_client(svc, on_comment):
    import httpx
    from openai import OpenAI

    watched = _Watched(on_comment)
    return watched, OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0, timeout=120,
                           http_client=httpx.Client(transport=watched, timeout=120))


def _while_held(rt, ask):
    """`ask(slots)` while every generation slot is held until `slots.free()` (the client has read a keep-alive
    comment): (its answer, whether that freed them, not the hold's 10 s)."""
    slots = _HeldSlots(rt)
    try:
        answer = ask(slots)
    except BaseException:
        slots.free()
        raise
    return answer, slots.freed_in_time()


@pytest.mark.parametrize("n", [1, 2])
def test_a_stream_waiting_for_a_generation_slot_keeps_the_connection_alive(svc, monkeypatch, n):
    """Before (wire44b): a stream queued behind other chats for a generation slot sent nothing, its headers neither,
    until a slot freed (keep-alives began only once it was planned), so a proxy's idle timeout cut it. Now after
    `sse_keepalive_s` of waiting its headers and `: keep-alive` comments go, and the openai client, skipping them,
    reads the chunks as before. The slots are held until the client has read a comment (10 s at most: before, the
    hold ran out and only then did n = 2's comment come, while its candidates were made)."""
    import msgspec

    rt = svc.runtime
    monkeypatch.setattr(rt, "settings", msgspec.structs.replace(rt.settings, sse_keepalive_s=0.05))

    def ask(slots):
        watched, client = _keepalive_client(svc, slots.free)
        chunks = list(client.chat.completions.create(model="pluralign", messages=HI, n=n, max_tokens=4, seed=4, stream=True,
                                                     extra_body={"pluralign": {"candidates": n}}))
        return watched.read, chunks

    (wire, chunks), in_time = _while_held(rt, ask)
    assert in_time and wire.startswith(b": keep-alive\n\n"), bytes(wire[:200])
    assert wire.endswith(b"data: [DONE]\n\n"), bytes(wire[-200:])
    assert [c.choices[0].delta.role for c in chunks[:n]] == ["assistant"] * n
    finished = {c.choices[0].index: c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason}
    assert set(finished) == set(range(n)), chunks


def test_a_planning_error_after_a_queued_stream_s_keep_alive_is_an_error_event_naming_the_field(svc, monkeypatch):
    """A request found too long for the prompt budget only once planned (its tokens counted on the generation
    thread) is a plain 400 naming `messages` when nothing went yet; once a keep-alive went while it was queued the
    same 400 (status, code, param, message) is its error event, then `data: [DONE]`: the openai client raises
    APIError with them. Before (wire44b) no keep-alive went while it was queued: the plain 400 came once a slot freed."""
    import httpx
    import msgspec
    import openai

    rt = svc.runtime
    _, client = _keepalive_client(svc, lambda: None)
    monkeypatch.setattr(rt, "settings", msgspec.structs.replace(rt.settings, max_prompt_tokens=3))
    ask = {"model": "pluralign", "messages": HI, "max_tokens": 4, "stream": True}
    with pytest.raises(openai.BadRequestError) as plain:  # free slots, the default sse_keepalive_s: planned long before a keep-alive
        list(client.chat.completions.create(**ask))
    assert plain.value.param == "messages" and "the prompt is" in plain.value.message, plain.value.message
    monkeypatch.setattr(rt, "settings", msgspec.structs.replace(rt.settings, sse_keepalive_s=0.05))

    def through_openai(slots):
        watched, client = _keepalive_client(svc, slots.free)
        with pytest.raises(openai.APIError) as told:
            list(client.chat.completions.create(**ask))
        return watched.read, told.value

    (wire, error), in_time = _while_held(rt, through_openai)
    assert in_time and not isinstance(error, openai.APIStatusError), error
    assert (error.param, error.code, error.message) == (plain.value.param, plain.value.code, plain.value.body["message"])
    assert error.body["type"] == "invalid_request_error" and wire.startswith(b": keep-alive\n\n"), bytes(wire)

    def raw(slots):  # the whole stream, as the openai client stopped reading at the error
        with httpx.Client(transport=_Watched(slots.free), timeout=120) as http:
            return http.post(svc.url + "/v1/chat/completions", json=ask, headers={"Authorization": f"Bearer {svc.keys['acme']}"}).text

    wire, in_time = _while_held(rt, raw)
    assert in_time and wire.startswith(": keep-alive\n\n") and '"param":"messages"' in wire and wire.endswith("data: [DONE]\n\n"), wire


def test_an_n2_stream_out_of_disk_space_says_507_before_or_after_its_keep_alive(svc, monkeypatch, caplog):
    """A plain OSError (ENOSPC) raised while an n > 1 stream's candidates are made is the 507 a request answers for
    it before a keep-alive went; after it the error event said "500 generation failed: OSError" (wire44b: only the
    store's own error was mapped). Now the event carries the 507, its code and its message, and the log line names
    the stream."""
    import errno
    import threading

    import msgspec
    import openai

    rt = svc.runtime
    commented = threading.Event()

    def out_of_space(*args, **kwargs):
        if rt.settings.sse_keepalive_s < 1:  # fail once the client has read the keep-alive
            assert commented.wait(30)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rt.generator, "generate", out_of_space)
    monkeypatch.setattr(rt.generator, "generate_styled", out_of_space, raising=False)
    watched, client = _keepalive_client(svc, commented.set)
    ask = {"model": "pluralign", "messages": HI, "user": "kai", "n": 2, "max_tokens": 8, "stream": True}
    with pytest.raises(openai.APIStatusError) as plain:
        list(client.chat.completions.create(**ask))
    assert plain.value.status_code == 507 and plain.value.code == "insufficient_storage", plain.value
    monkeypatch.setattr(rt, "settings", msgspec.structs.replace(rt.settings, sse_keepalive_s=0.05))
    watched.read.clear()
    caplog.clear()
    with pytest.raises(openai.APIError) as told:
        list(client.chat.completions.create(**ask))
    assert not isinstance(told.value, openai.APIStatusError) and watched.read.startswith(b": keep-alive\n\n"), told.value
    assert (told.value.code, told.value.message) == (plain.value.code, plain.value.body["message"]), told.value.message
    assert told.value.body["type"] == plain.value.body["type"]
    lines = [r.getMessage() for r in caplog.records if r.name == "pluralign.service" and "answered 507" in r.getMessage()]
    assert len(lines) == 1 and re.match(r"stream chatcmpl-[0-9a-f]{32} answered 507: ", lines[0]), lines


def _metric(svc, name: str) -> float:
    import httpx

    for line in httpx.get(svc.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.parametrize("n", [1, 2])
def test_a_queued_stream_left_after_its_keep_alive_never_runs_and_gives_its_place_back(svc, monkeypatch, n):
    """wire44b left it untested (reviewwb44): a client that read the keep-alive of a stream still waiting for a
    generation slot and then closed its connection. The queued chat leaves the queue (the tenant's place is given
    back at once), is counted cancelled once, and never runs: once the slots free, nothing is planned or generated
    for it (a slot handed to a chat nobody reads would hold it for a whole answer)."""
    import threading
    import time

    import httpx
    import msgspec

    from service.chat import controllers

    rt = svc.runtime
    monkeypatch.setattr(rt, "settings", msgspec.structs.replace(rt.settings, sse_keepalive_s=0.05))
    planned = threading.Event()
    plan_for = controllers.plan_for

    def watched_plan(*args, **kwargs):
        planned.set()
        return plan_for(*args, **kwargs)

    monkeypatch.setattr(controllers, "plan_for", watched_plan)
    cancelled = _metric(svc, "pluralign_chat_cancelled_total")
    ask = {"model": "pluralign", "messages": HI, "n": n, "max_tokens": 4, "stream": True, "pluralign": {"candidates": n}}
    slots = _HeldSlots(rt)
    try:
        with httpx.Client(timeout=30) as http, \
                http.stream("POST", svc.url + "/v1/chat/completions", json=ask, headers={"Authorization": f"Bearer {svc.keys['acme']}"}) as r:
            assert r.status_code == 200
            read = b""
            for piece in r.iter_raw():  # leaving the loop closes the connection (httpcore: the body not read whole)
                read += piece
                if b": keep-alive\n\n" in read:
                    assert rt.scheduler.stats()["waiting"] == 1 and not planned.is_set(), rt.scheduler.stats()
                    break
            assert read.startswith(b": keep-alive\n\n"), read
        # the connection is closed here, the chat still queued behind the held slots
        deadline = time.monotonic() + 20
        while rt.scheduler.stats()["waiting"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rt.scheduler.stats()["waiting"] == 0, rt.scheduler.stats()
    finally:
        slots.free()
    assert all(holder.result(30) for holder in slots.holders)
    deadline = time.monotonic() + 20
    while rt.scheduler.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not planned.is_set(), "a chat whose client had left was planned once a slot freed"
    assert _metric(svc, "pluralign_chat_cancelled_total") == cancelled + 1


class _LosesFirstAnswer:
    """An httpx transport that hands the first chat's request on to the service, reads its whole answer, and then
    raises ReadTimeout: the answer lost on its way back, as a client times out just as it comes."""

    def __init__(self):
        import httpx

        self.inner, self.lost, self.sent = httpx.HTTPTransport(), [], []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def handle_request(self, request):
        import httpx

        response = self.inner.handle_request(request)
        response.read()
        self.sent.append((dict(request.headers), response.status_code, dict(response.headers)))
        if request.url.path.endswith("/chat/completions") and not self.lost:
            self.lost.append(json.loads(response.content))
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def _interactions(svc, tenant: str, user: str) -> int:
    return len(svc.runtime.store.interactions_for(tenant, user))


def test_a_chat_retried_with_its_idempotency_key_is_answered_once(svc):
    """The openai client retries a chat whose answer was lost (here: read, then a timeout) with the same request and
    the headers it was given: sent with `Idempotency-Key`, the retry gets the first answer and nothing is generated or
    stored again. Before session older49 the key was ignored: a second generation, a second interaction stored."""
    import httpx
    from openai import OpenAI

    lossy = _LosesFirstAnswer()
    client = OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=2, timeout=120,
                    http_client=httpx.Client(transport=lossy))
    generated = svc.runtime.metrics.registry.get_sample_value("pluralign_chat_completions_total", {"stream": "false"})
    before = _interactions(svc, "acme", "ivy")
    raw = client.chat.completions.with_raw_response.create(
        model="pluralign", messages=HI, user="ivy", max_tokens=4, extra_headers={"Idempotency-Key": "ivy-chat-1"})
    completion = raw.parse()
    assert [s[0]["idempotency-key"] for s in lossy.sent] == ["ivy-chat-1", "ivy-chat-1"]  # the client sent it twice
    assert completion.id == lossy.lost[0]["id"] and completion.choices[0].message.content == lossy.lost[0]["choices"][0]["message"]["content"]
    assert raw.headers.get("idempotent-replayed") == "true"
    assert _interactions(svc, "acme", "ivy") == before + 1
    assert svc.runtime.metrics.registry.get_sample_value("pluralign_chat_completions_total", {"stream": "false"}) == generated + 1
    # another tenant's chat of a user of the same name with the same key is its own
    other = OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["globex"], max_retries=0, timeout=120)
    theirs = other.chat.completions.with_raw_response.create(
        model="pluralign", messages=HI, user="ivy", max_tokens=4, extra_headers={"Idempotency-Key": "ivy-chat-1"})
    assert theirs.parse().id != completion.id and theirs.headers.get("idempotent-replayed") is None
    assert _interactions(svc, "globex", "ivy") == 1
    with svc.client() as c:  # the user's DELETE forgets their chats' answers: the key then asks a new chat
        assert c.delete("/v1/users/ivy").status_code == 200
        again = c.post("/v1/chat/completions", headers={"Idempotency-Key": "ivy-chat-1"},
                       json={"model": "pluralign", "messages": HI, "user": "ivy", "max_tokens": 4})
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers and again.json()["id"] != completion.id
    with svc.client() as c:  # `store: false`: nothing of the chat kept, its answer not remembered either
        unkept = [c.post("/v1/chat/completions", headers={"Idempotency-Key": "ivy-unkept"}, json={
            "model": "pluralign", "messages": HI, "user": "ivy", "max_tokens": 4, "store": False}) for _ in range(2)]
    assert [r.status_code for r in unkept] == [200, 200] and unkept[0].json()["id"] != unkept[1].json()["id"]
    assert "idempotent-replayed" not in unkept[1].headers


def test_anonymous_chats_of_two_api_keys_of_one_tenant_do_not_share_their_idempotency_keys(svc):
    """A chat naming no user is remembered per API key: two clients of one tenant (each its own key) that send the same
    key with the same body (an SDK's fixed key, a counter from 1) each get their own answer, and each one's retry its
    own. Before session keys50 the tenant's anonymous chats shared one key space: the second client was answered the
    first's chat (`Idempotent-Replayed: true`), nothing generated for it."""
    from openai import OpenAI

    from service.auth import hash_key, key_id

    second_key = svc.runtime.keys.issue("acme", name="keys50-second-app")
    try:
        body = {"model": "pluralign", "messages": HI, "max_tokens": 1, "extra_headers": {"Idempotency-Key": "chat-1"}}
        ours, theirs = (OpenAI(base_url=svc.url + "/v1", api_key=k, max_retries=0, timeout=120) for k in (svc.keys["acme"], second_key))
        first = ours.chat.completions.with_raw_response.create(**body)
        other = theirs.chat.completions.with_raw_response.create(**body)
        assert other.headers.get("idempotent-replayed") is None and other.parse().id != first.parse().id
        for client, answer in ((ours, first), (theirs, other)):  # each one's retry: its own answer
            again = client.chat.completions.with_raw_response.create(**body)
            assert again.headers.get("idempotent-replayed") == "true" and again.parse().id == answer.parse().id
    finally:
        svc.runtime.keys.revoke(key_id(svc.runtime.keys.keys[hash_key(second_key)]))


def test_a_chat_key_in_use_or_reused_for_another_chat_is_refused_naming_it(svc):
    """A copy sent while the first still runs is a 409 with Retry-After (nothing begun), and the openai client's own
    retries then get the first answer; the same key with another body is a 422; two keys, or a bad one, a 400."""
    import threading

    import openai
    from openai import OpenAI

    from tests.serving import generation_held

    key = {"Idempotency-Key": "jo-chat-1"}
    body = {"model": "pluralign", "messages": HI, "user": "jo", "max_tokens": 4}
    first: list = []
    with generation_held(svc.runtime) as release, svc.client() as c:
        runner = threading.Thread(target=lambda: first.append(svc.client().post("/v1/chat/completions", json=body, headers=key, timeout=60)))
        runner.start()
        for _ in range(200):  # until the first copy holds the key
            if svc.runtime.metrics.generation_queue._value.get() > 0:
                break
            threading.Event().wait(0.02)
        copy = c.post("/v1/chat/completions", json=body, headers=key)
        assert copy.status_code == 409 and copy.headers["retry-after"] == "1", copy.text
        assert copy.json()["error"]["param"] == "Idempotency-Key" and copy.json()["error"]["code"] == "idempotency_key_in_use"
        threading.Timer(0.3, release).start()
        # the openai client retries the 409 after its Retry-After, by then answered
        retried = OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=3, timeout=60).chat.completions.create(
            extra_headers=key, **body)
        runner.join(60)
    assert first[0].status_code == 200 and retried.id == first[0].json()["id"]
    with pytest.raises(openai.UnprocessableEntityError) as reused:
        OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0).chat.completions.create(
            extra_headers=key, **{**body, "max_tokens": 5})
    assert reused.value.param == "Idempotency-Key" and reused.value.code == "idempotency_key_reused"
    with svc.client() as c:
        bad = c.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": "two words"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "Idempotency-Key"
        two = c.post("/v1/chat/completions", json=body, headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")])
        assert two.status_code == 400 and two.json()["error"]["param"] == "Idempotency-Key"


def test_a_tenants_flood_of_keyed_feedback_does_not_delay_another_tenants(svc, monkeypatch):
    """Keyed feedback takes the tenant's turn on the request threads as the rest of feedback's checks do
    (`service.scheduler.TenantThreads`): acme's flood of keyed comparisons, five per request thread, each held in its
    look for what the key stored (the user's history: a slow store), leaves globex's keyed and unkeyed feedback answered
    at once, while every one of acme's still waits. (Reuses this module's service: the only one started with the
    tiny models at hand.)"""
    import threading

    from service.scheduler import request_threads

    store, release, held = svc.runtime.store, threading.Event(), []
    history = store.history

    def slow_history(tenant, user, *args, **kwargs):
        if tenant == "acme" and user.startswith("flood"):
            held.append(user)
            release.wait(60)
        return history(tenant, user, *args, **kwargs)

    monkeypatch.setattr(store, "history", slow_history)
    flood, answers = 5 * request_threads(), []

    def send(i: int) -> None:
        with svc.client("acme") as acme:
            answers.append(acme.post("/v1/feedback", headers={"Idempotency-Key": f"flood-{i}"}, json={
                "type": "comparison", "user": f"flood{i}", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}).status_code)

    senders = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(flood)]
    try:
        for t in senders:
            t.start()
        for _ in range(500):  # until acme's flood holds the threads it may take
            if len(held) >= request_threads() // 2:
                break
            threading.Event().wait(0.02)
        with svc.client("globex") as globex:
            body = {"type": "comparison", "user": "gil", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}
            keyed = globex.post("/v1/feedback", json=body, headers={"Idempotency-Key": "gil-1"}, timeout=10)
            plain = globex.post("/v1/feedback", json=body, timeout=10)
        meanwhile = (len(answers), len(held))
    finally:
        release.set()
        for t in senders:
            t.join(60)
    assert keyed.status_code == plain.status_code == 201, (keyed.text, plain.text)
    # answered while acme's flood still held the threads it may take (`tenant_share`) and queued the rest
    assert meanwhile[0] == 0 and meanwhile[1] < flood, meanwhile
    assert answers.count(201) == flood, answers


def test_the_azure_openai_client_sending_api_key_is_told_to_send_authorization_bearer(svc):
    """Session http54: the openai library's `AzureOpenAI` client sends its key as `api-key` (Azure OpenAI's header), which
    this service (OpenAI-compatible: `Authorization: Bearer`) does not read: its 401 said "missing `Authorization: Bearer
    <API key>` header" as for a request with no key at all. The 401 now names the header it got and says to send the key
    as `Authorization: Bearer`, never showing the key; Anthropic's `x-api-key` likewise, and nothing is said of a
    request that sent neither."""
    import httpx
    import openai

    key = svc.keys["acme"]
    azure = openai.AzureOpenAI(base_url=svc.url + "/v1", api_key=key, api_version="2024-06-01", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        azure.models.list()
    message = refused.value.body["message"] if isinstance(refused.value.body, dict) else str(refused.value)
    assert "`api-key` header" in message and "`Authorization: Bearer <API key>`" in message and key not in message, message
    anthropic_style = httpx.get(svc.url + "/v1/models", headers={"x-api-key": key})
    assert anthropic_style.status_code == 401 and "`x-api-key` header" in anthropic_style.json()["error"]["message"], anthropic_style.text
    assert key not in anthropic_style.text
    bare = httpx.get(svc.url + "/v1/models")
    assert bare.status_code == 401 and bare.json()["error"]["message"] == "missing `Authorization: Bearer <API key>` header", bare.text
    assert openai.OpenAI(base_url=svc.url + "/v1", api_key=key, max_retries=0).models.list().data  # Bearer: served


def _requests_answered(svc, status: int) -> float:
    import httpx

    line = f'pluralign_http_requests_total{{method="POST",route="/v1/chat/completions",status="{status}"}} '
    return next((float(x.split()[1]) for x in httpx.get(svc.url + "/metrics").text.splitlines() if x.startswith(line)), 0.0)


@pytest.mark.parametrize("waits_for", ["a slot", "its candidates"])
def test_a_stream_whose_async_client_is_cancelled_before_its_first_event_is_a_499_not_an_unhandled_500(svc, caplog, waits_for):
    """Session newsvc55, AsyncOpenAI: a streamed chat whose task was cancelled (a user closing the tab, an app's timeout)
    before the stream's first event, while it waited for a generation slot or (n > 1) for its candidates, gave its place
    back but was logged as an unhandled error with a traceback (`InvalidStateError: Result is not set`: the wait for the
    first event, just cancelled, was read as if it had ended) and answered and counted as a 500, which a 5xx alert
    reads as the service failing. It is a 499 (the client left), counted cancelled once, no error logged."""
    import asyncio
    import time

    from openai import AsyncOpenAI

    from tests.serving import generation_held

    rt = svc.runtime
    n = 1 if waits_for == "a slot" else 2
    ask = {"model": "pluralign", "messages": HI, "user": "kai", "n": n, "max_tokens": 8, "stream": True,
           "extra_body": {"pluralign": {"candidates": n}}}
    before = {status: _requests_answered(svc, status) for status in (499, 500)}
    cancelled = _metric(svc, "pluralign_chat_cancelled_total")

    async def leave_while_it_waits() -> None:
        client = AsyncOpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0, timeout=30)
        chat = asyncio.ensure_future(client.chat.completions.create(**ask))
        busy = "waiting" if waits_for == "a slot" else "running"
        deadline = time.monotonic() + 20
        while not rt.scheduler.stats()[busy] and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert rt.scheduler.stats()[busy] == 1 and not chat.done(), rt.scheduler.stats()
        chat.cancel()
        with pytest.raises(asyncio.CancelledError):
            await chat
        await client.close()

    caplog.clear()
    with generation_held(rt, keepalive_s=30) as release:  # no keep-alive goes: the client leaves before any event
        slots = _HeldSlots(rt) if waits_for == "a slot" else None
        try:
            asyncio.run(leave_while_it_waits())
            deadline = time.monotonic() + 20
            while _requests_answered(svc, 499) + _requests_answered(svc, 500) == sum(before.values()) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            if slots is not None:
                slots.free()
            release()
    assert {status: _requests_answered(svc, status) - before[status] for status in (499, 500)} == {499: 1, 500: 0}
    unhandled = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert unhandled == [], unhandled
    deadline = time.monotonic() + 20
    while rt.scheduler.stats()["running"] + rt.scheduler.stats()["waiting"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rt.scheduler.stats()["running"] + rt.scheduler.stats()["waiting"] == 0, rt.scheduler.stats()
    assert _metric(svc, "pluralign_chat_cancelled_total") == cancelled + 1


def test_the_export_s_user_line_counts_what_the_export_holds(client, svc):
    """Session newsvc55: the full export's `user` line gave `n_interactions` and `n_preferences` as the user's row held
    them at its last refit, which a chat does not make: a user with one comparison and three chats (the `openai`
    client's) was exported with `"n_interactions": 0` above three `interaction` lines, while the profile said 3. The
    line now counts the rows the export holds, as the profile does."""
    with svc.client() as c:
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "ned", "prompt": "Tea or coffee?", "chosen": "Tea.",
                                             "rejected": "Coffee."}).status_code == 201
        for i in range(3):
            client.chat.completions.create(model="pluralign", user="ned", max_tokens=2, messages=[{"role": "user", "content": f"Hi {i}"}],
                                           extra_body={"pluralign": {"candidates": 1}})
        counts = c.get("/v1/users/ned").json()["counts"]
        lines = [json.loads(line) for line in c.get("/v1/users/ned/export").text.splitlines()]
    user = next(line for line in lines if line["type"] == "user")
    held = {kind: sum(line["type"] == kind for line in lines) for kind in ("preference", "interaction")}
    assert held == {"preference": 1, "interaction": 3}, held
    assert (user["n_preferences"], user["n_interactions"]) == (held["preference"], held["interaction"]) == \
        (counts["preferences"], counts["interactions"]), (user, counts)


def test_the_export_s_user_line_counts_the_lines_it_sends_when_a_chat_is_stored_meanwhile(client, svc, monkeypatch):
    """Review of newsvc55: the `user` line's counts were the store's counts read after the export fixed the versions its
    lines come from, so a chat (or feedback) stored in between was counted but not sent: `"n_interactions": 2` above one
    `interaction` line. The counts are now those of the rows the export reads. The chat meanwhile is stored by the real
    store the moment the export has fixed its version (where a concurrent chat's write would land)."""
    import msgspec

    rt = svc.runtime
    with svc.client() as c:  # a user row (a chat alone makes none, nor a `user` line)
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "meg", "prompt": "Tea or coffee?", "chosen": "Tea.",
                                             "rejected": "Coffee."}).status_code == 201
    client.chat.completions.create(model="pluralign", user="meg", max_tokens=2, messages=[{"role": "user", "content": "Hi"}],
                                   extra_body={"pluralign": {"candidates": 1}})
    held = rt.store.interactions_for("acme", "meg")
    assert len(held) == 1, held
    real = rt.store.interactions_in_order

    def then_a_chat_is_stored(tenant, user_id, *args, **kwargs):
        rows = real(tenant, user_id, *args, **kwargs)
        rt.store.add_interaction(msgspec.structs.replace(held[0], response_id=held[0].response_id + "x", created_at=held[0].created_at + 1))
        return rows

    monkeypatch.setattr(rt.store, "interactions_in_order", then_a_chat_is_stored)
    with svc.client() as c:
        lines = [json.loads(line) for line in c.get("/v1/users/meg/export").text.splitlines()]
    user = next(line for line in lines if line["type"] == "user")
    assert user["n_interactions"] == sum(line["type"] == "interaction" for line in lines) == 1, user


def test_a_chat_no_generation_process_could_serve_is_a_503_saying_send_it_again(svc, monkeypatch):
    """The generator's calls raise what `ProcessGenerator` raises when its child died during the chat or a new one
    could not start (`GeneratorUnavailable`): the client reads "send it again" as a 503 with Retry-After in the OpenAI
    error shape (a stream whose headers went: an error event of 503), never a 500 `internal error`. The same over a real
    child that is killed, and a user's adapter whose load finds it gone: tests/service/test_process_generator.py
    (`make test-generation`, seconds of child starts); here the service's answer, without a child."""
    from pluralign.policy.process import GeneratorUnavailable

    def gone(*args, **kwargs):
        raise GeneratorUnavailable("the generation process exited (code -9) during the call")

    generator = svc.runtime.generator
    stream = generator.stream

    def dies_after_a_piece(*args, **kwargs):  # the child dies once the stream's first piece went to the client
        pieces = stream(*args, **kwargs)
        yield next(pieces)
        pieces.close()
        gone()

    def error_event(streamed) -> dict:
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]"), streamed.text[-400:]
        return json.loads(streamed.text.rstrip().split("\n\n")[-2].removeprefix("data: "))["error"]

    chat = {"model": "pluralign", "messages": HI, "max_tokens": 4}
    one = {**chat, "stream": True, "user": "gone", "pluralign": {"rerank": False}}  # one candidate: streamed as generated
    with svc.client() as c:
        monkeypatch.setattr(generator, "stream", dies_after_a_piece)
        errors = [error_event(c.post("/v1/chat/completions", json=one))]
        for name in ("generate", "generate_styled", "stream"):
            monkeypatch.setattr(generator, name, gone)
        errors.append(error_event(c.post("/v1/chat/completions", json=one)))  # gone before its first piece
        # a plain chat, and n > 1 streamed (every candidate generated before its first event)
        for body in (chat, {**chat, "stream": True, "n": 2}):
            answer = c.post("/v1/chat/completions", json=body)
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "10"
            errors.append(answer.json()["error"])
    for error in errors:
        assert (error["type"], error["code"]) == ("service_unavailable_error", "unavailable"), error
        assert "send it again" in error["message"] and "exited" not in error["message"], error  # its cause: the log's


def test_a_stream_whose_users_adapter_finds_no_generation_process_is_a_503(svc, monkeypatch, tmp_path):
    """The third chat of the same-named test in tests/service/test_process_generator.py (`make test-generation`): a user
    with an adapter streams, and loading it into the generator as the chat is planned finds no generation process (its
    child died and the new one did too): a 503 with Retry-After before the stream's headers, not a 500. The generator's
    load raises what `ProcessGenerator` raises then; the adapter is registered, never loaded."""
    import numpy as np
    from peft import LoraConfig
    from safetensors.numpy import save_file

    from pluralign.policy.process import GeneratorUnavailable
    from service.users.services import register_adapter

    folder = tmp_path / "adapter"
    LoraConfig(r=2, target_modules=["q_proj", "v_proj"]).save_pretrained(str(folder))
    save_file({"base_model.model.lora_A.weight": np.zeros((2, 4), np.float32)}, str(folder / "adapter_model.safetensors"))
    register_adapter(svc.runtime, "acme", "tuned-gone", folder)

    def gone(*args, **kwargs):
        raise GeneratorUnavailable("the generation process exited (code -9) while loading adapter u again")

    monkeypatch.setattr(svc.runtime.generator, "load_adapter", gone)
    body = {"model": "pluralign", "messages": HI, "max_tokens": 2, "user": "tuned-gone", "stream": True,
            "pluralign": {"rerank": False}}
    with svc.client() as c:
        answer = c.post("/v1/chat/completions", json=body)
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "10"
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("service_unavailable_error", "unavailable"), error
    assert "send it again" in error["message"] and "exited" not in error["message"], error
