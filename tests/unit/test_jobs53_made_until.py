"""Session jobs53: a deletion record says until when what was made may hold the user's rows from before the DELETE
(`made_until`; null: `deleted_at`, when it was written). A DELETE finished from the journal for a user who came back once
those rows had left the store records the DELETE's beginning there, so another replica keeps (and promotes) what was made
since: tests/e2e/test_jobs53_replica_delete_killed.py (slow) drives it through real replicas. Here: a `deletions` table of
session 52 (no such column) gains it on open, its records read as before, and both the sweep's `Forget` and the
promotion's check (`Store.deletion_reaches`) go by `made()`."""

from __future__ import annotations

import lancedb
import pyarrow as pa

from pluralign.store import Store
from pluralign.store.deletions import Forget, deletion_schema, new_deletion, user_hash


def test_a_record_says_until_when_what_was_made_holds_the_users_old_rows(tmp_path):
    new = deletion_schema()
    session52 = pa.schema([f for f in new if f.name != "made_until"], metadata=new.metadata)
    row = {"deletion_id": "old", "tenant": "t", "user_hash": user_hash("t", "ann"), "deleted_at": 1000.0, "replica": 0,
           "schema_version": 1, "began_at": 900.0}
    lancedb.connect(str(tmp_path)).create_table("deletions", pa.Table.from_pylist([row], schema=session52))

    store = Store(str(tmp_path), "enc", 8)
    # bob's DELETE began at 2000, was finished from the journal at 3000 after their old rows had gone
    store.record_deletion(new_deletion("t", "bob", 3000.0, 1, began_at=2000.0, made_until=2000.0))
    by_id = {d.deletion_id: d for d in Store(str(tmp_path), "enc", 8).deletions_since(0)}
    assert (by_id["old"].made_until, by_id["old"].made()) == (None, 1000.0)
    (bob,) = [d for i, d in by_id.items() if i != "old"]
    assert (bob.began(), bob.made(), bob.deleted_at) == (2000.0, 2000.0, 3000.0)

    forget = Forget.of(by_id.values())
    assert forget.made_at(999.0)("t/ann") and not forget.made_at(1000.0)("t/ann")  # by when it was written
    assert forget.made_at(1999.0)("t/bob") and not forget.made_at(2500.0)("t/bob")  # a job queued since they came back
    assert store.deletion_reaches(user_hash("t", "ann"), 999.0) and not store.deletion_reaches(user_hash("t", "ann"), 1000.5)
    assert store.deletion_reaches(user_hash("t", "bob"), 1999.0) and not store.deletion_reaches(user_hash("t", "bob"), 2500.0)
    assert store.deleted_after(user_hash("t", "bob"), 2500.0)  # recorded after it all the same (chats, watermarks)
