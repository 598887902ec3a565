"""review retract56: with replicas, the same retraction of an id in no table sent again is a 202 again, recorded again
(docs/api.md, "Taking back one answer"): a client that sends its DELETE again (a retry, or a look whether the row came)
must not use up the bound on pending records (`PENDING_PER_USER`, retract56) meant for distinct ids, nor grow the
`retractions` table (every move and retraction scans it) with each copy. The record sent again replaces the key's
older pending ones (the newest retraction's time is the one that counts: `Store.retracted_before`).

The store's own test is quick (real LanceDB in a temp dir); the one over HTTP starts a real service (replica 0 of 2, the
other never started), slow-marked: `make test-scaleout`."""

from __future__ import annotations

import time
import uuid

import pytest

from pluralign.store import Store, StoredPreference, retractions
from tests.service.test_retract54 import give_rule


def arrived(pref_id: str, received_at: float) -> StoredPreference:
    return StoredPreference(tenant="acme", user_id="ria", pref_id=pref_id, prompt="p", chosen="c", rejected="r",
                            kind="comparison", created_at=received_at, received_at=received_at)


def test_a_pending_retraction_sent_again_replaces_its_record_and_is_not_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(retractions, "PENDING_PER_USER", 3)
    store = Store(str(tmp_path / "db"), "enc", 8, sync_seconds=0)
    now = time.time()
    for i in range(6):  # the same DELETE sent 6 times (was TooManyPending at the 4th, 3 records already)
        store.record_retraction("acme", "ria", "coming", now + i, 0, pending=True)
    assert store.retractions.count_rows() == 1  # one record of the key: the newest
    assert store.retraction_recorded("acme", "ria", "coming") == "pending"
    # the newest time counts: a row received before it is taken back, one sent again after it stays
    assert store.retracted([arrived("coming", now + 4.5), arrived("coming", now + 6)]) == {("acme", "ria", "coming")}
    assert store.retracted_before([arrived("coming", now + 4.5)])[("acme", "ria", "coming")] == now + 5
    for other in ("a", "b"):  # two distinct ids more: 3, the user's bound
        store.record_retraction("acme", "ria", other, now, 0, pending=True)
    with pytest.raises(retractions.TooManyPending):
        store.record_retraction("acme", "ria", "d", now, 0, pending=True)
    store.record_retraction("acme", "ria", "coming", now + 7, 0, pending=True)  # one held, sent again: still not refused
    assert store.retractions.count_rows() == 3


@pytest.mark.slow
def test_the_same_pending_retraction_sent_again_over_http_stays_a_202(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch, short_read_margin):
    from tests.service.tiny import start_service

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(retractions, "PENDING_PER_USER", 3, raising=False)
    server, a = start_service(tmp_path / "a", tiny_generator_dir, tiny_pal_dir, minilm, store_uri=str(tmp_path / "store"),
                              replicas=2, replica_index=0, store_sync_ms=50, deletion_sweep_s=3600.0)
    with server, a.client("acme") as acme:
        give_rule(acme, "ann", 1)
        coming = uuid.uuid4().hex
        codes = [acme.delete(f"/v1/users/ann/preferences/{coming}").status_code for _ in range(5)]
        assert codes == [202] * 5, codes  # was [202, 202, 202, 429, 429]: the user's bound used up by one id
        assert acme.delete(f"/v1/users/ann/preferences/{uuid.uuid4().hex}").status_code == 202  # a 2nd id: room left
        assert a.runtime.store.retractions.count_rows() == 2


def test_a_pending_retraction_sent_again_is_recorded_when_its_older_records_cannot_be_deleted(tmp_path, monkeypatch):
    """The new record is written before the older ones go: a failure to delete them leaves one more (they go at the next
    copy or past their keep), never a 503 for a retraction that was recorded."""
    store = Store(str(tmp_path / "db"), "enc", 8, sync_seconds=0)
    now = time.time()
    store.record_retraction("acme", "ria", "coming", now, 0, pending=True)

    def refused(where):
        raise OSError("no room to write the deletion")

    monkeypatch.setattr(store.retractions, "delete", refused)
    store.record_retraction("acme", "ria", "coming", now + 1, 0, pending=True)  # raised before
    monkeypatch.undo()
    assert store.retracted_before([arrived("coming", now)])[("acme", "ria", "coming")] == now + 1
    store.record_retraction("acme", "ria", "coming", now + 2, 0, pending=True)  # the next copy takes both older ones
    assert store.retractions.count_rows() == 1
