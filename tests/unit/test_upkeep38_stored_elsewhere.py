"""`pluralign.store.ingest.split_held`: the feedback mover's split of a batch against the rows another replica
already stored, row by row: ids held with the same content are done, ids held with other content left out, and
the rest kept, in order (until session 44 an entry any of whose ids was held went whole: `split_stored`)."""

from __future__ import annotations

import msgspec
import numpy as np

from pluralign.store import StoredPreference
from pluralign.store.feedback_log import Entry
from pluralign.store.ingest import split_held


def row(pref_id: str, chosen: str = "a", created_at: float = 0.0) -> StoredPreference:
    return StoredPreference(tenant="t", user_id="u", pref_id=pref_id, prompt="q", chosen=chosen, rejected="b",
                            kind="comparison", created_at=created_at)


def request(seq: int, *ids: str) -> Entry:
    return Entry(seq=seq, segment=0, rows=[row(i) for i in ids])


def held(*rows: StoredPreference) -> dict[tuple[str, str, str], StoredPreference]:
    return {(r.tenant, r.user_id, r.pref_id): r for r in rows}


def test_only_the_rows_held_with_other_content_are_left_out_and_the_rest_keep_their_order():
    a, b, c, d = request(1, "a1", "a2"), request(2, "b1"), request(3, "c1", "c2"), request(4, "d1")
    same_as_b = request(5, "b1")  # an equal copy (the same retry acknowledged twice): found stored too
    stored = held(row("a1"), row("a2"), row("b1", created_at=7.0), row("c2", chosen="other"))  # b1: stamped anew elsewhere
    kept, done, again, refused = split_held([a, b, c, d, same_as_b], stored)
    assert done == [a, b, same_as_b]
    assert [(e.seq, [r.pref_id for r in e.rows]) for e in kept] == [(3, ["c1"]), (4, ["d1"])]  # before: c whole out
    assert kept[1] is d  # an entry with nothing held is itself
    assert [r.pref_id for r in again] == ["a1", "a2", "b1", "b1"]
    assert [(r.pref_id, field) for r, field in refused] == [("c2", "chosen")]
    assert split_held([a, d], {}) == ([a, d], [], [], [])


def test_a_held_row_is_compared_as_stored():
    """A margin read back as float32 and a time the row's copy was stamped with anew are the same preference."""
    sent = msgspec.structs.replace(row("m1", created_at=5.0), margin=0.1)
    stored = msgspec.structs.replace(row("m1", created_at=9.0), margin=float(np.float32(0.1)))
    kept, done, again, refused = split_held([Entry(seq=1, segment=0, rows=[sent])], held(stored))
    assert (kept, refused, again) == ([], [], [sent]) and len(done) == 1


def test_half_of_a_batch_of_2048_one_row_requests_stored_leaves_the_other_half_in_order():
    entries = [request(i, f"p{i}") for i in range(2048)]
    kept, done, _, _ = split_held(entries, held(*(row(f"p{i}") for i in range(0, 2048, 2))))
    assert [e.seq for e in kept] == list(range(1, 2048, 2)) and len(done) == 1024
