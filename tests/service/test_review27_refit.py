"""A user's fitted weights are a cache of their comparisons: a refit whose row cannot be stored (the
`users` table cannot be written: no room, a file size limit) still answers the request that needed it.

Before: a user whose stored fit was stale (feedback moved in since, a new population model) got 507
"table `users` cannot be written" for every read of their profile, every reward score and every chat,
though nothing of theirs needed storing (a chat's own row goes to `interactions`)."""

from __future__ import annotations

from tests.service.test_break20_delete import give_comparisons
from tests.service.test_break27_storage import LANCE_FULL, chat


def test_a_refit_whose_row_cannot_be_stored_still_answers(serve, monkeypatch):
    _, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        give_comparisons(acme, "ann", "tea", n=3)
        assert acme.get("/v1/users/ann").status_code == 200
        rt.wait_for_background()

        def full(*args, **kwargs):
            raise RuntimeError(LANCE_FULL)

        with monkeypatch.context() as disk:
            disk.setattr(rt.store.users, "merge_insert", full)  # the users table only: no room for its rows
            give_comparisons(acme, "ann", "tea", marker="again", n=1)  # stored (the preferences table has room): ann's fit is stale
            rt.wait_for_background()  # its background refit could not store its row
            profile = acme.get("/v1/users/ann")
            assert profile.status_code == 200, profile.text
            assert profile.json()["counts"]["preferences"] == 4
            assert profile.json()["updated_at"] > rt.store.get_user("acme", "ann").updated_at  # fitted now, on all 4
            score = acme.post("/v1/rewards/score", json={"user": "ann", "prompt": "Tea?", "responses": ["Tea.", "Coffee."]})
            assert score.status_code == 200, score.text
            assert chat(acme, "ann").status_code == 200
            health = acme.get("/health").json()  # the operator still learns of it
            assert health["status"] == "degraded" and health["storage"][0]["what"] == "table `users`", health
        assert acme.get("/v1/users/ann").status_code == 200  # room again: the refit's row is stored
        assert rt.store.get_user("acme", "ann").n_preferences == 4
        assert acme.get("/health").json()["status"] == "ok"
