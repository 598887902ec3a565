"""A chat whose prompt embeds to an all-zero vector is answered, with no shots retrieved.

`RemoteEncoder` keeps a zero vector an OpenAI-compatible embedding server returns (it normalizes only
vectors of norm > 0), and some servers return one for a text with no tokens they keep. Before lib38's
check, `Store.search` gave such a vector no neighbours (LanceDB) or every row at distance 1 (the
cache), and the chat was answered. After it, `Store.search` raises StoreError for an all-zero vector,
and a chat of a user with stored feedback answered 500. Now the chat retrieves no shots for it (a
zero vector is near nothing) and answers as for a user without history.
"""

from __future__ import annotations

import numpy as np

from tests.service.tiny import start_service

BLANKISH = "¿?"


class ZeroForOneText:
    """The session's encoder, except that BLANKISH embeds to zeros (as a remote server may give)."""

    def __init__(self, encoder):
        self.inner = encoder
        self.encoder_id, self.dim = encoder.encoder_id, encoder.dim

    def encode(self, texts):
        vectors = np.array(self.inner.encode(list(texts)), np.float32)
        for i, text in enumerate(texts):
            if text == BLANKISH:
                vectors[i] = 0.0
        return vectors

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_prompt_that_embeds_to_zeros_is_answered_without_shots(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, ZeroForOneText(minilm))
    with server, svc.client("acme") as c:
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "bob", "prompt": "What should I cook for dinner?",
                                         "chosen": "A spicy vegetable curry.", "rejected": "A plain steak."})
        assert r.status_code == 201, r.text
        for _ in range(2):  # the history loaded from LanceDB, then from the cache
            chat = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "bob", "max_tokens": 3,
                                                         "messages": [{"role": "user", "content": BLANKISH}]})
            assert chat.status_code == 200, chat.text
            assert chat.json()["pluralign"]["history"] == []
