"""A row taken back through one replica (DELETE /v1/users/{user_id}/preferences/{pref_id}) stays taken back on the
replica that received it: that replica's feedback-log segment still held the moved record, and its next start moved it
back in (the table no longer held it; found in review retract54). Now the retraction is recorded in the store's
`retractions` table (`pluralign.store.retractions`): a replay drops such a row, and the replicas' sweeps rewrite their
log files without it. Two real services over HTTP on one LanceDB store, b restarted on its folder.
Slow-marked (two services and a restart, ~13 s at load 8: `make test-scaleout`)."""

from __future__ import annotations

import pytest

from tests.service.test_retract54 import MISCLICK, give_rule, misclick

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py

SWEEP_S = 3600.0  # no sweep pass but the first and those the test runs: the start's replay is what is looked at first


def listed(client, user: str) -> set[str]:
    r = client.get(f"/v1/users/{user}/preferences")  # moves the user's rows waiting in the log into the table first
    assert r.status_code == 200, r.text
    return {p["pref_id"] for p in r.json()["data"]}


def in_log_files(replica, text: str) -> bool:
    return any(text.encode() in path.read_bytes() for path in replica.runtime.ingest.log.folder.glob("*.log"))


@pytest.mark.slow
def test_a_row_taken_back_through_another_replica_comes_back_neither_at_a_restart_nor_after_a_sweep(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    from tests.service.tiny import start_replicas, start_service

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, deletion_sweep_s=SWEEP_S)
    with first, a.client("acme") as acme_a:
        with second, b.client("acme") as acme_b:
            kept = set(give_rule(acme_b, "ria", 2))
            oops = misclick(acme_b, "ria")
            assert listed(acme_b, "ria") == kept | {oops}  # moved into the table by b; its record stays in b's segment
            assert in_log_files(b, MISCLICK)
            r = acme_a.delete(f"/v1/users/ria/preferences/{oops}")
            assert r.status_code == 200, r.text
        settings = {k: getattr(b.runtime.settings, k) for k in ("store_uri", "replicas", "replica_index", "store_sync_ms",
                                                                 "deletion_sweep_s")}
        again, b2 = start_service(tmp_path / "b", tiny_generator_dir, tiny_pal_dir, minilm, **settings)
        b2.keys["acme"] = b2.runtime.keys.issue("acme")
        with again, b2.client("acme") as acme_b2:
            b2.runtime.wait_for_background()
            assert listed(acme_b2, "ria") == kept and listed(acme_a, "ria") == kept  # the restart moved it back in before
            assert not in_log_files(b2, MISCLICK)
            assert acme_a.delete(f"/v1/users/ria/preferences/{oops}").status_code == 404

            # b2 running: a row it received, taken back through a, leaves b2's log files at b2's next sweep pass
            marker = "Pangolin-retractrep54-tzq"
            r = acme_b2.post("/v1/feedback", json={"type": "comparison", "user": "ria", "prompt": f"Which? {marker}",
                                                   "chosen": f"This one. {marker}", "rejected": "That one."})
            assert r.status_code == 201, r.text
            (second_oops,) = r.json()["stored"]
            assert listed(acme_b2, "ria") == kept | {second_oops} and in_log_files(b2, marker)
            assert acme_a.delete(f"/v1/users/ria/preferences/{second_oops}").status_code == 200
            b2.runtime.deletion_sweep.run_once()
            assert not in_log_files(b2, marker)
            assert a.runtime.store.retractions.count_rows() == 2

            # the user's DELETE takes their retraction records with them
            assert acme_a.delete("/v1/users/ria").status_code in (200, 204)
            for replica in (a, b2):
                replica.runtime.store.retractions.checkout_latest()
                assert replica.runtime.store.retractions.count_rows() == 0
