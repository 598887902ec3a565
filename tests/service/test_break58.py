"""Session 58 (break, and its review): a hostile tenant against the running service, driven over real HTTP."""

from __future__ import annotations

import gc
import threading
import uuid

import pytest

from tests.holders import assert_none_hold
from tests.service.test_delete_journal import wait_until
from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, sentence_encoder):
    """The plain MiniLM encoder: tests/service/conftest.py's `minilm` keeps every text it embedded in memory."""
    data = tmp_path_factory.mktemp("break58-data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, sentence_encoder, adapter_every=1_000_000)
    with server:
        yield service


def test_texts_scored_are_not_kept_in_memory_after_their_answer(svc):
    """The named features of an answer's text (`pluralign.user.features`) were cached with the text itself as the key,
    for 65,536 texts: each text a tenant had scored (`/v1/rewards/score` for a user with a model) or stored stayed in
    the process's memory for good, up to 20,000 characters each (80 KB of emoji), 5 GB in all, whoever sent them
    (memory every tenant's requests share), and after their user's DELETE. 12 texts of 11,000 emoji a request, each
    ~44 KB in memory: 60 such requests held 36 MB more in `pluralign serve`. Now the cache is keyed by a digest of the
    text. And each request thread waiting for work held the last request it ran (`service.scheduler`: its body, its JSON
    decoded, its data), ~1.6 MB a thread here: either alone held 8.3-8.7 MB of these 4.2 MB of texts. The service runs
    in this process: what stays allocated after the answers (and their connection) is traced."""
    import tracemalloc

    sent = 8 * 12 * 11_000 * 4  # bytes of the texts as Python holds them (4 a character past U+FFFF)
    body = lambda k: {"user": "scorer58", "prompt": "Which?",  # noqa: E731
                      "responses": [f"{k}-{i} " + "\U0001f600" * 11_000 for i in range(12)]}
    with svc.client() as c:  # stated preferences alone give the user a model: their scores read the texts' features
        assert c.patch("/v1/users/scorer58/stated-preferences", json={"preferences": {"length": "more"}}).status_code == 200
        assert c.post("/v1/rewards/score", json=body("warm")).status_code == 200  # lazily built pieces built
    gc.collect()
    tracemalloc.start()
    try:
        with svc.client() as c:
            for k in range(8):
                status = c.post("/v1/rewards/score", json=body(k)).status_code
                assert status == 200, status

        def held() -> int:  # once the connection is closed (the server drops its last request then)
            gc.collect()
            return tracemalloc.get_traced_memory()[0]

        assert wait_until(lambda: held() < sent / 4), f"{held()} bytes still held after scoring texts of {sent} bytes"
    finally:
        tracemalloc.stop()


def test_a_deleted_users_feedback_is_not_held_in_memory(svc):
    """Review of break58. After a user's DELETE, threads waiting for more work still held the feedback they had last
    handled, until the next came (for good on a quiet service): the feedback log's writer its round (`batch`: the rows
    and their payload), the ingest worker its batch (`entries`), its encoder thread its call (the batch, and the
    vectors by text). Seen: each named in turn as the one before it was fixed. A marker in the texts finds any object
    still referring to one (threads' local variables are not gc objects: their frames are read)."""
    marker = uuid.uuid4().hex
    user = "gone-r58"
    with svc.client() as c:
        for i in range(8):
            body = {"type": "comparison", "user": user, "prompt": f"Question {i} {marker}?",
                    "chosen": f"Short {i} {marker}.", "rejected": f"A long answer {i} {marker}."}
            assert c.post("/v1/feedback", json=body).status_code == 201
        del body
        assert wait_until(lambda: not svc.runtime.ingest.log.pending_for("acme", user))  # moved by the ingest worker
        assert c.get(f"/v1/users/{user}").json()["counts"]["preferences"] == 8
        svc.runtime.wait_for_background()
        assert c.delete(f"/v1/users/{user}").status_code == 200
    assert_none_hold([marker])


def test_a_batch_given_up_for_a_pause_is_not_held_once_nothing_waits(svc, monkeypatch):
    """Review of break58. The ingest worker keeps the vectors of a batch it gave up for a flush or a pause (`given_up`,
    keyed by the texts) for that batch's next try; when a reader moved the batch's rows meanwhile, no next try came,
    and on a quiet service the texts stayed held for good, after their user's DELETE too."""
    ingest = svc.runtime.ingest
    marker = uuid.uuid4().hex
    user = "given-up-r58"
    embedding, go, embedded = threading.Event(), threading.Event(), threading.Event()
    embed = ingest._embed

    def held_embed(entries, *args):  # the worker's embedding of this user's batch waits for the test's pause
        if threading.current_thread().name == "ingest-embed" and any(e.key == ("acme", user) for e in entries):
            embedding.set()
            go.wait(30)
            try:
                return embed(entries, *args)
            finally:
                embedded.set()  # the worker's own embedding of the batch is over
        return embed(entries, *args)

    monkeypatch.setattr(ingest, "_embed", held_embed)
    with svc.client() as c:
        body = {"type": "comparison", "user": user, "prompt": f"Question {marker}?", "chosen": f"Short {marker}.",
                "rejected": f"A long answer {marker}."}
        assert c.post("/v1/feedback", json=body).status_code == 201
        del body
        assert embedding.wait(30)
        with ingest.paused():  # the worker, once embedded, gives the batch up for the pause
            go.set()
            # the batch is given up only if its embedding ends within the pause (at load 5-10 it once took 13.7 s: the
            # pause was over by then, nothing was given up, and the search's 20 s went waiting for it)
            assert embedded.wait(120)
            assert c.get(f"/v1/users/{user}").json()["counts"]["preferences"] == 1  # the read moves the rows itself
        assert wait_until(lambda: not ingest.log.pending_for("acme", user))
        assert c.delete(f"/v1/users/{user}").status_code == 200
    assert_none_hold([marker])
