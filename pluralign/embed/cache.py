"""An on-disk embedding cache keyed by encoder id + text hash, so a second run embeds nothing.

SQLite (standard library) holds one row per (encoder id, sha256 of the text) with the float32
vector as bytes, in WAL mode: readers never wait for a writer. Writes go in transactions of at most
`PUT_ROWS` rows, so a writer (a training job's worker, which may be stopped, paused or slow at any
moment) holds the write lock only for one small batch, never while it encodes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pluralign.cache import FairLRU
from pluralign.embed.base import Encoder, checked_vectors, text_list
from pluralign.files import NoHomeFolder, home_folder

PUT_ROWS = 256  # rows a `put` writes per transaction (384-d float32: ~0.4 MB), the longest the write lock is held
WAIT_S = 60.0  # how long a connection waits for another's lock by default (a job's worker: it has time)

log = logging.getLogger(__name__)


class CacheBusy(ValueError):
    """Another connection held the cache's lock (or, for `forget_keys`, kept the write-ahead log from being
    folded back into the file) for longer than the wait: a process stopped, paused or hung inside a
    transaction. Nothing is wrong with the cache; the same call later can succeed."""


class CacheDamaged(ValueError):
    """The cache's file is not a SQLite database, or SQLite found it corrupt (SQLITE_NOTADB, SQLITE_CORRUPT): what it
    holds cannot be read or removed row by row. It is only a cache: `discard_cache` removes it (what it held is
    embedded again when next needed)."""


def _damaged(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def discard_cache(path: str | Path) -> list[Path]:
    """Remove the cache file at `path` with its write-ahead log, shared-memory index and rollback journal (the log
    may hold copies of its pages), for a damaged cache (`CacheDamaged`) whose rows cannot be removed one by one.
    A `path` that is a symbolic link (the cache kept on another disk) has the file it leads to removed, with the files
    SQLite keeps beside that one, and those beside the link (left there from before the cache moved behind it); the link
    stays, and the next job makes the cache again where it leads (the link alone removed, the file, every vector in it,
    would stay out of reach of later purges).
    The file goes last: a removal stopped part way (OSError, the process killed) leaves it, damaged, for a later call
    to find and remove with what is left (first, a log left beside no file, the deleted users' vectors in its pages, would be
    taken for no cache at all). Returns the files removed; OSError when one cannot be
    (its folder not writable)."""
    given = Path(path)
    path = given.resolve()  # SQLite opens the file a link leads to, and writes its logs beside it
    logs = dict.fromkeys(at.with_name(at.name + suffix) for at in (path, given) for suffix in ("-wal", "-shm", "-journal"))
    removed = []
    for file in (*logs, path):
        try:
            file.unlink()
        except FileNotFoundError:
            continue
        removed.append(file)
    return removed


def _busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED, with any extended code (a recovery, a snapshot)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "locked" in str(exc) or "busy" in str(exc)
    return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def text_key(text: str) -> bytes:
    """The cache's key of a text: the 32-byte SHA-256 digest of its UTF-8 bytes (the text exactly as given:
    no normalization). TypeError for anything but a str (a number would otherwise be an AttributeError)."""
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}")
    return hashlib.sha256(text.encode("utf-8")).digest()


def default_cache_path() -> Path:
    """The cache the CLI's commands and the service's jobs share: PLURALIGN_CACHE_DIR (default
    ~/.cache/pluralign), file embeddings.sqlite. A ValueError naming PLURALIGN_CACHE_DIR when it is unset
    and the account has no home folder."""
    if os.environ.get("PLURALIGN_CACHE_DIR"):
        return Path(os.environ["PLURALIGN_CACHE_DIR"]) / "embeddings.sqlite"
    try:
        return home_folder() / ".cache" / "pluralign" / "embeddings.sqlite"
    except NoHomeFolder as exc:
        raise ValueError(f"PLURALIGN_CACHE_DIR (unset: ~/.cache/pluralign): {exc}; set PLURALIGN_CACHE_DIR (or --cache) "
                         "to a folder this account can write") from None


def home_cache_path() -> Path | None:
    """The CLI's default cache, ~/.cache/pluralign/embeddings.sqlite, whatever PLURALIGN_CACHE_DIR says (None
    without a home folder): `pluralign serve` and its jobs used it too before their cache moved into the data
    folder, and a CLI run on an export of the service's feedback fills it."""
    try:
        return home_folder() / ".cache" / "pluralign" / "embeddings.sqlite"
    except NoHomeFolder:
        return None


def encoder_cache_id(encoder: Encoder) -> str:
    """What an embedding depends on, as a cache's key: the model (`encoder_id`) and how much of a text it reads (a
    longer `max_length` embeds long texts differently, so it must not reuse their cached vectors): "minilm@256"."""
    max_length = getattr(encoder, "max_length", None)
    return f"{encoder.encoder_id}@{max_length}" if max_length else encoder.encoder_id


class EmbeddingCache:
    def __init__(self, path: str | Path, wait_s: float = WAIT_S):
        """Opens (or creates) the cache at `path`; raises ValueError naming it when it is not one (a
        folder, a SQLite file whose `embedding` table has other columns; CacheDamaged: another kind of file, a
        corrupt database, here or in any later call), CacheBusy
        (a ValueError) when another connection held its lock for more than `wait_s` seconds, here and in
        every later call. A row whose bytes are not float32 numbers reads as absent: `CachedEncoder`
        embeds it again."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.wait_s = wait_s
        self._lock = threading.Lock()
        try:  # several processes may share one cache: a writer waits for another's transaction
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=wait_s)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS embedding (encoder TEXT, key BLOB, vector BLOB, PRIMARY KEY (encoder, key))"
            )
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(embedding)")]
        except sqlite3.Error as exc:  # a folder, another kind of file, a damaged database
            if _busy(exc):
                raise self._busy_error("opened") from None
            if _damaged(exc):
                raise CacheDamaged(f"{self.path}: damaged: not a SQLite database, or a corrupt one: {exc}") from None
            raise ValueError(f"{self.path}: cannot open it as an embedding cache (a SQLite file): {exc}") from None
        if not {"encoder", "key", "vector"} <= set(columns):  # another tool's SQLite file with a table of that name
            self._db.close()
            raise ValueError(f"{self.path}: not an embedding cache: its `embedding` table has columns {columns}, "
                             "not encoder, key, vector; give another path")

    def _busy_error(self, doing: str) -> CacheBusy:
        return CacheBusy(f"{self.path}: busy: another process held its lock for over {self.wait_s:g} s (a job's worker "
                         f"stopped or hung in a transaction), so it could not be {doing}")

    def get(self, encoder_id: str, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """The vectors cached under `encoder_id` for those of `keys` that have one, by key; CacheBusy when the cache
        could not be read within `wait_s` (another process held it, as when a checkpoint waits on a stopped reader)."""
        found: dict[bytes, np.ndarray] = {}
        with self._lock, self._busy_as("read"):
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, vector FROM embedding WHERE encoder = ? AND key IN ({marks})",
                    [encoder_id, *chunk],
                )
                for key, blob in rows:
                    if isinstance(blob, bytes) and len(blob) % 4 == 0:  # else no float32 vector (a torn or foreign
                        found[key] = np.frombuffer(blob, dtype=np.float32)  # write): absent, so embedded again and replaced
        return found

    @contextlib.contextmanager
    def _busy_as(self, doing: str):
        """SQLite's "database is locked" past `wait_s` inside the block, as CacheBusy naming the file; a corrupt
        page found there as CacheDamaged."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                raise self._busy_error(doing) from None
            raise
        except sqlite3.DatabaseError as exc:
            if _damaged(exc):
                raise CacheDamaged(f"{self.path}: damaged: a corrupt database ({exc}), so it could not be {doing}") from None
            raise

    def put(self, encoder_id: str, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store `vectors` (N, dim) under `keys` (N `text_key`s), `PUT_ROWS` rows a transaction: the write
        lock, which a user's DELETE cleaning the cache waits for, is held for one batch at a time (all N in
        one, a stopped or slow job held it for as long as a large snapshot took to write). `vectors` may be any
        array-like of numbers (stored as float32). ValueError when they are not (N, dim) numbers (a (dim,) vector
        under dim keys was stored as dim one-number rows) or their counts differ (nothing is stored); CacheBusy when
        another process held the write lock for over `wait_s` (the batches before it are stored)."""
        try:
            vectors = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError("`vectors` is not an (N, dim) array of numbers") from None
        if vectors.ndim != 2:
            raise ValueError(f"`vectors` has shape {vectors.shape}: one row per key, (N, dim)")
        if len(keys) != len(vectors):
            raise ValueError(f"`keys` has {len(keys)} keys, `vectors` {len(vectors)} rows: one vector per key")
        with self._lock, self._busy_as("written"):
            for start in range(0, len(keys), PUT_ROWS):
                rows = [(encoder_id, k, v.tobytes())
                        for k, v in zip(keys[start : start + PUT_ROWS], vectors[start : start + PUT_ROWS], strict=False)]
                with self._db:
                    self._db.executemany("INSERT OR REPLACE INTO embedding VALUES (?, ?, ?)", rows)

    def forget(self, texts: Sequence[str]) -> int:
        """Remove the vectors of `texts` (under every encoder), overwriting them on disk (secure_delete,
        then the write-ahead log truncated), for a user's DELETE. Returns the rows removed."""
        return self.forget_keys([text_key(t) for t in texts])

    def forget_keys(self, keys: Sequence[bytes]) -> int:
        """`forget` by the texts' keys (`text_key`: 32-byte SHA-256 digests). CacheBusy when another
        connection held the write lock for over `wait_s` (nothing removed), or when the removal is
        committed but a reader kept the write-ahead log from being folded back into the file (the old
        copies of the pages are still in it): either way, the same call later finishes it."""
        keys = list(dict.fromkeys(keys))

        def delete(db: sqlite3.Connection) -> int:
            gone = 0
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                gone += db.execute(f"DELETE FROM embedding WHERE key IN ({','.join('?' * len(chunk))})", chunk).rowcount
            return gone

        return self._delete_overwriting("cleaned", delete)

    def clear(self) -> int:
        """Remove every vector (under every encoder), overwriting them on disk as `forget_keys` does, for purges whose
        keys are lost (an owed purge's file that cannot be read). Returns the rows removed; CacheBusy and CacheDamaged as
        `forget_keys`."""
        return self._delete_overwriting("emptied", lambda db: db.execute("DELETE FROM embedding").rowcount)

    def _delete_overwriting(self, doing: str, delete) -> int:
        """`delete(connection)` (-> the rows removed) in one transaction with secure_delete on, then the write-ahead log
        folded back into the file and truncated, so no copy of a removed row stays on disk; CacheBusy when a reader kept
        the log (the removal is committed: the same call later finishes it)."""
        with self._lock, self._busy_as(doing):
            self._db.execute("PRAGMA secure_delete=ON")
            with self._db:
                gone = delete(self._db)
            blocked = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if blocked:  # a reader held the log past the wait: the overwritten pages are not in the file yet
            raise self._busy_error(f"{doing} to the end (its write-ahead log still holds the old copies)")
        return gone

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM embedding").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class CachedEncoder:
    """Wraps an encoder: texts already cached are read back, only new ones are embedded. What the
    encoder returns is checked before it is cached (`checked_vectors`): a ValueError, and nothing
    kept, when it is another shape than (texts, dim) or not finite. A cached row that is not
    (dim,) finite numbers is embedded again and replaced. A cache another process held past its wait
    (`CacheBusy` on a write: a job's worker stopped inside one) costs one wait: what was embedded is
    returned uncached, and this encoder writes no more (a later run embeds those texts again)."""

    def __init__(self, encoder: Encoder, cache: EmbeddingCache):
        self.encoder = encoder
        self.cache = cache
        self.encoder_id = encoder.encoder_id
        self.cache_id = encoder_cache_id(encoder)
        self.dim = encoder.dim
        self.embedded = 0  # texts actually sent to the encoder, for tests and benchmarks
        self.cache_busy = False  # a write found the cache held past its wait: no more are tried

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = text_list(texts)
        keys = [text_key(t) for t in texts]
        found = self.cache.get(self.cache_id, list(dict.fromkeys(keys)))
        # a row of another width or not finite (left by an encoder before its output was checked) is
        # embedded again and replaced, not returned
        found = {k: v for k, v in found.items() if v.shape == (self.dim,) and np.isfinite(v).all()}
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            first_text = {}
            for k, t in zip(keys, texts, strict=False):
                first_text.setdefault(k, t)
            vectors = checked_vectors(self.encoder, self.encoder.encode([first_text[k] for k in missing]), len(missing))
            self._keep(missing, vectors)
            self.embedded += len(missing)
            found.update(zip(missing, vectors, strict=False))
        out = np.empty((len(texts), self.dim), np.float32)
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out

    def _keep(self, keys: list[bytes], vectors: np.ndarray) -> None:
        if self.cache_busy:
            return
        try:
            self.cache.put(self.cache_id, keys, vectors)
        except CacheBusy as exc:  # the vectors in hand are not lost with the run; not waited for again
            self.cache_busy = True
            log.warning("%s; what is embedded from now on is not cached", exc)


# what a vector kept by `ScopedVectors` holds beside its own bytes: its key (a tuple of the encoder's id and a sha256), its
# array's header and its entry in its scope's ordered dict (`pluralign.cache.FairLRU`: a tuple of the array and its
# size), ~420 bytes traced on CPython 3.11 (5,000 384-d vectors in 10 scopes), with room for the tables' growth (not
# counting it, 64 MiB of 384-d vectors took ~86 MiB)
VECTOR_ENTRY_BYTES = 768
# what each scope `ScopedVectors` holds vectors of costs beside them: its ordered dict, its entries in `FairLRU`'s books
# and in the ranking of scopes by bytes, ~400 bytes traced on CPython 3.11, with room
SCOPE_BYTES = 1024


class ScopedVectors:
    """Vectors of texts kept in memory, each under (scope, `encoder_cache_id`, `text_key` of the exact text), at most
    `max_bytes` in all (each vector's bytes and what its entry holds beside them, `VECTOR_ENTRY_BYTES`, and each scope's
    own bookkeeping, `SCOPE_BYTES`): texts
    sent again and again (a tenant's calibration pool, asked once per question of a questionnaire) are embedded once.

    Eviction is fair between scopes (`pluralign.cache.FairLRU`): past `max_bytes` in all, the least recently used
    vector of the scope holding the most bytes is dropped (max-min fair shares of one budget). A scope embedding many fresh texts (a tenant scoring new candidates) pushes out its own
    vectors once it holds more than any other, never a smaller scope's; an idle scope's vectors go only while it is the
    largest, so one tenant's flood does not evict every other tenant's (as one LRU over every scope's vectors would).

    A scope (the service's tenant) reads only vectors embedded for it: the same text sent under another scope is
    embedded again, so neither answers nor timings tell one scope what another sent. `forget_scope` drops a scope's
    vectors; one embedding while it runs returns its vectors but keeps none. Nothing is written to disk. Thread-safe."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        # scope -> its vectors, (encoder id, text key) -> (dim,) array
        self._vectors: FairLRU[tuple[str, bytes], np.ndarray] = FairLRU(_vector_bytes, tenant_bytes=SCOPE_BYTES)
        self._generation: dict[str, int] = {}  # scope -> how many times `forget_scope` dropped it
        self._lock = threading.Lock()  # cachetools' caches are not thread-safe
        self.embedded = 0  # texts actually sent to an encoder, for tests and benchmarks

    def encode(self, encoder: Encoder, scope: str, texts: Sequence[str]) -> np.ndarray:
        """(N, encoder.dim) float32 vectors of `texts` as `encoder.encode` gives them, those of texts embedded under
        `scope` by an encoder of the same `encoder_cache_id` read back, the others embedded in one call (each once).
        TypeError for `texts` that are not strings; ValueError as `checked_vectors` (nothing kept)."""
        texts = text_list(texts)
        cache_id = encoder_cache_id(encoder)
        keys = [(scope, cache_id, text_key(t)) for t in texts]
        with self._lock:
            generation = self._generation.get(scope, 0)
            found = {k: v for k in dict.fromkeys(keys) if (v := self._vectors.get(scope, k[1:])) is not None}
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if missing:
            vectors = checked_vectors(encoder, encoder.encode(list(missing.values())), len(missing))
            rows = [row.copy() for row in vectors]  # each its own (dim,) array: a dropped one frees its bytes
            for row in rows:
                row.flags.writeable = False  # shared by later calls: none may change it in place
            self.embedded += len(missing)
            found.update(zip(missing, rows, strict=True))
            with self._lock:
                if self._generation.get(scope, 0) == generation:  # not dropped meanwhile
                    self._keep(scope, [(k[1:], v) for k, v in zip(missing, rows, strict=True)])
        out = np.empty((len(texts), encoder.dim), np.float32)
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out

    def forget_scope(self, scope: str) -> int:
        """Drop every vector kept under `scope`, and keep none an `encode` under it that is running now embeds.
        Returns the vectors dropped."""
        with self._lock:
            self._generation[scope] = self._generation.get(scope, 0) + 1
            return len(self._vectors.pop_tenant(scope))

    def scope_bytes(self, scope: str) -> int:
        """The bytes `scope`'s vectors hold, as the bound counts them (0 for none)."""
        with self._lock:
            return self._vectors.tenant_nbytes(scope)

    def _keep(self, scope: str, vectors: list[tuple[tuple[str, bytes], np.ndarray]]) -> None:
        """`vectors` ((encoder id, text key), (dim,) array) kept under `scope`; then, past `max_bytes` in all, the least
        recently used vectors of the scope holding the most dropped, one at a time (`pluralign.cache.FairLRU`: each drop
        costs the log of the number of scopes, not a pass over them). Called under the lock."""
        for key, vector in vectors:
            if _vector_bytes(vector) + SCOPE_BYTES <= self.max_bytes:  # else larger than the whole budget: not kept
                self._vectors.put(scope, key, vector)
        self._vectors.evict(self.max_bytes)

    def __len__(self) -> int:
        with self._lock:
            return len(self._vectors)


def _vector_bytes(vector: np.ndarray) -> int:
    """What a vector kept by `ScopedVectors` counts against its bound: its own bytes and its entry's, VECTOR_ENTRY_BYTES."""
    return vector.nbytes + VECTOR_ENTRY_BYTES
