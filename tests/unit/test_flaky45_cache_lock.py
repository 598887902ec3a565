"""The embedding cache under a reader or writer that does not let go (a job's worker stopped, paused or hung
inside a transaction): a purge is not called done while the vectors are still in the file (session 45)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from pluralign.embed.cache import CacheBusy, CachedEncoder, EmbeddingCache, text_key

GONE = text_key("Quokka-marmalade-41x9 is what I drink.")


def _cache_with_a_vector_to_forget(path) -> bytes:
    """A cache holding a deleted user's vector (distinct bytes, looked for in the file) beside others; its bytes."""
    vector = np.full((1, 64), 1234.5678, np.float32)
    cache = EmbeddingCache(path)
    cache.put("an-encoder", [GONE] + [text_key(f"kept {i}") for i in range(40)],
              np.concatenate([vector, np.zeros((40, 64), np.float32)]))
    cache.close()  # the last connection: its log folded into the file
    assert vector.tobytes() in path.read_bytes()
    return vector.tobytes()


def test_a_forget_a_reader_kept_out_of_the_file_is_busy_and_finished_by_the_next(tmp_path):
    """A reader in the middle of a read (a worker stopped in `get`) keeps the write-ahead log from being folded back:
    the removal is committed, but the file still holds the vector. Before, that returned as done (after 60 s)."""
    path = tmp_path / "embeddings.sqlite"
    vector = _cache_with_a_vector_to_forget(path)
    reader = sqlite3.connect(path)
    rows = reader.execute("SELECT key FROM embedding")
    rows.fetchone()  # a read in progress
    cache = EmbeddingCache(path, wait_s=0.05)
    with pytest.raises(CacheBusy, match="busy"):
        cache.forget_keys([GONE])
    assert vector in path.read_bytes()  # why it is not done
    rows.close()
    reader.close()
    cache.forget_keys([GONE])  # the next try, once the reader let go
    assert vector not in path.read_bytes() and cache.get("an-encoder", [GONE]) == {}
    assert len(cache) == 40
    cache.close()


def test_a_cache_a_writer_holds_is_busy_past_the_wait_and_nothing_is_lost(tmp_path):
    path = tmp_path / "embeddings.sqlite"
    _cache_with_a_vector_to_forget(path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a worker stopped inside a `put`
    cache = EmbeddingCache(path, wait_s=0.05)
    with pytest.raises(CacheBusy, match=f"{path}: busy"):
        cache.forget_keys([GONE])
    assert len(cache.get("an-encoder", [GONE])) == 1  # nothing removed
    writer.rollback()
    writer.close()
    cache.forget_keys([GONE])
    assert cache.get("an-encoder", [GONE]) == {}
    cache.close()


def test_a_put_past_the_wait_is_cache_busy_naming_the_cache(tmp_path):
    """The constructor's promise ("CacheBusy ... here and in every later call"): a `put` that waited past `wait_s` on
    a stopped writer raised a bare sqlite3.OperationalError ("database is locked", no path: a job's error line, a CLI
    traceback); now CacheBusy (a ValueError: the CLI's one `pluralign: error:` line) naming the file."""
    path = tmp_path / "embeddings.sqlite"
    _cache_with_a_vector_to_forget(path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another job's worker stopped inside a `put`
    cache = EmbeddingCache(path, wait_s=0.05)
    try:
        with pytest.raises(CacheBusy, match=f"{path}: busy"):
            cache.put("an-encoder", [text_key("new")], np.zeros((1, 64), np.float32))
    finally:
        writer.rollback()
        writer.close()
    cache.put("an-encoder", [text_key("new")], np.zeros((1, 64), np.float32))  # free again: stored
    assert len(cache) == 42
    cache.close()


class _Counting:
    encoder_id, dim, max_length = "counting", 4, None

    def __init__(self):
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        return np.stack([np.full(4, len(t), np.float32) for t in texts])


def test_an_encoder_behind_a_busy_cache_still_returns_its_vectors(tmp_path):
    """A training job (or `pluralign eval`) whose cache another job's stopped worker holds: the vectors it embedded
    are returned, not lost with the job (before: sqlite3.OperationalError after the wait, the job failed); they are
    not cached, so a later run embeds them again."""
    path = tmp_path / "embeddings.sqlite"
    _cache_with_a_vector_to_forget(path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    encoder = CachedEncoder(_Counting(), EmbeddingCache(path, wait_s=0.05))
    try:
        out = encoder.encode(["ab", "abcd", "ab"])
        assert out.tolist() == [[2.0] * 4, [4.0] * 4, [2.0] * 4]
        assert encoder.embedded == 2
    finally:
        writer.rollback()
        writer.close()
    assert encoder.cache.get("counting", [text_key("ab")]) == {}  # not cached: embedded again next time
    encoder.cache.close()
