"""Review of retract54: a retraction of one row (DELETE /v1/users/{user_id}/preferences/{pref_id}) against a stated
preference PATCHed through another replica at the same moment, on two real services over HTTP on one LanceDB store.
Slow-marked (two services: ~4 s at load 8; `make test-scaleout`)."""

from __future__ import annotations

import pytest

from tests.service.test_retract54 import give_rule, misclick


@pytest.mark.slow
def test_a_stated_preference_patched_through_another_replica_during_a_retraction_is_kept(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """The retraction wrote the user's row unconditionally, from a row it read (the adapter's drop, the attributes'
    clear): a stated preference PATCHed through another replica meanwhile (200 to its client) was written over, or
    made the clear a row older than the stored one, dropped (the misclick's label kept). The lost44 class of lost update;
    a refit's and a PATCH's writes have been conditional since (`_write_over_read`)."""
    from service.users import services
    from service.users.services import register_adapter
    from tests.service.test_service_adapters import random_adapter
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        give_rule(acme_a, "ria", 2)
        r = acme_a.patch("/v1/users/ria/stated-preferences", json={"preferences": {"length": "less"}})
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        oops = misclick(acme_a, "ria")
        register_adapter(a.runtime, "acme", "ria", random_adapter(tiny_generator_dir, tmp_path / "trained", tiny_generator_dir.name, "user", 1))
        a.runtime.wait_for_background()
        store, registry, patched = a.runtime.store, a.runtime.adapters.registry, []
        delete_files, delete_row, get_user = registry.delete, store.delete_preference, store.get_user

        def patch_through_b(change: dict) -> None:
            patched.append(acme_b.patch("/v1/users/ria/stated-preferences", json={"preferences": change}))

        def files_deleted_meanwhile(*args):  # the row of ria's read for the adapter's drop, its write to come
            patch_through_b({"exclamations": "less"})
            return delete_files(*args)

        def row_deleted(*args):
            try:
                return delete_row(*args)
            finally:
                monkeypatch.setattr(store, "get_user", read_then_patched)

        def read_then_patched(*args):  # the row read for the attributes' clear, its write to come
            monkeypatch.setattr(store, "get_user", get_user)
            try:
                return get_user(*args)
            finally:
                patch_through_b({"list_items": "less"})

        monkeypatch.setattr(registry, "delete", files_deleted_meanwhile)
        monkeypatch.setattr(store, "delete_preference", row_deleted)
        r = acme_a.delete(f"/v1/users/ria/preferences/{oops}")
        assert r.status_code == 200 and r.json()["adapter_dropped"] is True, r.text
        assert [p.status_code for p in patched] == [200, 200], [p.text for p in patched]
        monkeypatch.undo()
        for replica in (a, b):
            replica.runtime.store.refresh("users", "stated_changes")
            record = replica.runtime.store.get_user("acme", "ria")
            stated = services.stated_of(record)
            assert (stated.version, stated.preferences) == (3, {"length": "less", "exclamations": "less", "list_items": "less"})
            assert record.attributes == {} and record.adapter is None
