"""`pluralign.store.ingest.split_stored`: the feedback mover's split of a batch into the requests another
replica already stored (left out whole) and the rest, in order."""

from __future__ import annotations

from pluralign.store import StoredPreference
from pluralign.store.feedback_log import Entry
from pluralign.store.ingest import split_stored


def request(seq: int, *ids: str) -> Entry:
    return Entry(seq=seq, segment=0, rows=[StoredPreference(tenant="t", user_id="u", pref_id=i, prompt="q", chosen="a",
                                                            rejected="b", kind="comparison", created_at=0.0) for i in ids])


def keys(*ids: str) -> set[tuple[str, str, str]]:
    """The keys (`stored_key`) of user u's rows `ids`, as the table holds them."""
    return {("t", "u", i) for i in ids}


def test_a_request_any_of_whose_ids_is_stored_goes_whole_and_the_rest_keep_their_order():
    a, b, c, d = request(1, "a1", "a2"), request(2, "b1"), request(3, "c1", "c2"), request(4, "d1")
    same_as_b = request(5, "b1")  # an equal copy (the same retry acknowledged twice): found stored too
    stored, kept, partly = split_stored([a, b, c, d, same_as_b], keys("a1", "a2", "b1", "c2"))
    assert stored == [a, b, c, same_as_b] and kept == [d]
    assert partly == 1  # c: a request of other rows sent with the same key, only partly stored
    assert split_stored([a, d], set()) == ([], [a, d], 0)


def test_half_of_a_batch_of_2048_one_row_requests_stored_leaves_the_other_half_in_order():
    entries = [request(i, f"p{i}") for i in range(2048)]
    stored, kept, _ = split_stored(entries, keys(*(f"p{i}" for i in range(0, 2048, 2))))
    assert [e.seq for e in kept] == list(range(1, 2048, 2)) and len(stored) == 1024
