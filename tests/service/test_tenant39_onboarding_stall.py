"""Session 39: one tenant's feedback backlog never stalls another tenant's onboarding question.

`POST /v1/users/{id}/next-comparison` with `{}` (pairs from the tenant's stored comparisons), when none is
stored yet, moves the tenant's few acknowledged rows still in the feedback log itself. It did so with
`Ingestor.flush(tenant)`, which first waits for the feedback worker's batch in progress: any tenant's, up to
2,048 rows of another tenant's import to embed (~40 s on two busy cores), so a new tenant's first onboarding
question waited for another tenant's import. Now the tenant's rows are moved without waiting for the worker
(`Ingestor.flush_some`, as the dashboard does)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np

from tests.service.tiny import start_service

MARKER = "tenant39-bulk"


class HeldEncoder:
    """The real encoder, except for acme's bulk texts: the first call holding them waits until the test
    lets it go (the feedback worker busy with another tenant's import, for as long as the test likes)."""

    def __init__(self, encoder):
        self.encoder, self.encoder_id, self.dim = encoder, encoder.encoder_id, encoder.dim
        self.holding, self.release = threading.Event(), threading.Event()

    def encode(self, texts):
        if not any(MARKER in t for t in texts):
            return self.encoder.encode(texts)
        self.holding.set()
        assert self.release.wait(60), "never released"
        return np.ones((len(texts), self.dim), np.float32)


def test_a_tenants_first_onboarding_question_does_not_wait_for_another_tenants_import(
    tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch,
):
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    encoder = HeldEncoder(minilm)
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, encoder, deletion_sweep_s=3600)
    body = "\n".join(json.dumps({"prompt": f"{MARKER} {i}?", "chosen": f"Yes {MARKER} {i}.", "rejected": f"No {MARKER} {i}."})
                     for i in range(20))
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        assert acme.post("/v1/users/bulk/import", content=body).status_code == 201
        assert encoder.holding.wait(60), "the worker never embedded the import"
        try:  # the worker is inside acme's batch: globex's comparison waits in the log behind it
            r = globex.post("/v1/feedback", json={"type": "comparison", "user": "early", "prompt": "Tips on tea?",
                                                  "chosen": "Brew it short.", "rejected": "Brew it for a very long time, stirring."})
            assert r.status_code == 201, r.text
            start = time.monotonic()
            try:
                r = globex.post("/v1/users/newbie/next-comparison", json={}, timeout=10)
            except httpx.ReadTimeout:
                raise AssertionError("globex's onboarding question waited for acme's import batch (10 s and more)") from None
            took = time.monotonic() - start
            assert r.status_code == 200, r.text
            assert r.json()["pool"] == "stored" and sorted(r.json()["answers"]) == ["Brew it for a very long time, stirring.", "Brew it short."]
            assert took < 5, took
        finally:
            encoder.release.set()
        deadline = time.monotonic() + 60
        while svc.runtime.ingest.log.backlog()[1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert acme.get("/v1/users/bulk").json()["counts"]["preferences"] == 20  # acme's import moved all the same
