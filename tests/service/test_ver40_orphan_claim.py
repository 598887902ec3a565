"""A claim nobody will store (ver session 40). With replicas each id an import gives is claimed on the store before
its rows are logged (`pluralign.store.claims`); a replica killed between the two leaves a claim with no row, which
holds the id for its content until the user is deleted. An import of other content under that id was a 409 saying it
was imported "through another replica, not yet stored": untrue, since nothing will ever store it, and it did not say
what frees the id. Now the 409 names both causes and what the user can do."""

from __future__ import annotations

from tests.service.test_reviewr40_claims import line
from tests.service.tiny import start_replicas

USER = "orphan40v"


def test_an_id_claimed_by_an_import_never_answered_is_a_409_that_says_what_to_do(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                                  minilm, monkeypatch):
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=0, deletion_sweep_s=3600)
    with first, second, a.client("acme") as ca, b.client("acme") as cb:
        claims = a.runtime.store.claims

        def claimed_then_killed(*args):  # as a replica killed right after its claims: no row logged, no claim given back
            type(claims).claim(claims, *args)
            raise OSError("killed")

        claims.claim = claimed_then_killed
        lost = ca.post(f"/v1/users/{USER}/import", content=line("p-1", "Tea."))
        assert lost.status_code == 503, lost.text
        del claims.claim
        other = cb.post(f"/v1/users/{USER}/import", content=line("p-1", "Coffee."))
        assert other.status_code == 409, other.text
        error = other.json()["error"]
        assert error["code"] == "pref_id_conflict" and error["param"] == "line 1.pref_id", error
        message = error["message"]
        assert "not yet stored" not in message, message  # before: "through another replica, not yet stored"
        for what in ("never answered", "a new id", "the same content", "DELETE of the user"):
            assert what in message, (what, message)
        again = cb.post(f"/v1/users/{USER}/import", content=line("p-1", "Tea."))  # the content it was claimed for: taken
        assert again.status_code == 201, again.text
