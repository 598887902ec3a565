"""A tenant's removal as a deletion record (`pluralign.store.deletions.new_tenant_deletion`): what the other replicas
apply to their records set aside (`DeadLetters.forget_tenant`, `before` the removal's beginning). The replicas' side,
over HTTP: tests/service/test_tenant48_removal.py (slow, `make test-tenant-removal`)."""

from __future__ import annotations

from pluralign.store import StoredPreference
from pluralign.store.dead_letter import DeadLetters
from pluralign.store.deletions import TENANT_WIDE, Forget, new_deletion, new_tenant_deletion


def row(tenant: str, user: str, received: float) -> StoredPreference:
    return StoredPreference(tenant=tenant, user_id=user, pref_id=f"{tenant}-{user}-{received}", prompt="Tea?", chosen="Yes.",
                            rejected="No.", kind="comparison", created_at=1.0, received_at=received)


def test_a_tenant_record_names_the_tenant_and_no_user():
    removal = new_tenant_deletion("acme", deleted_at=200.0, replica=0, began_at=100.0)
    forget = Forget.of([new_deletion("acme", "ann", 150.0, 0, began_at=90.0), removal], stale_s=2.0)
    assert removal.user_hash == TENANT_WIDE and forget.tenants == {"acme": 102.0}
    assert TENANT_WIDE not in forget.hashes and forget.user("acme", "ann") and not forget.user("acme", "cal")
    assert forget.made_at(120.0).tenants == {"acme": 102.0}


def test_a_tenants_rows_set_aside_before_its_removal_began_go_and_later_ones_stay(tmp_path):
    letters = DeadLetters(tmp_path)
    letters.put([row("acme", "cal", 50.0), row("acme", "", 60.0)], "RowRefused: then", 3, 70.0)
    letters.put([row("acme", "cal", float("nan"))], "RowRefused: then", 3, 70.0)  # no time: received before any removal
    later = letters.put([row("acme", "dan", 150.0)], "RowRefused: then", 3, 150.0)
    kept = letters.put([row("globex", "cal", 50.0)], "RowRefused: then", 3, 70.0)
    assert letters.forget_tenant("acme", before=100.0) == 3
    assert sorted(letters.names()) == sorted([later, kept]) and letters.rows() == 2
