"""A user deleted while a population job trains on a snapshot holding them (data session 34): the job's
worker read their rows before the DELETE and embeds them after it, so what the DELETE cleaned must be
cleaned again once the worker can write no more."""

from __future__ import annotations

import os
import signal
import sqlite3

import numpy as np
import pytest

from pluralign.embed.cache import EmbeddingCache, text_key
from service.admin.controllers import ADMIN_HANDLERS
from tests.files import files_holding
from tests.service.test_admin import wait_job
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons, stopped_after_reading


def cached(cache, text: str) -> int:
    with sqlite3.connect(cache) as db:
        return db.execute("SELECT COUNT(*) FROM embedding WHERE key = ?", [text_key(text)]).fetchone()[0]


@pytest.mark.slow  # a real PAL job's worker: 12-16 s
def test_a_user_deleted_while_a_population_job_embeds_leaves_no_vector_in_the_cache(serve, tmp_path):
    """Before: the job embedded the deleted user's texts into the jobs' embedding cache after the
    DELETE had cleaned it, and nothing cleaned it again: their vectors (keyed by their texts' hashes)
    stayed once the job ended."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    cache = tmp_path / "cache" / "embeddings.sqlite"
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        give_comparisons(acme, GONE, "tea", MARKER)
        give_comparisons(acme, "ann", "coffee")
        r = admin.post("/admin/jobs", json={"kind": "pal", "params": {"k": 2, "epochs": 2, "latent_dim": 8, "hidden": 16}})
        assert r.status_code == 201, r.text
        pid = stopped_after_reading(data, r.json())
        try:
            d = acme.delete(f"/v1/users/{GONE}")
            assert d.status_code == 200, d.text
        finally:
            os.kill(pid, signal.SIGCONT)
        job = wait_job(admin, r.json()["id"], timeout=300)
        assert job["state"] == "succeeded", job
        theirs, kept = f"Some tea, number 0. {MARKER}", "Some tea, number 0."  # their chosen answer, ann's rejected one
        assert cached(cache, kept) == 1  # the job did embed (ann's texts stay)
        assert cached(cache, theirs) == 0 and cached(cache, f"A drink for morning 3? {MARKER}") == 0
        assert files_holding(data, MARKER, GONE) == []
        keys = [text_key(theirs), text_key(f"A drink for morning 3? {MARKER}")]  # nor their hashes, anywhere
        assert [p for p in tmp_path.rglob("*") if p.is_file() and any(k in p.read_bytes() for k in keys)] == []


def test_what_a_job_stopped_with_the_service_may_have_embedded_of_a_deleted_user_goes_at_the_next_start(serve, tmp_path):
    """A service stopped (killed) while a job that read a deleted user's rows still ran left the keys of
    their texts in `jobs/forget-at-exit/<job>.keys`; the runner stops that worker when it opens, so the
    next start removes those vectors from the cache and the file. Before: nothing did (no such file)."""
    theirs, kept = f"Some tea, number 0. {MARKER}", "Some coffee, number 0."
    cache = EmbeddingCache(tmp_path / "cache" / "embeddings.sqlite")
    cache.put("minilm", [text_key(theirs), text_key(kept)], np.ones((2, 4), np.float32))
    cache.close()
    data = tmp_path / "data"
    (data / "jobs" / "forget-at-exit").mkdir(parents=True)
    (data / "jobs" / "forget-at-exit" / "19a2b3c4d5e-0123abcd.keys").write_bytes(text_key(theirs))
    _, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server:
        assert cached(tmp_path / "cache" / "embeddings.sqlite", theirs) == 0
        assert cached(tmp_path / "cache" / "embeddings.sqlite", kept) == 1
        assert list((data / "jobs" / "forget-at-exit").iterdir()) == []
