"""Review of retractrep55 (pending retractions with replicas). A keyed feedback whose row was taken back through
replica b while it waited in replica a's log (a 202, the row dropped) is sent again under its key: its row comes back
under the same pref_id, the user's new word, kept. Taken back again through b while it waits in a's log, b found the
pending record of the first retraction, wrote none (its time before the row's arrival) and answered 202 all the same;
a then stored the row, learned from and exported. The same key sent again at once after a 202 (within the replicas'
skew, which the 202 did not wait out) had its row dropped after its 201. And a row a stored in the instant before b's pending record, whose
first try at being taken back by a failed, stayed stored. Two real services over HTTP on one LanceDB store. Slow-marked
(two services each, ~30 s a test with their start at load 5: `make test-scaleout`)."""

from __future__ import annotations

import time

import pytest

from tests.service.test_retract54 import MISCLICK, give_rule
from tests.service.test_retractrep54_replicas import listed
from tests.service.test_retractrep55_replicas import exported

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py


def keyed_misclick(client, user: str, key: str) -> str:
    """One comparison against the rule, with a marker, sent with `Idempotency-Key: key`; its pref_id."""
    r = client.post("/v1/feedback", headers={"Idempotency-Key": key}, json={
        "type": "comparison", "user": user, "prompt": f"A tip on cooking? {MISCLICK}",
        "chosen": f"Consider these points on cooking:\n- one\n- two\n- three\n- and a long story besides. {MISCLICK}",
        "rejected": "Keep it short, 0."})
    assert r.status_code == 201, r.text
    return r.json()["stored"][0]


@pytest.mark.slow
def test_a_row_sent_again_under_an_id_taken_back_pending_and_taken_back_again_is_never_stored(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=1000, deletion_sweep_s=3600.0)
    with first, a.client("acme") as acme_a, second, b.client("acme") as acme_b:
        kept = set(give_rule(acme_a, "ria", 2))
        assert listed(acme_a, "ria") == kept
        with a.runtime.ingest.paused():
            oops = keyed_misclick(acme_a, "ria", "undo-me")
            r = acme_b.delete(f"/v1/users/ria/preferences/{oops}")
            assert r.status_code == 202 and r.json()["pending"] is True, r.text
        a.runtime.ingest.flush()
        assert listed(acme_a, "ria") == kept  # dropped before it was stored

        with a.runtime.ingest.paused():
            again = keyed_misclick(acme_a, "ria", "undo-me")  # nothing of the key stored: the row again, its id again
            assert again == oops
            r = acme_b.delete(f"/v1/users/ria/preferences/{again}")  # taken back again while it waits in a's log
            assert r.status_code == 202 and r.json()["pending"] is True, r.text
        a.runtime.ingest.flush()
        for client in (acme_a, acme_b):
            assert listed(client, "ria") == kept  # was kept | {oops}: the second 202 recorded nothing new
            assert MISCLICK not in exported(client, "ria")

        # the user's word sent again at once after a 202, under the same key: received after the retraction, kept. The
        # 202 came before the replicas' skew (sync_ms) had passed, and the row, inside it, was dropped as taken back
        with a.runtime.ingest.paused():
            sure = keyed_misclick(acme_a, "ria", "sure")
            assert acme_b.delete(f"/v1/users/ria/preferences/{sure}").status_code == 202
        a.runtime.ingest.flush()
        assert keyed_misclick(acme_a, "ria", "sure") == sure
        a.runtime.ingest.flush()
        assert listed(acme_a, "ria") == kept | {sure}


@pytest.mark.slow
def test_a_row_stored_in_the_instant_before_its_pending_retraction_is_taken_back_after_a_failed_try(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """a stored the row between b's look and b's record (a's look first), and its first try to take it back failed (a
    503: the user's import still being stored, as `flush_for_read` answers). That try was logged and given up: the
    user, answered 202, had the row stored, listed and exported for good. Now it is tried again a moment later."""
    from litestar.exceptions import ServiceUnavailableException

    from service.users import retractions
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(retractions, "ARRIVED_RETRY_S", (0.2, 0.5), raising=False)
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, deletion_sweep_s=3600.0)
    with first, a.client("acme") as acme_a, second, b.client("acme") as acme_b:
        kept = set(give_rule(acme_a, "ria", 2))
        assert listed(acme_a, "ria") == kept
        flush, failed = retractions.flush_for_read, []

        def backlogged_once(rt, tenant, user_id):
            if rt is a.runtime and not failed:
                failed.append(user_id)
                raise ServiceUnavailableException(detail="this user's comparisons are still being stored")
            flush(rt, tenant, user_id)

        with a.runtime.ingest.paused():
            late = keyed_misclick(acme_a, "ria", "late")
            assert acme_b.delete(f"/v1/users/ria/preferences/{late}").status_code == 202
            monkeypatch.setattr(a.runtime.ingest, "_not_retracted", lambda entries: entries)  # its look came first
            monkeypatch.setattr(retractions, "flush_for_read", backlogged_once)
        a.runtime.ingest.flush()
        deadline = time.monotonic() + 20
        while late in listed(acme_a, "ria") and time.monotonic() < deadline:  # a stored it: b may read 200 ms stale
            time.sleep(0.1)
        assert failed == ["ria"]  # the first try met the 503
        assert listed(acme_a, "ria") == kept and MISCLICK not in exported(acme_a, "ria")
        time.sleep(0.3)  # past b's staleness (sync_ms)
        assert listed(acme_b, "ria") == kept and MISCLICK not in exported(acme_b, "ria")
