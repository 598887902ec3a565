"""This replica's vectors of its tenants' calibration pools (`Runtime.calibration_vectors`): what
`POST /v1/users/{id}/next-comparison` reads for a stored pool's texts.

Per tenant, the vectors of the one version of its pool this replica read last (`CalibrationPool.version` and
`digest`, the encoder's `encoder_cache_id`), in memory, bounded in bytes (least recently used tenants go first). A miss
reads the vectors the PUT stored beside the pool (`service.calibration.pools.read_vectors`), and embeds the texts only
where there are none for this version (a pool an older release stored, another encoder's), storing them there for
the other replicas (`keep_vectors`). Were the vectors kept by text in the replica that took the PUT only, every
other replica would embed the whole pool at its first `{}` (1-3 s for 64 items of MiniLM on two cores), and
a replaced pool's vectors would stay in the memory of every replica but the PUT's. A version read replaces the one held
before; `drop_replaced` (each deletion sweep, with replicas) drops those whose pool file was replaced or removed since,
so no replica keeps vectors of texts no longer in any pool past its next pass.

A vector is never served for another text: the entry is taken only for the pool's exact version and digest, and a text's
row is found by its exact text (`text_key`)."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cachetools import LRUCache

from pluralign.embed.base import Encoder, checked_vectors
from pluralign.embed.cache import encoder_cache_id, text_key
from service.calibration.pools import (
    CalibrationPool,
    CalibrationPoolUnreadable,
    keep_vectors,
    pool_path,
    read_pool,
    read_vectors,
)

log = logging.getLogger("pluralign.calibration")
ENTRY_BYTES = 4096  # what an entry holds beside its vectors (its index of texts counted apart), as the bound counts it


@dataclass(frozen=True)
class PoolVectors:
    """The vectors of one version of a tenant's pool: `vectors` (N, dim) float32, row `index[text_key(t)]` that of text t."""

    key: tuple[int, str, str]  # (pool version, pool digest, encoder_cache_id)
    vectors: np.ndarray
    index: dict[bytes, int]
    file: tuple[int, int] | None  # (st_ino, st_mtime_ns) of the pool file that held its version (`_file_holding`)

    @property
    def nbytes(self) -> int:
        return self.vectors.nbytes + 100 * len(self.index) + ENTRY_BYTES

    def rows(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) vectors of `texts`, each a text of the pool. KeyError for one that is not."""
        return self.vectors[[self.index[text_key(t)] for t in texts]]


class CalibrationVectors:
    """The vectors of tenants' calibration pools held by this replica, at most `max_bytes` (module docstring).
    Thread-safe; `embedded` counts the texts this replica embedded, `read` the vectors files it read (tests, benchmarks)."""

    def __init__(self, max_bytes: int):
        self._held: LRUCache = LRUCache(maxsize=max_bytes, getsizeof=lambda held: held.nbytes)  # tenant -> PoolVectors
        self._generation: dict[str, int] = {}  # tenant -> how many times `forget` dropped it
        self._lock = threading.Lock()
        self.embedded = 0
        self.read = 0

    def rows(self, encoder: Encoder, folder: Path, tenant: str, pool: CalibrationPool, texts: list[str]) -> np.ndarray:
        """(len(texts), encoder.dim) float32 vectors of `texts`, texts of `pool`, the tenant's pool as read from the pools
        folder `folder`: held, else read from beside the pool, else embedded (then stored there). ValueError as
        `checked_vectors`; the encoder's errors (`RemoteTextsRefused`) as they come; OSError reading the folder."""
        return self.of(encoder, folder, tenant, pool).rows(texts)

    def of(self, encoder: Encoder, folder: Path, tenant: str, pool: CalibrationPool) -> PoolVectors:
        """The vectors of `pool`'s texts (`rows`)."""
        cache_id = encoder_cache_id(encoder)
        key = (pool.version, pool.digest(), cache_id)
        with self._lock:
            held = self._held.get(tenant)
            generation = self._generation.get(tenant, 0)
        if held is not None and held.key == key:
            return held
        file = _file_holding(folder, tenant, pool)
        texts = pool.texts()
        vectors = read_vectors(folder, tenant, pool, cache_id)
        if vectors is not None and vectors.shape[1] == encoder.dim:
            self.read += 1
        else:
            vectors = checked_vectors(encoder, encoder.encode(texts), len(texts))
            self.embedded += len(texts)
            try:
                keep_vectors(folder, tenant, pool, cache_id, vectors)
            except OSError as exc:  # a full shared volume: served from memory here, the others embed it too
                log.warning("the vectors of a calibration pool could not be stored beside it: %s", exc)
        held = _held(key, vectors, texts, file)
        if file is None:  # replaced or removed since the request read it: answered, never held
            return held
        with self._lock:
            now = self._held.get(tenant)
            # not forgotten meanwhile, nor a later version held since (a PUT through this replica)
            if self._generation.get(tenant, 0) == generation and (now is None or now.key[0] <= pool.version):
                self._put(tenant, held)
        return held

    def keep(self, tenant: str, pool: CalibrationPool, encoder: Encoder, vectors: np.ndarray, folder: Path) -> None:
        """Hold `vectors` ((N, dim) of `pool.texts()`) as those of the tenant's pool `pool`, just stored (the PUT), in
        place of any other version's held; none held where another PUT or a DELETE came after it (`_file_holding`)."""
        file = _file_holding(folder, tenant, pool)
        if file is None:  # another PUT (or a DELETE) came after it: the next request reads what is there
            return
        held = _held((pool.version, pool.digest(), encoder_cache_id(encoder)), vectors, pool.texts(), file)
        with self._lock:
            now = self._held.get(tenant)
            if now is None or now.key[0] <= pool.version:  # a PUT that wrote after this one may have been held first
                self._put(tenant, held)

    def forget(self, tenant: str) -> bool:
        """Drop the tenant's vectors, and keep none that a read running now gets; whether any were held."""
        with self._lock:
            self._generation[tenant] = self._generation.get(tenant, 0) + 1
            return self._held.pop(tenant, None) is not None

    def drop_replaced(self, folder: Path) -> int:
        """Drop the vectors held of pools whose file in `folder` was replaced or removed since they were read (another
        replica's PUT or DELETE, a tenant's removal); how many tenants' went. A `stat` per tenant held."""
        with self._lock:
            held = {tenant: entry.file for tenant, entry in self._held.items()}
        gone = [tenant for tenant, file in held.items() if file is None or _file_of(pool_path(folder, tenant)) != file]
        with self._lock:
            for tenant in gone:
                now = self._held.get(tenant)
                if now is not None and now.file == held[tenant]:
                    self._held.pop(tenant, None)
        return len(gone)

    def held_bytes(self, tenant: str | None = None) -> int:
        """The bytes the bound counts for `tenant`'s vectors (every tenant's with None)."""
        with self._lock:
            if tenant is None:
                return int(self._held.currsize)
            held = self._held.get(tenant)
            return held.nbytes if held is not None else 0

    def _put(self, tenant: str, held: PoolVectors) -> None:
        self._held.pop(tenant, None)
        try:
            self._held[tenant] = held
        except ValueError:  # one pool larger than the whole bound: read again at each request
            pass


def _held(key: tuple[int, str, str], vectors: np.ndarray, texts: list[str], file: tuple[int, int] | None) -> PoolVectors:
    vectors = np.array(vectors, dtype=np.float32)
    vectors.flags.writeable = False  # shared by every request reading it
    index: dict[bytes, int] = {}
    for i, text in enumerate(texts):
        index.setdefault(text_key(text), i)
    return PoolVectors(key, vectors, index, file)


def _file_holding(folder: Path, tenant: str, pool: CalibrationPool) -> tuple[int, int] | None:
    """Which file holds `pool` at the tenant's pool path now (`_file_of`), None where none does: the pool was replaced
    or removed since it was read (`pool` another PUT's version, or no file). Looked at first, read after: a PUT renaming
    its pool into place between the two is read as another version (never given twice), so a version is never held
    with the file of a later one, which `CalibrationVectors.drop_replaced` would take for its own. Were the
    file looked at alone, after the request had read its pool, a pool another replica's PUT replaced
    meanwhile would be held with the new pool's file, kept by every pass. OSError as it comes."""
    file = _file_of(pool_path(folder, tenant))
    if file is None:
        return None
    try:
        now = read_pool(folder, tenant)
    except CalibrationPoolUnreadable:
        return None
    return file if now is not None and (now.version, now.digest()) == (pool.version, pool.digest()) else None


def _file_of(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` now ((st_ino, st_mtime_ns): a PUT renames a new one into place), None for none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns
