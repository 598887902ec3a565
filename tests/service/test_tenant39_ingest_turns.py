"""Session 39: the feedback worker takes the tenants' backlogs in turn.

Acknowledged feedback and imports wait in the feedback log until the worker embeds them and moves them
into the table. It took the log's records oldest first, every tenant's in one line: a tenant that sent
imports of thousands of rows (each a batch of its own, seconds to embed) kept another tenant's records
waiting until all of them were moved; that tenant's import of more than 500 rows (more than a read moves
itself) answered its user's reads 503 for as long. Now each batch begins with the next tenant in turn:
another tenant's records wait for at most one batch of each other tenant's."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from pluralign.store.ingest import INGEST_BATCH_ROWS
from tests.service.tiny import start_service

MARKER = "tenant39-backlog"
SLOW_S = 0.5


class HashEncoder:
    """Vectors from a hash of each text (nothing here needs their meaning), at once; a call holding acme's
    backlog texts takes SLOW_S (one ENCODE_CHUNK of them: a batch of INGEST_BATCH_ROWS rows is ~6 calls)."""

    encoder_id = "hash-encoder"
    dim = 16

    def encode(self, texts):
        if any(MARKER in t for t in texts):
            time.sleep(SLOW_S)
        seeds = [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=4).digest(), "big") for t in texts]
        return np.stack([np.random.default_rng(s).standard_normal(self.dim) for s in seeds]).astype(np.float32) if texts \
            else np.zeros((0, self.dim), np.float32)


def lines(n: int, marker: str) -> bytes:
    return "\n".join(json.dumps({"prompt": f"Question {marker} {i}?", "chosen": f"Yes {marker} {i}.", "rejected": f"No {marker} {i}."})
                     for i in range(n)).encode()


def test_another_tenants_import_waits_for_one_batch_of_a_tenants_backlog_not_all_of_it(
    tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch,
):
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600)
    svc.runtime.ingest.encoder = HashEncoder()  # what moves feedback embeds with it: slow on acme's backlog
    svc.runtime.ingest.encoder.dim = minilm.dim  # the tables' vectors
    rows = INGEST_BATCH_ROWS - 48  # one import a batch
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        with svc.runtime.ingest.paused():  # acme's backlog is in the log before globex's import
            for chunk in range(3):
                r = acme.post(f"/v1/users/bulk{chunk}/import", content=lines(rows, f"{MARKER} {chunk}"))
                assert r.status_code == 201, r.text
            r = globex.post("/v1/users/gina/import", content=lines(600, "globex"))
            assert r.status_code == 201, r.text
            start = time.monotonic()
        while (r := globex.get("/v1/users/gina")).status_code == 503 and time.monotonic() - start < 120:
            time.sleep(0.1)
        took = time.monotonic() - start
        assert r.status_code == 200 and r.json()["counts"]["preferences"] == 600, r.text
        left = svc.runtime.ingest.log.backlog()[1]
        # behind one of acme's batches (~6 encoder calls of SLOW_S), not all three
        assert left >= rows, f"globex's import was moved after {3 * rows - left} of acme's {3 * rows} rows ({took:.1f} s)"
