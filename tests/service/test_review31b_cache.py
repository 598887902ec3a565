"""A DELETE leaves no vector of the user's texts in any embedding cache the service's jobs filled, the one
an earlier release used included.

Before session 30, `pluralign serve` and its jobs shared the CLI's cache, `~/.cache/pluralign/embeddings.sqlite`;
now theirs is `<data_dir>/cache/`. After the upgrade a DELETE forgot the user's vectors only in the new one:
those the old release's jobs (or the operator's `pluralign train pal --data <export>`) had embedded stayed in
~/.cache for good, keyed by each text's SHA-256 (a guessed text confirmed by its hash)."""

from __future__ import annotations

import sqlite3

import numpy as np

from pluralign.embed.cache import EmbeddingCache, text_key
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.tiny import start_service


def test_a_delete_forgets_the_user_s_vectors_in_the_cache_an_earlier_release_filled(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    data, home = tmp_path / "data", tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(data / "cache"))  # as `pluralign serve` sets it (check_runs_here)
    theirs = [f"A drink for morning {i}? {MARKER}" for i in range(2)] + [f"Some tea, number {i}. {MARKER}" for i in range(2)]
    kept = "Some coffee, number 5."  # ann's rejected answer only: it stays
    vector = (np.arange(minilm.dim, dtype=np.float32) * 1e-3 + 7.25).astype(np.float32)  # bytes found nowhere else
    old = home / ".cache" / "pluralign" / "embeddings.sqlite"  # what the earlier release's jobs embedded
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm)
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        give_comparisons(acme, "ann", "coffee", n=1)
        assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 2
        for path in (old, data / "cache" / "embeddings.sqlite"):
            cache = EmbeddingCache(path)
            cache.put(minilm.encoder_id, [text_key(t) for t in [*theirs, kept]], np.stack([vector] * 5))
            cache.close()
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200
    for path in (data / "cache" / "embeddings.sqlite", old):
        with sqlite3.connect(path) as db:
            left = [db.execute("SELECT COUNT(*) FROM embedding WHERE key = ?", [text_key(t)]).fetchone()[0] for t in [*theirs, kept]]
        assert left == [0, 0, 0, 0, 1], (path, left)
        # and overwritten on disk: the vector's bytes only once more, ann's row
        raw = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith("embeddings.sqlite"))
        assert raw.count(vector.tobytes()) == 1, path


def test_a_delete_finished_after_the_user_came_back_forgets_the_vectors_of_what_they_sent_before(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                                                   minilm, monkeypatch):
    """A DELETE stopped before it reached the embedding cache (the feedback log's rewrite failed: a full disk),
    the user sending feedback again before the journal's pass finishes it. Before: that pass (`forget_before`)
    deleted the rows they sent before but left those rows' vectors in the cache for good."""
    import errno

    from service.users import services

    data = tmp_path / "data"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(data / "cache"))
    theirs = [f"A drink for morning {i}? {MARKER}" for i in range(2)] + [f"Some tea, number {i}. {MARKER}" for i in range(2)]
    later = "A drink for morning 0? Pangolin-porridge-26a"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600)
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 2
        cache = EmbeddingCache(data / "cache" / "embeddings.sqlite")  # what a population job embedded
        cache.put(minilm.encoder_id, [text_key(t) for t in [*theirs, later]], np.ones((5, minilm.dim), np.float32))
        cache.close()
        forget_user = rt.ingest.forget_user

        def full_disk(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device", str(data / "feedback-log" / "000000000001.tmp"))

        monkeypatch.setattr(rt.ingest, "forget_user", full_disk)
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 507 and "finishes it by itself" in r.text, r.text
        monkeypatch.setattr(rt.ingest, "forget_user", forget_user)
        give_comparisons(acme, GONE, "coffee", "Pangolin-porridge-26a", n=1)  # they came back
        (entry,) = rt.delete_journal.pending()
        services.delete(rt, "acme", GONE, entry)  # the journal's pass (UnfinishedDeletes.run_once) finishing it
        assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 1
    with sqlite3.connect(data / "cache" / "embeddings.sqlite") as db:
        left = [db.execute("SELECT COUNT(*) FROM embedding WHERE key = ?", [text_key(t)]).fetchone()[0] for t in [*theirs, later]]
    assert left == [0, 0, 0, 0, 1], left  # what they sent since stays
