"""Review of retractrep55 (pending retractions with replicas). A keyed feedback whose row was taken back through
replica b while it waited in replica a's log (a 202, the row dropped) is sent again under its key: its row comes back
under the same pref_id, the user's new word, kept. Taken back again through b while it waits in a's log, b found the
pending record of the first retraction, wrote none (its time before the row's arrival) and answered 202 all the same;
a then stored the row, learned from and exported. Two real services over HTTP on one LanceDB store. Slow-marked (two
services: `make test-scaleout`)."""

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
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, deletion_sweep_s=3600.0)
    with first, a.client("acme") as acme_a, second, b.client("acme") as acme_b:
        kept = set(give_rule(acme_a, "ria", 2))
        assert listed(acme_a, "ria") == kept
        with a.runtime.ingest.paused():
            oops = keyed_misclick(acme_a, "ria", "undo-me")
            r = acme_b.delete(f"/v1/users/ria/preferences/{oops}")
            assert r.status_code == 202 and r.json()["pending"] is True, r.text
        a.runtime.ingest.flush()
        assert listed(acme_a, "ria") == kept  # dropped before it was stored
        time.sleep(0.5)  # past the retraction's time and the replicas' skew (sync_ms)

        with a.runtime.ingest.paused():
            again = keyed_misclick(acme_a, "ria", "undo-me")  # nothing of the key stored: the row again, its id again
            assert again == oops
            r = acme_b.delete(f"/v1/users/ria/preferences/{again}")  # taken back again while it waits in a's log
            assert r.status_code == 202 and r.json()["pending"] is True, r.text
        a.runtime.ingest.flush()
        for client in (acme_a, acme_b):
            assert listed(client, "ria") == kept  # was kept | {oops}: the second 202 recorded nothing new
            assert MISCLICK not in exported(client, "ria")
