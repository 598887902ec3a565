"""Concurrent encodes share passes and each caller gets exactly its own vectors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from service.batching import BatchingEncoder


class SlowEncoder:
    encoder_id, dim = "slow", 2

    def __init__(self):
        self.calls = []

    def encode(self, texts):
        self.calls.append(len(texts))
        threading.Event().wait(0.02)  # a forward pass takes a while, so callers pile up
        if "boom" in texts:
            raise ValueError("cannot encode boom")
        return np.array([[len(t), ord(t[0])] for t in texts], np.float32)


def test_concurrent_calls_share_passes_and_get_their_own_rows():
    encoder = BatchingEncoder(SlowEncoder())
    results = {}

    def call(i):
        texts = [f"{chr(97 + i)}" * (j + 1) for j in range(i % 3 + 1)]
        results[i] = (texts, encoder.encode(texts))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for texts, vectors in results.values():
        assert vectors.tolist() == [[len(t), ord(t[0])] for t in texts]
    assert encoder.calls == 12 and encoder.passes < 12


def test_a_failed_pass_raises_in_its_callers_only():
    encoder = BatchingEncoder(SlowEncoder())
    with pytest.raises(ValueError, match="boom"):
        encoder.encode(["boom"])
    assert encoder.encode(["ok"]).tolist() == [[2, ord("o")]]


def test_callers_beyond_one_pass_are_served_by_later_passes():
    encoder = BatchingEncoder(SlowEncoder(), max_texts=2)
    out = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, encoder.encode(["x" * (i + 1), "y"]))) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(out[i].tolist() == [[i + 1, ord("x")], [1, ord("y")]] for i in range(5))
    assert max(encoder.encoder.calls) <= 2
