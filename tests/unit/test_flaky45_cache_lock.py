"""The embedding cache under a reader or writer that does not let go (a job's worker stopped, paused or hung
inside a transaction): a purge is not called done while the vectors are still in the file (session 45)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from pluralign.embed.cache import CacheBusy, EmbeddingCache, text_key

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
