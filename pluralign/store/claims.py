"""Claims on `pref_id`s, so that replicas sharing one store never both acknowledge a `pref_id` of one
user with different content.

Why: each replica checks an import's ids against the table and its own feedback log, then appends the
rows to its log and answers 201; the rows reach the table later (`pluralign.store.ingest`). Two imports
of one new id with different content sent to two replicas at once both passed that check, both were
acknowledged, and the mover of the second dropped its row (`PrefIdConflict`, logged only): an
acknowledged row lost. Neither LanceDB nor Lance can refuse the second: two `merge_insert`s of one key
from two processes both commit (two rows; tried with lancedb 0.40 / pylance 14), and an append never
conflicts. So before the 201 each replica writes one small object per id under the store's root with a
put-if-absent (the same primitive Lance's own commits rely on): on a folder a hard link of a written
temporary file (`os.link` fails when the name exists, and the claim is whole when it appears), on S3 a
PUT with `If-None-Match: *` (a 412 when the key exists; AWS S3 since 2024, moto, MinIO). The first
writer holds the id; a later import whose claim finds another content is refused (the service's 409
naming the line's `pref_id`), one with the same content goes on (the mover stores the row once).

What a claim holds: the sha256 of the row's content (`SAME_ROW_FIELDS` but its time), its `created_at`,
whether that time was stamped on receipt, and when it was received; it is named by the hashes of
`tenant/user_id` and of the id, so no user id, id or text is kept in the clear. A DELETE of the user
removes the claims of rows received before it began (`forget_user`), as it removes the rows.

Limits: a process killed between its claim and its log append leaves a claim with no row: that id is
then refused for other content until the user is deleted (the same content is accepted). Stores
other than a folder, `memory://` (one process) and S3 make no claims (`claims_for` gives None): the race
stays there as it was. A claim's later time is written over it (`_replace`, no compare-and-swap): a DELETE on
another replica removing it, and a third replica claiming the id for other content, both in the instant between
that read and that write, would see their claim overwritten (not seen; the replicas' locks do not span it).
Claims of a live user are never removed: one file (a 4 KiB block and an inode) or one object a row.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import numpy as np

from pluralign.data.record import Base
from pluralign.store.deletions import key_hash

log = logging.getLogger("pluralign.store")
FOLDER = "pref_id_claims"  # under the store's root: one folder per user (by hash), one claim per id (by hash)
LEFT_EMPTY_S = 5.0  # a claim file empty this long (seconds, by its mtime): its maker (an earlier release) was killed
S3_THREADS = 32  # claims of one import written at once (each is one PUT)
CONTENT_FIELDS = ("prompt", "chosen", "rejected", "tie", "margin", "source", "attributes", "trl")  # SAME_ROW_FIELDS but created_at


class Claim(Base, frozen=True):
    """One id's claim: `content` the sha256 (hex) of the row's content but its time, `created_at` its
    time (unix seconds), `stamped` True when that time was given on receipt (the file had none: not
    compared), `received_at` when the claiming replica received it (unix seconds)."""

    content: str
    created_at: float
    stamped: bool
    received_at: float

    def same_preference(self, other: Claim) -> bool:
        return self.content == other.content and (self.stamped or other.stamped or self.created_at == other.created_at)


def claim_of(row, stamped: bool) -> Claim:
    """The claim of `row` (a StoredPreference); `stamped`: its `created_at` was given on receipt."""
    values = [getattr(row, name) for name in CONTENT_FIELDS]
    values[CONTENT_FIELDS.index("margin")] = None if row.margin is None else float(np.float32(row.margin))  # as stored
    content = hashlib.sha256(msgspec.json.encode(values, order="sorted")).hexdigest()
    return Claim(content=content, created_at=float(row.created_at), stamped=stamped, received_at=float(row.received_at or 0.0))


def _folder(tenant: str, user_id: str) -> str:
    """The user's claims' folder: `key_hash` of `tenant/user_id`, as their deletion record names them."""
    return key_hash(f"{tenant}/{user_id}")


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Claim).decode


class PrefIdClaims(abc.ABC):
    """Put-if-absent claims on ids (the module). Subclasses store them (`FolderClaims`, `MemoryClaims`,
    `S3Claims`) through the five abstract methods below."""

    def claim(self, tenant: str, user_id: str, claims: Mapping[str, Claim]) -> tuple[list[str], dict[str, Claim]]:
        """Claim each id of `claims` for the user: returns (the ids claimed now, {id: the claim found} for the
        ids claimed before with other content). An id claimed before with the same content is in neither; its
        claim takes the later `received_at` (a row sent again after a DELETE began is kept by it, and so is its
        claim: `forget_user`; until review 40 the claim kept its first time, the DELETE removed it, and the id was
        then free for other content on another replica while the row lived).
        Raises OSError (or the object store's error) when a claim cannot be written or read; the ids claimed
        by this call before then are released first."""
        folder = _folder(tenant, user_id)
        items = list(claims.items())

        def one(item: tuple[str, Claim]) -> tuple[str, bool, Claim | None]:
            pref_id, claim = item
            name = f"{folder}/{key_hash(pref_id)}"
            for _ in range(3):  # a claim removed between our put and our get (a DELETE): put again
                if self._put(name, _encode(claim)):
                    return pref_id, True, None
                found = self._get(name)
                if found is not None:
                    held = _decode(found)
                    if held.same_preference(claim) and claim.received_at > held.received_at:
                        self._replace(name, _encode(msgspec.structs.replace(held, received_at=claim.received_at)))
                    return pref_id, False, held
            raise OSError(f"the claim on pref_id {pref_id!r} kept changing while it was written")

        made, taken, failure = [], {}, None
        for pref_id, created, found in self._map(one, items):
            if isinstance(created, BaseException):
                failure = failure or created
            elif created:
                made.append(pref_id)
            elif found is not None and not found.same_preference(claims[pref_id]):
                taken[pref_id] = found
        if failure is not None:
            self.release(tenant, user_id, made)
            raise failure
        return made, taken

    def release(self, tenant: str, user_id: str, pref_ids: Iterable[str]) -> None:
        """Remove the claims on `pref_ids` this process made (its import was refused or failed before its
        rows were acknowledged). A claim that cannot be removed is logged and left."""
        folder = _folder(tenant, user_id)
        for name in [f"{folder}/{key_hash(p)}" for p in pref_ids]:
            try:
                self._remove(name)
            except Exception as exc:  # noqa: BLE001 (a claim left reserves its id for the same content only)
                log.warning("a pref_id claim was not released (%s): its id takes only the same content", exc)

    def forget_user(self, tenant: str, user_id: str, before: float | None = None) -> int:
        """Remove the user's claims of rows received before `before` (unix seconds; None: all), as a DELETE
        removes the rows; on S3 S3_THREADS at a time (until review 40 one after another: two round trips a
        claim). Returns how many went. Raises OSError (or the object store's error) when one cannot be read
        or removed, once the others were looked at."""

        def one(item: tuple[str]) -> tuple[str, bool, None]:
            name = item[0]
            if before is not None:
                found = self._get(name)
                if found is None or _decode(found).received_at >= before:
                    return name, False, None
            self._remove(name)
            return name, True, None

        gone, failure = 0, None
        for _, removed, _ in self._map(one, [(name,) for name in self._names(_folder(tenant, user_id))]):
            if isinstance(removed, BaseException):
                failure = failure or removed
            else:
                gone += bool(removed)
        if failure is not None:
            raise failure
        return gone

    def _map(self, fn, items):
        for item in items:
            try:
                yield fn(item)
            except Exception as exc:  # noqa: BLE001 (raised by `claim` after the others are looked at)
                yield item[0], exc, None

    @abc.abstractmethod
    def _put(self, name: str, data: bytes) -> bool:
        """Writes `data` under `name` only if nothing is there, atomically: True when written, False when taken."""

    @abc.abstractmethod
    def _replace(self, name: str, data: bytes) -> None:
        """Writes `data` under `name` whatever it holds (a claim's later time)."""

    @abc.abstractmethod
    def _get(self, name: str) -> bytes | None:
        """What `name` holds; None when nothing is there."""

    @abc.abstractmethod
    def _names(self, folder: str) -> list[str]:
        """The claim names under `folder` (one user's)."""

    @abc.abstractmethod
    def _remove(self, name: str) -> None:
        """Removes `name`; nothing when it is already gone."""


class FolderClaims(PrefIdClaims):
    """Claims as files under `root`/pref_id_claims, each written whole under a temporary name and hard-linked to
    its name (`os.link` fails when the name exists: put-if-absent), so a reader never finds one part written.
    Until review 40 each was created at its name with O_EXCL and then written, and a reader that found one still
    empty after ~100 ms removed it: a maker paused that long lost its claim, and both imports were acknowledged."""

    def __init__(self, root: str | Path):
        self.root = Path(root) / FOLDER

    def claim(self, tenant: str, user_id: str, claims: Mapping[str, Claim]) -> tuple[list[str], dict[str, Claim]]:
        (self.root / _folder(tenant, user_id)).mkdir(parents=True, exist_ok=True)  # once, not per id
        return super().claim(tenant, user_id, claims)

    def _put(self, name: str, data: bytes) -> bool:
        path = self.root / name
        part = path.with_name(f".{path.name}.{uuid.uuid4().hex}")  # "."-named: not a claim (`_names`)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.write(fd, data)  # ~150 bytes: one write
            finally:
                os.close(fd)
            os.link(part, path)  # whole when it appears; FileExistsError when the name is taken
            return True
        except FileExistsError:
            return False
        finally:
            part.unlink(missing_ok=True)

    def _replace(self, name: str, data: bytes) -> None:
        path = self.root / name
        part = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        try:
            part.write_bytes(data)
            os.replace(part, path)  # whole, as `_put`'s
        finally:
            part.unlink(missing_ok=True)

    def _get(self, name: str) -> bytes | None:
        for _ in range(100):
            try:
                data = (self.root / name).read_bytes()
            except FileNotFoundError:
                return None
            if data.endswith(b"}"):
                return data
            # whole when linked: an empty one is an earlier release's claim whose maker was killed before writing
            # it (no claim), or that maker still writing it (a moment later)
            if time.time() - (self.root / name).stat().st_mtime > LEFT_EMPTY_S:
                (self.root / name).unlink(missing_ok=True)
                return None
            time.sleep(0.05)
        return None

    def _names(self, folder: str) -> list[str]:
        path = self.root / folder
        return [f"{folder}/{p.name}" for p in path.iterdir() if not p.name.startswith(".")] if path.is_dir() else []

    def _remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


class MemoryClaims(PrefIdClaims):
    """Claims in this process (a `memory://` store, which no other process shares)."""

    def __init__(self):
        self._claims: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def _put(self, name: str, data: bytes) -> bool:
        with self._lock:
            return self._claims.setdefault(name, data) is data

    def _replace(self, name: str, data: bytes) -> None:
        with self._lock:
            self._claims[name] = data

    def _get(self, name: str) -> bytes | None:
        return self._claims.get(name)

    def _names(self, folder: str) -> list[str]:
        return [n for n in list(self._claims) if n.startswith(folder + "/")]

    def _remove(self, name: str) -> None:
        with self._lock:
            self._claims.pop(name, None)


# boto3.client's arguments from Lance's storage options, by object_store's names for them (its aliases), each
# else from the variable object_store reads (`AWS_` + the name, upper-cased) where boto3 reads another
_BOTO3_ARGS = {
    "endpoint_url": ("aws_endpoint", "aws_endpoint_url", "endpoint", "endpoint_url"),
    "region_name": ("aws_region", "region", "aws_default_region", "default_region"),
    "aws_access_key_id": ("aws_access_key_id", "access_key_id"),
    "aws_secret_access_key": ("aws_secret_access_key", "secret_access_key"),
    "aws_session_token": ("aws_session_token", "aws_token", "session_token", "token"),
}


def _lance_option(options: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    """The first of `names` in `options`, else of the `aws_` ones in the environment (upper-cased: object_store
    reads the `AWS_` variables only)."""
    return next((v for n in names if (v := options.get(n) or (n.startswith("aws_") and os.environ.get(n.upper())))), None)


def _seconds(duration: str) -> float:
    """object_store's duration ("10000ms", "30s", "30") in seconds."""
    text = duration.strip().lower()
    return float(text[:-2]) / 1000 if text.endswith("ms") else float(text.removesuffix("s"))


class S3Claims(PrefIdClaims):
    """Claims as objects under `s3://bucket/prefix/pref_id_claims/`, each a PUT with `If-None-Match: *`,
    S3_THREADS at a time. `options`: the store's Lance storage options (endpoint, region, credentials, by any of
    object_store's names, and its `timeout` and `connect_timeout`); one left out is taken where Lance takes it (the
    `AWS_*` variable of its name: AWS_ENDPOINT, which boto3 does not read), else boto3's default (the instance
    role). Until review 40 only the `aws_*` options were read, and a store reached through AWS_ENDPOINT had its
    claims sent to AWS itself."""

    def __init__(self, uri: str, options: Mapping[str, str] | None = None):
        import boto3  # here: only a store on S3 needs it (~0.3 s of imports)
        from botocore.config import Config

        options = {k.lower(): v for k, v in (options or {}).items() if v}
        bucket, _, prefix = uri.split("://", 1)[1].split("?", 1)[0].partition("/")
        self.bucket, self.prefix = bucket, "/".join(p for p in (prefix.strip("/"), FOLDER) if p)
        timeouts = {name: _seconds(options[key]) for name, key in (("read_timeout", "timeout"), ("connect_timeout", "connect_timeout"))
                    if key in options}
        self.client = boto3.client(
            "s3", **{arg: _lance_option(options, names) for arg, names in _BOTO3_ARGS.items()},
            config=Config(max_pool_connections=S3_THREADS, retries={"max_attempts": 3, "mode": "standard"}, **timeouts),
        )
        self._pool = ThreadPoolExecutor(S3_THREADS, thread_name_prefix="claims")

    def _map(self, fn, items):
        futures = [self._pool.submit(fn, item) for item in items]
        for item, future in zip(items, futures, strict=True):
            exc = future.exception()
            yield (item[0], exc, None) if exc is not None else future.result()

    def _put(self, name: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}", Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "PreconditionFailed":  # the key exists
                return False
            if code == "ConditionalRequestConflict":  # another PUT of the key in flight: look once it is done
                return False
            raise

    def _replace(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}", Body=data)

    def _get(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def _names(self, folder: str) -> list[str]:
        names = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/{folder}/")
        for page in pages:
            names += [item["Key"].removeprefix(self.prefix + "/") for item in page.get("Contents", [])]
        return names

    def _remove(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")


def claims_for(uri: str, options: Mapping[str, str] | None = None) -> PrefIdClaims | None:
    """The claims of the store at `uri` (a folder, `memory://`, `s3://` or `s3+ddb://`); None for another
    object store (no put-if-absent written for it here)."""
    if uri.startswith(("s3://", "s3+ddb://")):
        return S3Claims(uri, options)
    if uri.startswith("memory://"):
        return MemoryClaims()
    if uri.startswith("file://"):
        return FolderClaims(uri.removeprefix("file://"))
    if "://" in uri:
        return None
    return FolderClaims(uri)
