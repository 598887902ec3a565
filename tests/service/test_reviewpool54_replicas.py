"""A tenant's calibration pool with several replicas (review of session pool54): kept in the folder they share
(PLURALIGN_CALIBRATION_POOLS_DIR), so a pool stored through one replica is asked by every other; and a tenant's removal
sent to one replica removes the pool another replica's own data folder kept from when it served alone. Two services on
one store (`start_replicas`), over HTTP."""

from __future__ import annotations

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from service.calibration.pools import pool_path, write_pool
from tests.service.test_deletions_replicas import wait_until
from tests.service.test_pool54_calibration import POOL_A, POOL_B
from tests.service.test_tenant48_removal import wait_removed
from tests.service.tiny import start_replicas

pytestmark = [pytest.mark.slow,  # two services on one store: ~15 s on two busy cores (`make test-scaleout`)
              pytest.mark.usefixtures("short_read_margin")]


def test_a_pool_stored_through_one_replica_is_asked_by_the_other(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """Before: with PLURALIGN_REPLICAS=2 every PUT was a 409 (the pool lived in one replica's data folder), and a
    tenant's removal sent to replica b left the pool replica a stored while it served alone in a's folder, where the
    tenant made again under the same name found it."""
    shared = tmp_path / "shared" / "calibration-pools"
    (tmp_path / "shared").mkdir()
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=0.2,
                                         calibration_pools_dir=str(shared))
    # what replica a kept in its own data folder while it served alone, before the shared folder was named
    leftover = write_pool(a.runtime.settings.own_calibration_pools_path, "globex", [(POOL_B[0]["prompt"], POOL_B[0]["answers"])])
    assert pool_path(a.runtime.settings.own_calibration_pools_path, "globex").exists() and leftover.pool
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b, a.client("globex") as globex_a, \
            b.client("admin") as admin_b:
        r = acme_a.put("/v1/calibration-pool", json={"pool": POOL_A})
        assert r.status_code == 200, r.text
        assert pool_path(shared, "acme").exists()
        r = acme_b.post("/v1/users/bob/next-comparison", json={})  # the other replica asks it
        assert r.status_code == 200, r.text
        assert r.json()["pool"] == "calibration" and r.json()["prompt"] in {i["prompt"] for i in POOL_A}, r.json()
        assert acme_b.get("/v1/calibration-pool").json()["pool"] == POOL_A
        assert acme_b.put("/v1/calibration-pool", json={"pool": POOL_B}).status_code == 200  # replaced through b
        r = acme_a.post("/v1/users/bob/next-comparison", json={})
        assert r.status_code == 200 and r.json()["prompt"] == POOL_B[0]["prompt"], r.text
        assert acme_b.delete("/v1/calibration-pool").status_code == 204
        assert acme_a.get("/v1/calibration-pool").status_code == 404

        assert globex_a.put("/v1/calibration-pool", json={"pool": POOL_A}).status_code == 200  # in the shared folder
        r = admin_b.post("/admin/tenants/globex/removal")  # sent to replica b
        assert r.status_code == 202, r.text
        assert wait_removed(admin_b, "globex", timeout=60)["counts"].get("calibration_pools") == 1
        assert not pool_path(shared, "globex").exists()
        # replica a applies the removal's record to its own folder
        assert not wait_until(lambda: pool_path(a.runtime.settings.own_calibration_pools_path, "globex").exists(), timeout=30)
        assert not [p.name for p in shared.iterdir() if not p.name.startswith(".")]
