"""Review 27b: a chat the service's stop (`cut_running`) meets once its answer is generated and being
stored has nothing left to stop: it is sent whole (a stream ends with its finish chunks and [DONE], no
error event), not told "send it again" after its interaction was stored (the retry stored it twice). A
chat cut before its answer is stored stores nothing and its client is told so."""

from __future__ import annotations

import json
import threading

import pytest

from service.app import cut_running
from tests.service import test_stop_chats
from tests.service.test_generation_fairness import CHAT

held = test_stop_chats.held  # the fixture: the tiny model, held (`HeldGenerator`), served


def events_of(r) -> list:
    return [line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")]


def hold_storing(rt, monkeypatch) -> tuple[threading.Event, threading.Event]:
    """The interaction's write waits for `release`; `storing` is set once it began."""
    storing, release = threading.Event(), threading.Event()
    add = rt.store.add_interaction

    def held_add(item):
        storing.set()
        assert release.wait(30)
        add(item)

    monkeypatch.setattr(rt.store, "add_interaction", held_add)
    return storing, release


@pytest.mark.slow  # `make test-generation`: the n = 2 twin of the one-choice stream below (the same hold on the store's write)
def test_an_n2_stream_cut_while_its_answer_is_stored_is_sent_whole_and_stored_once(held, monkeypatch):
    rt, app = held.runtime, held.server.server.config.app
    held.generator.release.set()  # generation runs through
    storing, release = hold_storing(rt, monkeypatch)
    answer: list = []

    def send() -> None:
        with held.client("acme") as c:
            answer.append(c.post("/v1/chat/completions", json={**CHAT, "user": "ann", "n": 2, "stream": True}))

    t = threading.Thread(target=send)
    t.start()
    assert storing.wait(30)
    cut_running(app)  # the grace is over while the generated answer is being stored
    release.set()
    t.join(30)
    r = answer[0]
    assert r.status_code == 200, r.text
    events = events_of(r)
    assert events[-1] == "[DONE]" and not any("error" in json.loads(e) for e in events[:-1]), events
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]} == {0, 1}, chunks
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert rt.store.count_interactions("acme", "ann") == 1


def test_an_n2_stream_cut_once_generated_but_before_it_is_stored_stores_nothing_and_says_so(held, monkeypatch):
    """The cut lands after the last token was generated (nobody checks `cancel` again) but before the
    answer is stored: nothing is stored, and the client is told to send it again (no event was sent yet,
    n = 2 generating every candidate first: a plain 503, `test_stop_chats`)."""
    rt, app = held.runtime, held.server.server.config.app
    held.generator.release.set()
    generated, go = threading.Event(), threading.Event()
    generate = held.generator.generate

    def generate_then_wait(*args, **kwargs):
        out = generate(*args, **kwargs)
        generated.set()
        assert go.wait(30)
        return out

    monkeypatch.setattr(held.generator, "generate", generate_then_wait)
    answer: list = []

    def send() -> None:  # plain candidates (`generate`), not styled ones
        with held.client("acme") as c:
            answer.append(c.post("/v1/chat/completions", json={**CHAT, "user": "ann", "n": 2, "stream": True,
                                                               "pluralign": {"styles": False}}))

    t = threading.Thread(target=send)
    t.start()
    assert generated.wait(30)
    assert cut_running(app) == 1
    go.set()
    t.join(30)
    test_stop_chats.assert_stopping(answer[0])
    assert rt.store.count_interactions("acme", "ann") == 0  # told to send it again: nothing of it was kept


def test_a_one_choice_stream_cut_while_its_answer_is_stored_is_sent_whole_and_stored_once(held, monkeypatch):
    """The same with n = 1, whose tokens stream as they are generated: the cut lands once the last one
    was sent, while the interaction is stored; the stream still ends with its finish chunk."""
    from pluralign.policy.generator import Generator

    rt, app = held.runtime, held.server.server.config.app
    monkeypatch.setattr(held.generator, "stream", Generator.stream.__get__(held.generator))  # the tiny model's own: it ends
    storing, release = hold_storing(rt, monkeypatch)
    answer: list = []

    def send() -> None:
        with held.client("acme") as c:
            answer.append(c.post("/v1/chat/completions", json={**CHAT, "user": "ann", "stream": True}))

    t = threading.Thread(target=send)
    t.start()
    assert storing.wait(30)
    cut_running(app)
    release.set()
    t.join(30)
    events = events_of(answer[0])
    assert events[-1] == "[DONE]" and not any("error" in json.loads(e) for e in events[:-1]), events
    assert json.loads(events[-2])["choices"][0]["finish_reason"] is not None, events
    assert rt.store.count_interactions("acme", "ann") == 1
