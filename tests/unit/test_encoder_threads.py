"""The service encodes from many threads at once (request handlers, the background ingest). An
encoder first counts the tokens of the texts it will cut (without truncation) and then encodes them
(with truncation and padding) on the same fast tokenizer, whose truncation and padding are state of
the one Rust object: two threads interleaving those calls made a batch without padding, and a chat
or onboarding request failed with "Unable to create tensor ..." (seen by a hostile helper, 1 request
in 24 with 8 threads). Each encoder now encodes one batch at a time; since session 42 it counts on a copy of
its own (never truncating or padding, so its settings never change), outside the encoder's turns."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor


class Watched:
    """Wraps a tokenizer class's `__call__`: records how many calls are inside one tokenizer object at
    once (each call lingers, to widen the window), and the truncation each object was called with."""

    def __init__(self, call):
        self._call = call
        self._lock = threading.Lock()
        self.inside: dict[int, int] = {}
        self.most: dict[int, int] = {}
        self.truncation: dict[int, set] = {}

    def __call__(self, tokenizer, *args, **kwargs):
        me = id(tokenizer)
        with self._lock:
            self.inside[me] = self.inside.get(me, 0) + 1
            self.most[me] = max(self.most.get(me, 0), self.inside[me])
            self.truncation.setdefault(me, set()).add(kwargs.get("truncation"))
        try:
            time.sleep(0.02)
            return self._call(tokenizer, *args, **kwargs)
        finally:
            with self._lock:
                self.inside[me] -= 1


def test_sentence_encoder_tokenizes_one_batch_at_a_time(minilm, monkeypatch):
    encoder = minilm.encoder  # the model itself, not the session's embedding cache in front of it
    kind = type(encoder.model.tokenizer)
    watched = Watched(kind.__call__)
    monkeypatch.setattr(kind, "__call__", lambda self, *a, **k: watched(self, *a, **k))
    texts = [["short."], ["a longer text " * 40, "tiny"], ["word " * 300], ["two", "texts here"]] * 4
    with ThreadPoolExecutor(8) as pool:
        out = list(pool.map(encoder.encode, texts))
    shared, counter = id(encoder.model.tokenizer), id(encoder.counter)
    assert watched.most[shared] == 1  # 2 to 8 before: the count of one call ran inside another's encode
    assert False not in watched.truncation[shared] and watched.truncation[counter] == {False}  # each keeps its settings
    assert [o.shape for o in out] == [(len(t), encoder.dim) for t in texts]
    alone = encoder.encode(texts[1])
    assert abs(out[1] - alone).max() < 1e-5  # the same vectors as one caller gets
