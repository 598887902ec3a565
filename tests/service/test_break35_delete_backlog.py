"""Break session 35: a user deleted while the feedback worker embeds their large import. The worker
stops embedding their texts once the DELETE dropped the rows, and goes on to other tenants' feedback.
Before: it embedded the whole import in one encoder call anyway (a 6,000-row import: 18,000 texts,
~23 minutes on a busy 2-core machine), every other tenant's pending feedback waiting behind it."""

from __future__ import annotations

import json
import threading
import time

import numpy as np

from pluralign.store.ingest import ENCODE_CHUNK
from tests.service.tiny import start_service

MARKER = "break35-backlog"


class HeldEncoder:
    """The real encoder, except for the deleted user's texts: counted, answered at once (their vectors
    do not matter), the first call held until the test lets it go."""

    def __init__(self, encoder):
        self.encoder, self.encoder_id, self.dim = encoder, encoder.encoder_id, encoder.dim
        self.theirs, self.holding, self.release = 0, threading.Event(), threading.Event()

    def encode(self, texts):
        marked = [t for t in texts if MARKER in t]
        if not marked:
            return self.encoder.encode(texts)
        self.theirs += len(marked)
        if not self.holding.is_set():
            self.holding.set()
            assert self.release.wait(60), "never released"
        return np.ones((len(texts), self.dim), np.float32)


def test_the_worker_stops_embedding_a_user_deleted_during_their_import(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    encoder = HeldEncoder(minilm)
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, encoder, deletion_sweep_s=3600)
    rows = 2 * ENCODE_CHUNK  # 3 texts a row
    body = "\n".join(json.dumps({"prompt": f"{MARKER} {i}?", "chosen": f"Yes {MARKER} {i}.", "rejected": f"No {MARKER} {i}."})
                     for i in range(rows))
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        assert acme.post("/v1/users/gone/import", content=body).status_code == 201
        assert encoder.holding.wait(60), "the worker never embedded the import"
        try:
            r = globex.post("/v1/feedback", json={"type": "comparison", "user": "gil", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."})
            assert r.status_code == 201, r.text
            d = acme.delete("/v1/users/gone")
            assert d.status_code == 200 and d.json()["deleted"]["preferences"] == rows, d.text
        finally:
            encoder.release.set()
        deadline = time.monotonic() + 60
        while svc.runtime.ingest.log.backlog()[1] and time.monotonic() < deadline:  # the worker moves globex's row next
            time.sleep(0.05)
        assert svc.runtime.ingest.log.backlog() == (0, 0)
        assert encoder.theirs <= ENCODE_CHUNK, encoder.theirs  # before: 3 * rows, every text of the import
        assert globex.get("/v1/users/gil").json()["counts"]["preferences"] == 1
        assert acme.get("/v1/users/gone").status_code == 404
