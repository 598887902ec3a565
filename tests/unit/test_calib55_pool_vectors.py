"""A tenant's calibration pool in a pools folder several replicas share (session calib55,
`service.calibration.pools` and `.vectors`): versions the folder gives, the vectors stored beside each pool and read by
every replica, what a replica holds of a pool replaced by another, a removal noted for PUTs still to write. Two
`CalibrationVectors` (the two replicas' memories) on one temp folder, with a tiny deterministic encoder."""

from __future__ import annotations

import hashlib

import msgspec
import numpy as np
import pytest

from service.calibration.pools import (
    LEDGER,
    CalibrationPoolUnreadable,
    keep_vectors,
    pool_path,
    read_pool,
    read_vectors,
    remove_pool,
    remove_pool_before,
    vectors_path,
    write_pool,
)
from service.calibration.vectors import CalibrationVectors

ITEMS = [("Tea or coffee?", ["Tea.", "Coffee, black."]), ("A walk or a film?", ["A walk.", "A film.", "Both."])]


class WordEncoder:
    """A text's vector from the sha256 of its words: deterministic, 8-d; counts what it embeds."""

    encoder_id, dim = "words", 8

    def __init__(self):
        self.texts: list[str] = []

    def encode(self, texts):
        self.texts += list(texts)
        return np.stack([np.frombuffer(hashlib.sha256(t.encode()).digest()[:32], np.uint8)[:8].astype(np.float32) for t in texts])


def put(folder, tenant, items, encoder, arrived=None):
    """What `PUT /v1/calibration-pool` does with a pool its checks took: embed, write with the vectors beside."""
    texts = [*(p for p, _ in items), *(a for _, answers in items for a in answers)]
    return write_pool(folder, tenant, items, arrived, vectors=(encoder.encoder_id, encoder.encode(texts)))


def test_a_replica_reads_the_vectors_the_put_stored_and_drops_a_replaced_pools(tmp_path):
    folder, encoder = tmp_path / "pools", WordEncoder()
    a, b = CalibrationVectors(1 << 20), CalibrationVectors(1 << 20)
    stored = put(folder, "acme", ITEMS, encoder)
    assert stored.version == 1 and vectors_path(folder, "acme").exists()
    encoder.texts.clear()
    pool = read_pool(folder, "acme")
    got = b.rows(encoder, folder, "acme", pool, ["Coffee, black.", "Tea or coffee?"])
    assert encoder.texts == [] and b.read == 1 and b.embedded == 0  # read from beside the pool, nothing embedded
    assert np.array_equal(got, WordEncoder().encode(["Coffee, black.", "Tea or coffee?"]))
    assert b.rows(encoder, folder, "acme", pool, ["Tea."]).shape == (1, 8) and b.read == 1  # held for this version

    changed = [("Tea or coffee?", ["Tea.", "Coffee, with milk."]), ITEMS[1]]
    assert put(folder, "acme", changed, encoder).version == 2  # through replica a
    assert b.drop_replaced(folder) == 1 and b.held_bytes("acme") == 0  # b's next pass: the pool before's vectors go
    pool = read_pool(folder, "acme")
    encoder.texts.clear()
    got = b.rows(encoder, folder, "acme", pool, ["Coffee, with milk."])
    assert encoder.texts == [] and np.array_equal(got, WordEncoder().encode(["Coffee, with milk."]))
    with pytest.raises(KeyError):  # a text no longer in the pool has no row: never the vector of another text
        b.rows(encoder, folder, "acme", pool, ["Coffee, black."])
    assert b.drop_replaced(folder) == 0 and a.drop_replaced(folder) == 0
    assert remove_pool(folder, "acme") and not vectors_path(folder, "acme").exists()
    assert b.drop_replaced(folder) == 1 and b.held_bytes() == 0


def test_vectors_of_another_version_encoder_or_a_damaged_file_are_not_read(tmp_path):
    folder, encoder = tmp_path / "pools", WordEncoder()
    put(folder, "acme", ITEMS, encoder)
    pool = read_pool(folder, "acme")
    assert read_vectors(folder, "acme", pool, "words") is not None
    assert read_vectors(folder, "acme", pool, "minilm@256") is None  # another encoder's: embedded again
    # a crash between the two files: vectors of the next version beside the pool before
    put(folder, "acme", [ITEMS[1]], encoder)
    assert read_vectors(folder, "acme", pool, "words") is None
    vectors_path(folder, "acme").write_bytes(b"\x85cut")
    newer = read_pool(folder, "acme")
    assert read_vectors(folder, "acme", newer, "words") is None  # damaged: a WARNING, embedded again
    replica = CalibrationVectors(1 << 20)
    encoder.texts.clear()
    replica.rows(encoder, folder, "acme", newer, ["A film."])
    assert replica.embedded == len(encoder.texts) == 4  # embedded once here, and stored for the others
    assert read_vectors(folder, "acme", newer, "words") is not None
    assert not keep_vectors(folder, "acme", pool, "words", np.zeros((5, 8), np.float32))  # not the pool there now


def test_versions_are_never_given_twice_and_order_puts_not_clocks(tmp_path):
    folder, encoder = tmp_path / "pools", WordEncoder()
    assert put(folder, "acme", ITEMS, encoder, arrived=1000.0).version == 1
    later = put(folder, "acme", [ITEMS[1]], encoder, arrived=400.0)  # a replica whose clock runs behind
    assert later.version == 2 and read_pool(folder, "acme").items() == [ITEMS[1]]  # before: the first kept
    assert put(folder, "globex", ITEMS, encoder).version == 3  # one counter for the folder
    assert remove_pool(folder, "acme")
    assert put(folder, "acme", ITEMS, encoder).version == 4  # after a DELETE: never 1 again
    ledger = msgspec.json.decode((folder / LEDGER).read_bytes())
    assert ledger["version"] == 4 and ledger["format"] == 1
    (folder / LEDGER).write_bytes(b"{cut")
    with pytest.raises(CalibrationPoolUnreadable, match="ledger"):  # never read as an empty one (versions again)
        put(folder, "acme", ITEMS, encoder)
    assert read_pool(folder, "acme").version == 4


def test_a_removal_noted_in_the_folder_refuses_puts_whose_key_was_checked_before_it(tmp_path):
    import time

    folder, encoder, began = tmp_path / "pools", WordEncoder(), time.time()
    put(folder, "acme", ITEMS, encoder, arrived=began - 10)
    assert remove_pool(folder, "acme", removal_began=began)
    assert put(folder, "acme", ITEMS, encoder, arrived=began - 1) is None  # authenticated before the removal began
    assert read_pool(folder, "acme") is None and not vectors_path(folder, "acme").exists()
    again = put(folder, "acme", [ITEMS[1]], encoder, arrived=began + 1)  # the tenant made again
    assert again is not None and put(folder, "acme", ITEMS, encoder, arrived=began - 5) is None
    assert read_pool(folder, "acme").items() == [ITEMS[1]]
    assert not remove_pool_before(folder, "acme", began)  # the new tenant's: kept by another replica's pass
    assert remove_pool_before(folder, "acme", began + 2) and not vectors_path(folder, "acme").exists()
    # a removal is remembered REMOVAL_MEMORY_S: longer than any request, and no longer
    old = began - 2 * 3600
    assert remove_pool(folder, "globex", removal_began=old) is False
    assert put(folder, "initech", ITEMS, encoder) is not None
    assert pool_path(folder, "globex").name not in msgspec.json.decode((folder / LEDGER).read_bytes())["removed"]
