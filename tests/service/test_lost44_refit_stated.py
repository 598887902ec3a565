"""A refit's users row must not replace a stated preference PATCHed through another replica after the refit read
the row: until session 44 the refit's row replaced any row not newer than its own start, and a PATCH stamped
before that start (its read, then its commit while the refit fitted) was lost: the user's row went back to the
version the refit had read."""

from __future__ import annotations

import threading

import pytest

from tests.service.test_break20_delete import give_comparisons


# the same race and the same conditional write (`put_user_if`) in both cases: the refit's fit on comparisons is the only
# difference, so the default suite runs the cheaper stated-only case; the other is slow (`make test-scaleout`)
@pytest.mark.parametrize("comparisons", [pytest.param(True, marks=pytest.mark.slow), False],
                         ids=["fitted-on-comparisons", "stated-only"])
def test_a_patch_committed_while_another_replicas_refit_runs_is_kept(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                   monkeypatch, comparisons):
    from service.users import services
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200)
    with first, second, a.client("acme") as acme_a:
        if comparisons:
            give_comparisons(acme_a, "ann", "tea", n=2)
        r = acme_a.patch("/v1/users/ann/stated-preferences", json={"preferences": {"length": "less"}})
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        a.runtime.wait_for_background()

        # a's PATCH of version 2 stamps its time and reads the row, then waits before its write
        stamped, go, committed, done = threading.Event(), threading.Event(), threading.Event(), threading.Event()
        put_user_if = a.runtime.store.put_user_if

        def held_put_user_if(user, read):
            if committed.is_set():  # its own refit after: once the test has looked
                assert done.wait(30)
                return put_user_if(user, read)
            stamped.set()
            assert go.wait(30)
            written = put_user_if(user, read)  # the PATCH's row, conditional since the lost44 review
            committed.set()
            return written

        monkeypatch.setattr(a.runtime.store, "put_user_if", held_put_user_if)
        patch = threading.Thread(target=services.set_stated, args=(a.runtime, "acme", "ann", {"exclamations": "less"}))
        patch.start()
        assert stamped.wait(30)
        # b's refit reads the row (version 1), begins after the PATCH's stamp, and writes once the PATCH committed
        count_interactions = b.runtime.store.count_interactions

        def patch_commits_now(tenant, user_id):
            if not go.is_set():
                go.set()
                assert committed.wait(30)
            return count_interactions(tenant, user_id)

        monkeypatch.setattr(b.runtime.store, "count_interactions", patch_commits_now)
        fitted = services.refit(b.runtime, "acme", "ann")
        try:  # what the users row holds once b's refit wrote it: the PATCH's version, not the one the refit read
            for replica in (a, b):
                replica.runtime.store.refresh("users")
                stated = services.stated_of(replica.runtime.store.get_user("acme", "ann"))
                assert (stated.version, stated.preferences) == (2, {"length": "less", "exclamations": "less"})
            assert fitted.record is not None and fitted.record.n_preferences == (2 if comparisons else 0)
        finally:
            done.set()
            patch.join(30)
        assert committed.is_set() and not patch.is_alive()
        assert acme_a.get("/v1/users/ann/stated-preferences").json()["version"] == 2
