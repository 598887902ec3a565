"""Concurrent requests share encoder forward passes: one batch of texts instead of one pass each.

The first caller to arrive encodes every text queued so far (its own included); callers arriving
meanwhile wait for the next pass. Each gets back exactly its own rows.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from pluralign.embed.base import Encoder


class _Ticket:
    __slots__ = ("texts", "vectors", "error", "done")

    def __init__(self, texts: list[str]):
        self.texts, self.vectors, self.error, self.done = texts, None, None, False


class BatchingEncoder:
    """An Encoder whose concurrent `encode` calls are served by shared passes of `encoder`."""

    def __init__(self, encoder: Encoder, max_texts: int = 256):
        self.encoder = encoder
        self.encoder_id, self.dim = encoder.encoder_id, encoder.dim
        self.max_texts = max_texts  # texts per shared pass
        self._cv = threading.Condition()
        self._pending: list[_Ticket] = []
        self._busy = False
        self.passes = 0  # for tests and benchmarks
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # (N, dim)
        ticket = _Ticket(list(texts))
        with self._cv:
            self._pending.append(ticket)
            self.calls += 1
        while True:  # lead passes until one of them (possibly another caller's) served this ticket
            with self._cv:
                while not ticket.done and self._busy:
                    self._cv.wait()
                if ticket.done:
                    break
                batch, size = [], 0
                while self._pending and (not batch or size + len(self._pending[0].texts) <= self.max_texts):
                    batch.append(self._pending.pop(0))
                    size += len(batch[-1].texts)
                self._busy = True
            self._run(batch)
        if ticket.error is not None:
            raise ticket.error
        return ticket.vectors

    def _run(self, batch: list[_Ticket]) -> None:
        error, vectors = None, None
        try:
            vectors = self.encoder.encode([t for ticket in batch for t in ticket.texts])
        except Exception as exc:  # every caller of the pass sees the failure
            error = exc
        with self._cv:
            start = 0
            for ticket in batch:
                n = len(ticket.texts)
                ticket.vectors = None if error else vectors[start : start + n]
                ticket.error, ticket.done = error, True
                start += n
            self._busy = False
            self.passes += 1
            self._cv.notify_all()
