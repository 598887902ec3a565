"""Session 59 (held59): after a user's DELETE, nothing in the process holds their chats (prompts, answers), driven over
real HTTP; the holder search of `tests.holders` over the chat path."""

from __future__ import annotations

import gc
import json
import threading
import uuid

import pytest

from tests.holders import assert_none_hold
from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, sentence_encoder):
    """The plain MiniLM encoder: tests/service/conftest.py's `minilm` keeps every text it embedded in memory. A
    connection idle between requests is kept open 600 s (uvicorn's `timeout_keep_alive`, 5 s by default): what it
    holds is seen, not let go by its close before a check is done."""
    data = tmp_path_factory.mktemp("held59-data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, sentence_encoder, adapter_every=1_000_000)
    server.server.config.timeout_keep_alive = 600
    with server:
        yield service


def _streamed(c, body: dict) -> list[str]:
    """The choices' texts of a streamed chat, each joined from its pieces (a new str: the test's copy)."""
    pieces: dict[int, list[str]] = {}
    with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    pieces.setdefault(choice["index"], []).append(choice["delta"].get("content") or "")
    return ["".join(p) for _, p in sorted(pieces.items())]


def test_a_deleted_users_chats_are_not_held_in_memory_nor_by_garbage(svc):
    """After a user's comparisons, chats (JSON and streamed, one choice and several reranked, their shots retrieved
    from those comparisons, and one refused 400 after its plan retrieved their shots: its prompt is past
    `max_prompt_tokens`) and feedback on a chat's answer, then their DELETE sent on another connection (the
    operator's): no thread, executor's work item, cache, kept exception or connection holds their prompts or the
    answers they were served, nor does garbage awaiting a collection: the collector is off from the chats to the
    search (review held59: the scheduler's task held by its own future's callback, an error's traceback holding the
    frames holding the future, cycles each holding a chat's request and its answer or error, freed by the next full
    collection only: on a quiet service minutes, hours, or for good). A marker in their texts, and each answer of at
    least 20 characters, finds any object still referring to one. The connection the chats came on stays open, idle, as
    an SDK's pool keeps it: it held its last request's body and JSON (Litestar's `ScopeState` in its scope) until its
    next request or its close. One search (`collect=False`: live holders and garbage both) for both checks, which
    built the same feedback and chats each (freeze60)."""
    marker = uuid.uuid4().hex
    user = "chatter-h59"
    ask = lambda i, **more: {"model": "pluralign", "user": user, "max_tokens": 12, "seed": i,  # noqa: E731
                             "messages": [{"role": "user", "content": f"Tell me {i} about {marker}?"}], **more}
    answers: list[str] = []
    with svc.client() as c, svc.client() as operator:
        for i in range(3):
            body = {"type": "comparison", "user": user, "prompt": f"Tell me {i} about {marker}?",
                    "chosen": f"Briefly {i} {marker}.", "rejected": f"At length {i} {marker}."}
            assert c.post("/v1/feedback", json=body).status_code == 201
        del body
        svc.runtime.wait_for_background()
        gc.collect()
        gc.disable()
        try:
            r = c.post("/v1/chat/completions", json=ask(1))
            assert r.status_code == 200, r.text
            assert r.json()["pluralign"]["history"], "no shot retrieved: the chat read none of the user's comparisons"
            answers += [ch["message"]["content"] for ch in r.json()["choices"]]
            r = c.post("/v1/chat/completions", json=ask(2, n=2, pluralign={"candidates": 3, "rerank": True}))
            assert r.status_code == 200, r.text
            answers += [ch["message"]["content"] for ch in r.json()["choices"]]
            assert c.post("/v1/feedback", json={"type": "choice", "response_id": r.json()["id"], "chosen_index": 1}).status_code == 201
            answers += _streamed(c, ask(3, n=2, pluralign={"candidates": 2, "rerank": True}))
            answers += _streamed(c, ask(4))
            long = {"role": "user", "content": " ".join(["word"] * 1500) + f" {marker}?"}
            r = c.post("/v1/chat/completions", json=ask(5, messages=[long]))
            assert r.status_code == 400 and "max_prompt_tokens" in r.text, r.text
            del r, long
            svc.runtime.wait_for_background()
            assert operator.delete(f"/v1/users/{user}").status_code == 200
            texts = [marker, *(a for a in answers if len(a) >= 20)]
            del answers
            assert_none_hold(texts, collect=False)
        finally:
            gc.enable()


def test_a_batch_that_failed_is_not_held_while_the_ingest_worker_pauses(svc, monkeypatch):
    """The ingest worker, after a failed batch, pauses (1 s, doubled with each failure in a row, up to 5 s) before it
    tries again. It paused inside its `except`: the error being handled, its traceback (the frames of the failed
    batch's calls) and the worker's `entries` held that batch's rows for the whole pause, and `given_up` the vectors,
    keyed by their texts, of the batch it had given up for an operator's pause just before, so a DELETE of their user
    meanwhile left their texts in memory. Here one user's batch is given up for a pause (`Ingestor.paused`), then
    fails once (the store's error) when taken again; the worker's pause after it is held open by the test until it
    checked that, once the user is deleted, nothing holds their texts."""
    import logging

    from tests.service.tiny import AskedFrom

    ingest = svc.runtime.ingest
    marker = uuid.uuid4().hex
    user = "failed-h59"
    embedding, go, pausing, resume = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    embed, move_checked, pause = ingest._embed, ingest._move_checked, ingest._pause
    ours = lambda entries: any(e.key == ("acme", user) for e in entries)  # noqa: E731

    def held_embed(entries, *args):  # the worker's first embedding of this user's batch waits for the operator's pause
        if threading.current_thread().name == "ingest-embed" and ours(entries) and not go.is_set():
            embedding.set()
            go.wait(30)
        return embed(entries, *args)

    def failing_once(entries, *args, **kwargs):  # the store fails this user's batch, once
        if not pausing.is_set() and ours(entries):
            raise OSError(5, "Input/output error (the test's)")
        return move_checked(entries, *args, **kwargs)

    def held_pause(failing: int) -> int:  # the worker's pause after that failure lasts until the test's checks are done
        if threading.current_thread().name == "ingest" and not pausing.is_set():
            pausing.set()
            resume.wait(60)
            return failing + 1
        return pause(failing)

    # pytest's log capture keeps each record, and a logged failure's traceback keeps its frames (the rows): not here
    monkeypatch.setattr(logging.getLogger("pluralign.store"), "propagate", False)
    monkeypatch.setattr(ingest, "_embed", held_embed)
    monkeypatch.setattr(ingest, "_move_checked", failing_once)
    monkeypatch.setattr(ingest, "_pause", held_pause)
    worker = AskedFrom(ingest._worker, "ingest")
    monkeypatch.setattr(ingest, "_worker", worker)
    try:
        with svc.client() as c:
            for i in range(3):
                body = {"type": "comparison", "user": user, "prompt": f"Question {i} {marker}?",
                        "chosen": f"Short {i} {marker}.", "rejected": f"A long answer {i} {marker}."}
                assert c.post("/v1/feedback", json=body).status_code == 201
            del body
            assert embedding.wait(60), "the ingest worker did not embed the user's batch"
            worker.asked.clear()  # (asked as the worker took the batch)
            with ingest.paused():
                go.set()
                assert worker.asked.wait(60)  # embedded, it waits for the pause's end: the batch is given up
            assert pausing.wait(60), "the ingest worker did not pause after the failed batch"
            assert c.delete(f"/v1/users/{user}").status_code == 200
        assert_none_hold([marker])
        assert not resume.is_set() and pausing.is_set()  # all checked during the worker's pause
    finally:
        go.set()
        resume.set()


def test_the_generation_process_holds_no_chat_once_it_answered(tiny_generator_dir):
    """The generation process (`pluralign.policy.process`, setting `generation_process`) read each call into its loop's
    variables (`message`, `args`: the chat's messages, the user's retrieved shots among them) and kept them until the
    next call came: on a quiet service for good, after the user's DELETE too (which cannot reach that process). Its
    loop, `_serve`, runs here on a thread of this process over a real pipe, so what it still holds once it answered
    is searched as in the service's own process."""
    import multiprocessing

    from pluralign.policy.generator import Sampling
    from pluralign.policy.process import _serve

    marker = uuid.uuid4().hex
    parent, child = multiprocessing.Pipe()
    served = threading.Thread(target=_serve, args=(child, str(tiny_generator_dir), None), daemon=True, name="generation-child")
    served.start()
    try:
        assert parent.poll(120) and parent.recv()[0] == "ready"
        parent.send(("generate", ([{"role": "user", "content": f"Tell me about {marker}?"}], 2, Sampling(max_tokens=4, seed=0)),
                     1, "acme", False))
        kinds = []
        while not kinds or kinds[-1] not in ("ok", "failed", "cancelled"):
            assert parent.poll(120), kinds
            kinds.append(parent.recv()[0])
        assert kinds == ["began", "ok"], kinds
        assert_none_hold([marker])
    finally:
        parent.close()  # the loop ends at the closed pipe
        served.join(30)
