"""Session fair59: the features a refit reads on a worker thread (the refit the feedback worker queues once it moved
the rows) are cached as its
tenant's (`pluralign.user.features.scope`), not in the scope every worker thread shares: there, one tenant's refits
pushed out the others' entries, and a hit on an entry another tenant's refit made told that tenant's texts."""

from __future__ import annotations

from pluralign.user import features
from tests.service.test_break20_delete import give_comparisons
from tests.service.tiny import start_service
from tests.stores import wait_for


def test_a_background_refit_caches_the_features_it_reads_as_its_tenants(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                       monkeypatch):
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm)
    marker = "fair59-scope"
    with server, svc.client("acme") as acme:
        give_comparisons(acme, "ann", "tea", marker, n=2)
        wait_for(lambda: not svc.runtime.ingest.log.has_pending(), timeout=60)  # the feedback worker moved them
        svc.runtime.wait_for_background()  # the refits it queued ran, on the service's worker threads
    answer = f"Some tea, number 0. {marker}"
    held = {tenant for tenant, key, _ in features._cached.items() if key == features._digest(answer)}
    assert held == {"tenant:acme"}, f"ann's answer's features were cached under {held or 'no tenant'}"
