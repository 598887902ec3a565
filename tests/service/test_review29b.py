"""A hostile pass over the upgrade (tables' schema_version marks) and the uptime work (profile
descriptions cached per tenant, Lance caches bounded): what another replica's DELETE leaves in this
replica's cached profile descriptions."""

from __future__ import annotations

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.tiny import start_replicas


@pytest.mark.slow
def test_another_replicas_delete_leaves_no_answer_of_the_user_in_cached_profiles(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """Replica b learns of a DELETE answered by replica a from the store's deletion record (its sweep,
    every `deletion_sweep_s`) and drops its cached prototype descriptions of the tenant with its pooled
    priors: they quote stored answers, and were kept `pooled_prior_ttl_s` (60 s). The record is written
    `sync_seconds` after the rows went, so b's next sample no longer sees them. Pins (nothing was wrong):
    fails with the descriptions left out of `Runtime.forget_pooled`."""
    from service.users import services as user_services

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(user_services, "DESCRIBED_PAIRS", 2)  # a tenant's sample is full, its description kept, from 2 pairs
        first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200,
                                             admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600,
                                             profile_examples="tenant")  # the tenant's sample (own answers: the default since 53)
        with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
            give_comparisons(acme_a, GONE, "tea", MARKER, n=3)  # every pair but ann's quotes the marker
            give_comparisons(acme_a, "ann", "coffee", n=1)
            a.runtime.wait_for_background()
            b.runtime.store.refresh("preferences", "users")
            b.runtime.store.deletions.checkout_latest()
            r = acme_b.get("/v1/users/ann")
            assert r.status_code == 200 and MARKER in r.text  # b's description quotes the user who goes

            assert acme_a.delete(f"/v1/users/{GONE}").status_code == 200
            # b's sweep applies the record (run here rather than waited for)
            b.runtime.store.deletions.checkout_latest()
            assert b.runtime.deletion_sweep.run_once() == 1
            for _ in range(2):
                r = acme_b.get("/v1/users/ann")
                assert r.status_code == 200 and MARKER not in r.text, r.text
