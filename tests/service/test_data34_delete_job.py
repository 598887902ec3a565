"""A user deleted while a population job trains on a snapshot holding them (data session 34): the job's
worker read their rows before the DELETE and embeds them after it, so what the DELETE cleaned must be
cleaned again once the worker can write no more."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import signal
import sqlite3
from pathlib import Path

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


@contextlib.contextmanager
def largest_read(monkeypatch, folder):
    """The most bytes one read of a file in `folder` returned meanwhile (whole-file reads and `open`'s): [bytes]."""
    largest = [0]
    real_open, real_read_bytes = builtins.open, Path.read_bytes

    class Counted:  # an open file of `folder`, its reads measured
        def __init__(self, file):
            self.file = file

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

        def read(self, *args):
            data = self.file.read(*args)
            largest[0] = max(largest[0], len(data))
            return data

        def readinto(self, buffer):
            n = self.file.readinto(buffer)
            largest[0] = max(largest[0], n or 0)
            return n

    def counted_open(file, *args, **kwargs):
        opened = real_open(file, *args, **kwargs)
        return Counted(opened) if isinstance(file, (str, os.PathLike)) and Path(file).parent == folder else opened

    def counted_read_bytes(path):
        data = real_read_bytes(path)
        if path.parent == folder:
            largest[0] = max(largest[0], len(data))
        return data

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "open", counted_open)
        patch.setattr(io, "open", counted_open)
        patch.setattr(Path, "read_bytes", counted_read_bytes)
        yield largest


def test_what_a_job_stopped_with_the_service_may_have_embedded_of_a_deleted_user_goes_at_the_next_start(serve, tmp_path,
                                                                                                         monkeypatch):
    """A service stopped (killed) while a job that read a deleted user's rows still ran left the keys of
    their texts in `jobs/forget-at-exit/<job>.keys`; the runner stops that worker when it opens, so the
    next start removes those vectors from the cache and the file. Before: nothing did (no such file).
    ops62: the file (32 bytes a text of every user deleted while the job ran) was read whole at once; now a bounded
    number of keys at a time (`EXIT_KEYS_PER_READ`, 2 here), each read's vectors purged before the next read."""
    import service.admin.services as admin_services

    monkeypatch.setattr(admin_services, "EXIT_KEYS_PER_READ", 2)
    theirs, kept = [f"Some tea, number {i}. {MARKER}" for i in range(5)], "Some coffee, number 0."
    cache = EmbeddingCache(tmp_path / "cache" / "embeddings.sqlite")
    cache.put("minilm", [*map(text_key, theirs), text_key(kept)], np.ones((6, 4), np.float32))
    cache.close()
    data = tmp_path / "data"
    notes = data / "jobs" / "forget-at-exit"
    notes.mkdir(parents=True)
    (notes / "19a2b3c4d5e-0123abcd.keys").write_bytes(b"".join(map(text_key, theirs)) + b"cut short")  # a partial key: none
    _, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with largest_read(monkeypatch, notes) as largest, server:
        assert [cached(tmp_path / "cache" / "embeddings.sqlite", text) for text in theirs] == [0] * 5
        assert cached(tmp_path / "cache" / "embeddings.sqlite", kept) == 1
        assert list(notes.iterdir()) == []
    assert 0 < largest[0] <= 2 * 32, f"the start read {largest[0]} bytes of a job's forget-at-exit keys at once"
