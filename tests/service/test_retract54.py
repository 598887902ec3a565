"""A user takes back one answer (a misclicked pick) without deleting themselves:
DELETE /v1/users/{user_id}/preferences/{pref_id} over HTTP, on the real app and a real LanceDB in a temp folder.
The row leaves the store, its files and the feedback log's files; the user's model moves back to what it was
before the misclick; another user's or tenant's id, and a retraction sent again, are 404s."""

from __future__ import annotations

import numpy as np

from pluralign.embed.cache import EmbeddingCache, default_cache_path, text_key
from tests.files import files_holding

MISCLICK = "Ocelot-fricassee-53q1"  # the misclicked answer's marker: in no other text
SHARED = "Keep it short, 0."  # the misclick's rejected answer, which a row of the rule (`give_rule`) holds too


def give_rule(client, user: str, n: int = 5) -> list[str]:
    """`n` comparisons in which `user` picks a short plain answer over a long listed one; their pref_ids."""
    ids = []
    for i in range(n):
        r = client.post("/v1/feedback", json={
            "type": "comparison", "user": user, "prompt": f"A tip on topic {i}?", "chosen": f"Keep it short, {i}.",
            "rejected": f"Consider these points on topic {i}:\n- one\n- two\n- three\n- and a long story besides."})
        assert r.status_code == 201, r.text
        ids += r.json()["stored"]
    return ids


def misclick(client, user: str) -> str:
    """One comparison against the rule (the long listed answer picked), with a marker; its pref_id."""
    r = client.post("/v1/feedback", json={
        "type": "comparison", "user": user, "prompt": f"A tip on cooking? {MISCLICK}", "chosen":
        f"Consider these points on cooking:\n- one\n- two\n- three\n- and a long story besides. {MISCLICK}",
        "rejected": SHARED, "attributes": {"oops": "yes"}})
    assert r.status_code == 201, r.text
    return r.json()["stored"][0]


def model_of(profile: dict) -> np.ndarray:
    """The user's fitted model as numbers: PAL's logits and the residual's feature weights (posterior means)."""
    features = profile["user_model"]["features"]
    return np.array(profile["pal"]["logits"] + [features[name]["weight"] for name in sorted(features)])


def test_a_misclick_taken_back_leaves_the_store_and_the_model_moves_back(serve):
    data, server, svc = serve()
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        give_rule(acme, "ria")
        before = acme.get("/v1/users/ria").json()
        score = {"user": "ria", "prompt": "A tip on knots?", "responses": ["Tie a bowline.", "Consider these points on knots:\n- one\n- two\n- three"]}
        scored = acme.post("/v1/rewards/score", json=score).json()["scores"]
        oops = misclick(acme, "ria")
        wrong = acme.get("/v1/users/ria").json()
        assert wrong["counts"]["preferences"] == 6 and wrong["attributes"] == {"oops": "yes"}
        assert not np.allclose(model_of(wrong), model_of(before), atol=1e-4)  # the misclick moved the model
        assert not np.allclose(acme.post("/v1/rewards/score", json=score).json()["scores"], scored, atol=1e-4)  # and its scores
        give_rule(acme, "ben", 2)
        give_rule(globex, "ria", 2)  # another tenant's user of the same id

        # another user's or tenant's request for that id: 404, nothing of ria's touched
        assert acme.delete(f"/v1/users/ben/preferences/{oops}").status_code == 404
        assert globex.delete(f"/v1/users/ria/preferences/{oops}").status_code == 404
        assert acme.get("/v1/users/ria").json()["counts"]["preferences"] == 6

        # the jobs' embedding cache holds the vectors of its texts (as a PAL job leaves them)
        row = next(row for row in acme.get("/v1/users/ria/preferences").json()["data"] if row["pref_id"] == oops)
        cache = EmbeddingCache(default_cache_path())
        texts = [row["prompt"], row["chosen"], SHARED]
        cache.put("enc", [text_key(t) for t in texts], np.ones((3, 4), np.float32))

        r = acme.delete(f"/v1/users/ria/preferences/{oops}")
        assert r.status_code == 200, r.text
        assert r.json() == {"user": "ria", "retracted": oops, "adapter_dropped": False, "warnings": []}
        assert set(cache.get("enc", [text_key(t) for t in texts])) == {text_key(SHARED)}  # another row of hers holds it
        after = acme.get("/v1/users/ria").json()
        assert after["counts"]["preferences"] == 5 and after["user_model"]["comparisons"] == 5
        assert after["attributes"] == {}  # the label only the misclick carried went with it
        np.testing.assert_allclose(model_of(after), model_of(before), atol=1e-4)  # back to the rule alone
        np.testing.assert_allclose(acme.post("/v1/rewards/score", json=score).json()["scores"], scored, atol=1e-4)  # ranked so
        page = acme.get("/v1/users/ria/preferences").json()
        assert page["total"] == 5 and oops not in [row["pref_id"] for row in page["data"]]
        for form in ("all", "preferences"):
            assert MISCLICK not in acme.get(f"/v1/users/ria/export?format={form}").text
        assert acme.delete(f"/v1/users/ria/preferences/{oops}").status_code == 404  # sent again: done already
        # the others' rows are as they were
        assert acme.get("/v1/users/ben").json()["counts"]["preferences"] == 2
        assert globex.get("/v1/users/ria").json()["counts"]["preferences"] == 2
        r = acme.delete("/v1/users/ria/preferences/" + "x" * 129)  # no id a row can carry
        assert r.status_code == 400 and "`pref_id`" in r.text, r.text
    # no file of the data folder holds it: the table's files purged, the feedback log's segments rewritten
    assert files_holding(data, MISCLICK) == []


def test_a_retracted_row_stays_gone_after_a_restart(serve):
    """The feedback log kept the misclick's record, already moved into the table, in its segment file: a start
    replayed it, found the table no longer held it, and moved it in again."""
    data, server, svc = serve()
    with server, svc.client("acme") as acme:
        give_rule(acme, "ria", 2)
        oops = misclick(acme, "ria")
        assert acme.delete(f"/v1/users/ria/preferences/{oops}").status_code == 200
    data, server, svc = serve()
    with server, svc.client("acme") as acme:
        page = acme.get("/v1/users/ria/preferences").json()
        assert page["total"] == 2 and oops not in [row["pref_id"] for row in page["data"]]
        assert acme.get("/v1/users/ria").json()["counts"]["preferences"] == 2



def test_an_adapter_that_may_hold_the_misclick_is_no_longer_served(serve, tiny_generator_dir, tmp_path):
    """An adapter made or received after the misclick reached the service may have been trained on it: it stops
    being served (the user's chats get no adapter of theirs) until their next adapter job; one made before stays. An
    adapter job queued since, whose snapshot holds it, is stopped and its files removed."""
    from pluralign.policy.adapters import adapter_name
    from service.admin.controllers import ADMIN_HANDLERS
    from service.users.services import register_adapter
    from tests.service.test_service_adapters import random_adapter

    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    rt, base = svc.runtime, tiny_generator_dir.name
    chat = {"model": "pluralign", "messages": [{"role": "user", "content": "Colour?"}], "max_tokens": 1}
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        give_rule(acme, "ria", 2)
        give_rule(acme, "ben", 2)
        trained = random_adapter(tiny_generator_dir, tmp_path / "trained", base, "user", 1)  # registered twice: received then
        register_adapter(rt, "acme", "ben", trained)
        oops_ben = misclick(acme, "ben")  # after ben's adapter was made: it cannot hold it
        oops = misclick(acme, "ria")
        register_adapter(rt, "acme", "ria", trained)
        assert acme.post("/v1/chat/completions", json={**chat, "user": "ria"}).json()["pluralign"]["adapter"] == adapter_name("acme", "ria")
        job = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "ria", "steps": 1}})
        assert job.status_code == 201, job.text  # its snapshot holds the misclick: it would promote an adapter trained on it
        assert files_holding(data / "jobs", MISCLICK)

        r = acme.delete(f"/v1/users/ria/preferences/{oops}")
        assert r.status_code == 200 and r.json()["adapter_dropped"] is True, r.text
        assert admin.get(f"/admin/jobs/{job.json()['id']}").status_code == 404  # stopped, its files gone
        assert files_holding(data / "jobs", MISCLICK) == []
        assert acme.get("/v1/users/ria").json()["adapter"] is None
        assert not rt.adapters.registry.folder("acme", "ria").exists()
        assert acme.post("/v1/chat/completions", json={**chat, "user": "ria"}).json()["pluralign"]["adapter"] != adapter_name("acme", "ria")

        r = acme.delete(f"/v1/users/ben/preferences/{oops_ben}")
        assert r.status_code == 200 and r.json()["adapter_dropped"] is False, r.text
        assert acme.get("/v1/users/ben").json()["adapter"] == adapter_name("acme", "ben")
        assert rt.adapters.registry.meta("acme", "ben") is not None  # served at their next chat
    assert files_holding(data, MISCLICK) == []  # both misclicks, wherever they were


def test_a_retraction_stopped_part_way_is_done_or_not(serve, monkeypatch):
    """Stopped before the row's removal from the store (that step failing): nothing is taken back, and sent again it
    is done. Stopped after it (the refit failing, as a kill there): it is done, a 404 when sent again, and the next
    read fits the user without the row."""
    from pluralign.store.failures import StoreUnavailable
    from service.users import retractions

    _, server, svc = serve()
    store = svc.runtime.store
    with server, svc.client("acme") as acme:
        give_rule(acme, "ria", 3)
        before = acme.get("/v1/users/ria").json()
        oops = misclick(acme, "ria")
        assert acme.get("/v1/users/ria").json()["counts"]["preferences"] == 4

        def full(*args):
            raise StoreUnavailable("table `preferences`", "lancedb", "written", "full", "No space left on device", 28)

        with monkeypatch.context() as m:
            m.setattr(store, "delete_preference", full)
            r = acme.delete(f"/v1/users/ria/preferences/{oops}")
        assert r.status_code == 507 and "nothing this request sent" in r.text, r.text
        assert acme.get("/v1/users/ria").json()["counts"]["preferences"] == 4  # not taken back

        with monkeypatch.context() as m:
            m.setattr(retractions, "_refit", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("killed here")))
            assert acme.delete(f"/v1/users/ria/preferences/{oops}").status_code == 500
        assert acme.delete(f"/v1/users/ria/preferences/{oops}").status_code == 404  # done
        after = acme.get("/v1/users/ria").json()
        assert after["counts"]["preferences"] == 3 and after["user_model"]["comparisons"] == 3
        np.testing.assert_allclose(model_of(after), model_of(before), atol=1e-4)
