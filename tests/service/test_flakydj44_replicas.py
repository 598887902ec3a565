"""Two replicas on one folder store: a refit, and a deletion record applied, on one replica while the other's
DELETE of the user runs (session 44)."""

from __future__ import annotations

from service.admin.controllers import ADMIN_HANDLERS
from tests.files import files_holding
from tests.service.test_break20_delete import GONE


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
