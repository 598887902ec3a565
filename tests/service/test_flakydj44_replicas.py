"""Two replicas on one folder store: a refit, and a deletion record applied, on one replica while the other's
DELETE of the user runs (session 44)."""

from __future__ import annotations

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.files import files_holding
from tests.service.test_break20_delete import GONE

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py


def test_a_refit_without_comparisons_landing_after_another_replicas_delete_leaves_nothing(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                                        minilm, monkeypatch):
    """The user has stated a preference (through b) and sent no comparison. b's refit reads their row, then a's
    DELETE takes it (and their stated changes), then b's refit writes its row, drawn from the deleted one (their
    stated preferences). With no comparison read, `_deleted_meanwhile` had no row to look for: the row came back."""
    from service.users import services
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, admin_handlers=ADMIN_HANDLERS)
    with first, second, b.client("acme") as acme_b:
        r = acme_b.patch(f"/v1/users/{GONE}/stated-preferences", json={"preferences": {"length": "less"}})
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        count_interactions = b.runtime.store.count_interactions
        deleted = []

        def delete_between(tenant, user_id):  # b's refit has read the row, and writes once this returns
            if not deleted:
                deleted.append(services.delete(a.runtime, "acme", GONE))
            return count_interactions(tenant, user_id)

        monkeypatch.setattr(b.runtime.store, "count_interactions", delete_between)
        fitted = services.refit(b.runtime, "acme", GONE)
        assert deleted[0]["users"] == 1 and deleted[0]["stated_changes"] == 1, deleted
        assert fitted.record is None and fitted.prior, fitted.record
        for replica in (a, b):
            replica.runtime.store.refresh("users")
            assert replica.runtime.store.get_user("acme", GONE) is None
        assert b.runtime.store.wait_withdrawn(30)
        assert files_holding(tmp_path / "shared-lancedb", GONE) == []



@pytest.mark.slow  # ~4 s (two in-process replicas; the DELETE's purge wait 0.3 s, short_read_margin); shows no defect: kept as a guard
def test_a_deletion_record_applied_on_a_stale_view_drops_only_the_deleted_users_owed_refit(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                                          minilm, monkeypatch):
    """Replica b owes two users background refits (its refit thread busy: both named in its waiting refits' file)
    when a's DELETE takes one's rows. b applies the deletion record while its view of the preferences table is
    still from before the DELETE (b's `store_sync_ms` is long here, so deterministically), and, their feedback
    moved more than SLACK_S ago (a backlog), no step of the pass refreshes it before its look at who still has
    rows (`users_with_preferences`, which reads no newest version itself). Checked in session 44: that look
    cannot see the deleted rows, because the record is written only after the DELETE's purge removed the old
    versions: the stale version's files are gone, and the read is made again on the newest
    (`Store._read`). So the deleted user's id leaves b's file, and the other user's owed refit stays."""
    import threading

    from service import deletions
    from service.waiting_refits import WAITING_REFITS_FILE, owed_refits
    from tests.service.test_break20_delete import give_comparisons
    from tests.service.tiny import start_service

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(deletions, "SLACK_S", 0.0)  # their feedback moved long ago (a backlog), not lately
    store = str(tmp_path / "shared-lancedb")
    first, a = start_service(tmp_path / "a", tiny_generator_dir, tiny_pal_dir, minilm, ADMIN_HANDLERS, store_uri=store, replicas=2,
                             replica_index=0, store_sync_ms=200)
    second, b = start_service(tmp_path / "b", tiny_generator_dir, tiny_pal_dir, minilm, ADMIN_HANDLERS, store_uri=store, replicas=2,
                              replica_index=1, store_sync_ms=60_000, deletion_sweep_s=3600)
    b.keys["acme"] = b.runtime.keys.issue("acme")
    busy = threading.Event()
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        b.runtime.background.submit(busy.wait, 60)  # b's refit thread: the users' refits wait behind this
        try:
            for user in (GONE, "ann"):
                give_comparisons(acme_b, user, "tea", n=2)
                assert acme_b.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved, in b's view
            assert {("acme", GONE), ("acme", "ann")} <= owed_refits(b.runtime)
            stale = b.runtime.store.preferences.version
            assert acme_a.delete(f"/v1/users/{GONE}").status_code == 200
            b.runtime.store.deletions.checkout_latest()  # b's look at the deletion records is the first to see the new one
            assert b.runtime.store.preferences.version == stale  # b's view: from before the DELETE
            assert b.runtime.deletion_sweep.run_once() == 1
            assert ("acme", GONE) not in owed_refits(b.runtime) and ("acme", "ann") in owed_refits(b.runtime)
            waiting = (tmp_path / "b" / WAITING_REFITS_FILE).read_text()
            assert GONE not in waiting and "ann" in waiting
        finally:
            busy.set()
