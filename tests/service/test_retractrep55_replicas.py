"""A user sends feedback through replica a and at once takes it back (an "undo") through replica b, while the row still
waits in a's feedback log (a's worker paused). b found it in no table and answered 404; a then stored the row and it was
learned from and exported. Now b records the retraction in the store, pending, and answers 202 (`"pending": true`); a's
mover drops the row before it is stored (`Ingestor._not_retracted`), and a row a stored between b's look and b's record is
taken back by a once stored (`retract_arrived`). Two real services over HTTP on one LanceDB store.
A crash of a before it stored the row: its replay at the restart drops it. Slow-marked (two services each, ~35 s a test at
load 12 with their start: `make test-scaleout`)."""

from __future__ import annotations

import time

import pytest

from tests.service.test_retract54 import MISCLICK, give_rule, misclick
from tests.service.test_retractrep54_replicas import in_log_files, listed

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py


def exported(client, user: str) -> str:
    r = client.get(f"/v1/users/{user}/export?format=all")
    assert r.status_code == 200, r.text
    return r.text


@pytest.mark.slow
def test_a_row_taken_back_through_another_replica_before_it_was_stored_is_never_stored(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, deletion_sweep_s=3600.0)
    with first, a.client("acme") as acme_a, second, b.client("acme") as acme_b:
        kept = set(give_rule(acme_a, "ria", 2))
        assert listed(acme_a, "ria") == kept
        with a.runtime.ingest.paused():  # the misclick acknowledged by a, still in a's log
            oops = misclick(acme_a, "ria")
            r = acme_b.delete(f"/v1/users/ria/preferences/{oops}")
            assert r.status_code == 202, r.text  # a 404 before: b's table did not hold it
            assert r.json() == {"user": "ria", "retracted": oops, "pending": True}
            before = b.runtime.store.retracted_before([r for e in a.runtime.ingest.log.pending.values() for r in e.rows])
            r = acme_b.delete("/v1/users/ria/preferences", params={"pref_id": oops})  # sent again: recorded again
            assert r.status_code == 202 and r.json()["pending"] is True, r.text
            # its record replaces the one before (review retract56: one pending record an id), at a later time
            assert b.runtime.store.retractions.count_rows() == 1
            key = ("acme", "ria", oops)
            assert b.runtime.store.retracted_before([r for e in a.runtime.ingest.log.pending.values() for r in e.rows])[key] > before[key]
            assert in_log_files(a, MISCLICK)
            moved = a.runtime.ingest.moved
        a.runtime.ingest.flush()
        assert a.runtime.ingest.moved == moved  # never stored, not even for a moment
        assert not in_log_files(a, MISCLICK)  # dropped from a's log's files
        for client in (acme_a, acme_b):
            assert listed(client, "ria") == kept
            assert MISCLICK not in exported(client, "ria")
            profile = client.get("/v1/users/ria").json()
            assert profile["counts"]["preferences"] == 2 and profile["attributes"] == {}, profile

        # the same comparison sent again after the retraction is the user's new word (a new id), kept
        again = misclick(acme_a, "ria")
        assert again != oops and listed(acme_a, "ria") == kept | {again}
        assert acme_a.delete(f"/v1/users/ria/preferences/{again}").status_code == 200

        # a stored the row between b's look and b's record (a's look at the records made before it): a takes it back
        with a.runtime.ingest.paused():
            late = misclick(acme_a, "ria")
            assert acme_b.delete(f"/v1/users/ria/preferences/{late}").status_code == 202
            monkeypatch.setattr(a.runtime.ingest, "_not_retracted", lambda entries: entries)  # its look came first
        a.runtime.ingest.flush()
        deadline = time.monotonic() + 20
        while late in listed(acme_a, "ria") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listed(acme_a, "ria") == kept and MISCLICK not in exported(acme_b, "ria")

        # the user's DELETE takes the pending records with them
        assert acme_b.delete("/v1/users/ria").status_code in (200, 204)
        for replica in (a, b):
            replica.runtime.store.retractions.checkout_latest()
            assert replica.runtime.store.retractions.count_rows() == 0


@pytest.mark.slow
def test_a_row_taken_back_through_another_replica_before_a_crash_of_the_one_holding_it_is_dropped_at_its_restart(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """a acknowledged the row and stopped before storing it (its worker stopped: as a crash, the row only in its log's
    files); the retraction through b is a 202; a's next start replays its log and drops the row: never stored."""
    from tests.service.tiny import start_replicas, start_service

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, deletion_sweep_s=3600.0)
    with second, b.client("acme") as acme_b:
        with first, a.client("acme") as acme_a:
            kept = set(give_rule(acme_a, "ria", 2))
            assert listed(acme_a, "ria") == kept
            a.runtime.ingest.stop()  # no batch moved from here on: what it acknowledges stays in its log's files
            oops = misclick(acme_a, "ria")
            r = acme_b.delete(f"/v1/users/ria/preferences/{oops}")
            assert r.status_code == 202 and r.json()["pending"] is True, r.text
        assert in_log_files(a, MISCLICK)
        settings = {k: getattr(a.runtime.settings, k) for k in ("store_uri", "replicas", "replica_index", "store_sync_ms",
                                                                 "deletion_sweep_s")}
        again, a2 = start_service(tmp_path / "a", tiny_generator_dir, tiny_pal_dir, minilm, **settings)
        with again, a2.client("acme") as acme_a2:
            a2.runtime.wait_for_background()
            assert a2.runtime.ingest.moved == 0 and not in_log_files(a2, MISCLICK)
            for client in (acme_a2, acme_b):
                assert listed(client, "ria") == kept and MISCLICK not in exported(client, "ria")
