"""Session 58 (break): a hostile tenant against the running service, driven over real HTTP."""

from __future__ import annotations

import gc

import pytest

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
