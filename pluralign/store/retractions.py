"""Rows taken back, as a record every process on one store reads: how a retraction answered by one replica reaches
the feedback log only another replica holds.

A retraction (`service.users.retractions`) deletes one stored row from the shared table. The replica that received
the row may still keep its moved record in a segment of its own feedback log; at its next start the log replays it,
finds it missing from the table and would move it back in. So, with replicas, the retraction first appends a row here
(the user by `user_hash`, the row by `pref_hash`, when it began), and a replica's replay drops a replayed row named
here that was received before its retraction (`Store.retracted_before`; a row sent again later under the same id is
the user's new word, kept even beside the record taken back). A user's DELETE (and so a tenant's removal) deletes the
user's rows here (`Store.delete_users`); one finished for a user who came back meanwhile (`before`) only those of
retractions begun before it.

A retraction of a row no table holds yet (with replicas, one still waiting in the feedback log of the replica that
received it: `service.users.retractions`) is recorded the same way, its `retraction_id` marked `PENDING` (the row may
never come: an id the user never sent). Each mover drops the rows it is about to store that a record names
(`pluralign.store.ingest.Ingestor`, as the replay does), so the row never reaches the table. A pending record older
than `PENDING_KEEP_S` is deleted at the next record of its tenant: nothing of an id that never comes stays for good. At
most `PENDING_PER_USER` pending records younger than that are kept for a user, `PENDING_PER_TENANT` for a tenant: past
either, a new one is refused (`TooManyPending`); one of an id pending already replaces its older ones and is never
refused (the same DELETE sent again: one record an id). So one tenant's DELETEs of ids that never come cannot grow the table
(which every move and retraction of every tenant scans) without bound. Only records whose row may still come count: one
whose row arrived, dropped by a mover or found stored and taken back (`Store.pending_met`), is marked `ARRIVED` and
counts toward neither bound; it stays a pending record otherwise (it drops a copy of the row received before it, as at a
replay after a crash; the id still reads as pending, `Store.retraction_recorded`; it goes past `PENDING_KEEP_S`); the
same retraction sent again then writes a record so marked (`first_id`: a marked record's id as written).

An older release never opens this table (nothing it reads changed); its rows are appended and never changed but by
that DELETE.
"""

from __future__ import annotations

import hashlib
import uuid

import msgspec
import pyarrow as pa

from pluralign.store.deletions import record_schema, user_hash
from pluralign.store.schemas import SCHEMA_VERSION

TABLE = "retractions"
PENDING = "pending-"  # the start of a retraction_id recorded before its row was seen stored
ARRIVED = PENDING + "arrived-"  # the start of a pending record's id once its row arrived (dropped or taken back)
PENDING_KEEP_S = 7 * 86400.0  # how long a pending record is kept (seconds): past it, a row still to come is kept
# the most pending records kept (younger than PENDING_KEEP_S) for one user, and for one tenant: past either, a new one is
# refused (`TooManyPending`). A row on its way waits seconds in another replica's log (days for a stopped replica), so a
# user has a few at most; without a bound a client sending DELETEs of random ids (each a 202: an unknown id cannot be told
# from one on its way) grew the table for a week, and every move's and every retraction's scan of it with it
PENDING_PER_USER = 100
PENDING_PER_TENANT = 10_000


class TooManyPending(Exception):
    """A pending retraction refused: the user (`whose` "user") or their tenant ("tenant") holds `limit` pending records
    younger than PENDING_KEEP_S already. `retry_after`: seconds until the oldest of them is past it."""

    def __init__(self, whose: str, limit: int, retry_after: float):
        self.whose, self.limit, self.retry_after = whose, limit, retry_after
        super().__init__(f"{'this user' if whose == 'user' else 'the tenant'} has {limit} retractions of rows not stored "
                         f"yet pending, the most kept (each for {PENDING_KEEP_S / 86400:g} days)")


def pref_hash(tenant: str, user_id: str, pref_id: str) -> str:
    """sha256 (hex) of the row's key (tenant, user_id, pref_id), encoded unambiguously (a JSON list)."""
    return hashlib.sha256(msgspec.json.encode([tenant, user_id, pref_id])).hexdigest()


def first_id(retraction_id: str) -> str:
    """A record's `retraction_id` as it was written: a pending record marked `ARRIVED` since (`Store.pending_met`)
    named as before (`PENDING` and the same random hex)."""
    return PENDING + retraction_id.removeprefix(ARRIVED) if retraction_id.startswith(ARRIVED) else retraction_id


def retraction_schema() -> pa.Schema:
    """One row per retraction: the user and the row, by hash; when it began (unix seconds) and which replica answered."""
    return record_schema("retraction_id", "retracted_at", hashed=["pref_hash"])


def retraction_row(tenant: str, user_id: str, pref_id: str, retracted_at: float, replica: int, pending: bool = False) -> dict:
    """The table's row of a retraction of `pref_id` of user `user_id` of `tenant`, begun at `retracted_at` (unix seconds);
    `pending`: the row was not in the table then (its id marked `PENDING`)."""
    return {"retraction_id": (PENDING if pending else "") + uuid.uuid4().hex, "tenant": tenant, "user_hash": user_hash(tenant, user_id),
            "pref_hash": pref_hash(tenant, user_id, pref_id), "retracted_at": float(retracted_at), "replica": int(replica),
            "schema_version": SCHEMA_VERSION}
