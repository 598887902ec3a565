"""A user's data over real HTTP, checked field by field: what survived mutation testing (session 39)."""

from __future__ import annotations

import json

import pytest

from tests.service.test_mutsvc39_feedback import counter
from tests.service.tiny import give_terse_answers, start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def export(client, user):
    r = client.get(f"/v1/users/{user}/export")
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def test_the_export_holds_every_stated_preference_change(svc):
    """The export's `user` line carries the user's stated preferences with every version's changes (a
    portable copy of what they said and when), not only the current state."""
    with svc.client() as c:
        for change in ({"length": "more"}, {"list_items": "less", "length": None}):
            r = c.patch("/v1/users/stella/stated-preferences", json={"preferences": change})
            assert r.status_code == 200, r.text
        user = next(line for line in export(c, "stella") if line["type"] == "user")
    stated = user["stated"]
    assert stated["version"] == 2 and stated["preferences"] == {"list_items": "less"}
    assert sorted((h["version"], h["feature"], h["direction"]) for h in stated["history"]) == [
        (1, "length", "more"), (2, "length", None), (2, "list_items", "less")]


def test_compare_names_the_most_informative_pair_of_the_returned_choices(svc):
    """A chat's `pluralign.compare` is the pair of returned choices whose comparison tells most about the
    user (BALD, `compare_target = coefficients`): the pair, and its bits, that POST .../next-comparison
    finds in a pool of those same choices for the same user."""
    prompt = "Any tips on cooking?"
    with svc.client() as c:
        r = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "cora", "n": 4, "seed": 3, "temperature": 1.0,
                                                 "messages": [{"role": "user", "content": prompt}]})
        assert r.status_code == 200, r.text
        out = r.json()
        texts = [ch["message"]["content"] for ch in out["choices"]]
        assert len(set(texts)) == 4, texts  # four different answers: six pairs to choose from
        compare = out["pluralign"]["compare"]
        assert compare is not None, out["pluralign"]
        asked = c.post("/v1/users/cora/next-comparison", json={"pool": [{"prompt": prompt, "answers": texts}]})
        assert asked.status_code == 200, asked.text
    best = asked.json()
    assert best["pairs"] == 6 and best["criterion"] == "coefficients"
    assert {texts[compare[0]], texts[compare[1]]} == set(best["answers"])
    assert out["pluralign"]["compare_bits"] == pytest.approx(best["bits"], abs=2e-3)


def test_a_deleted_users_answers_leave_other_users_profiles_at_once(svc, monkeypatch):
    """With `profile_examples = tenant` (an opt-in since the review of trial16_53), a profile's summary shows example
    answers its nearest prototype scores highest and lowest, drawn from the tenant's stored pairs and reused once the
    tenant holds 200 (`described_prototypes`). After a DELETE, no profile shows the deleted user's answers, even within
    that reuse window; /metrics counts the DELETE."""
    import msgspec

    from service.users import services as user_services

    monkeypatch.setattr(svc.runtime, "settings", msgspec.structs.replace(svc.runtime.settings, profile_examples="tenant"))
    # reused from 10 pairs here, 20 of them the ghost's (store61: 200 and 210, ~1.5 CPU-s more, checking no more)
    monkeypatch.setattr(user_services, "DESCRIBED_PAIRS", 10)
    lines = [json.dumps({"prompt": f"Question {i}?", "chosen": f"ghostly answer {i} yes", "rejected": f"ghostly answer {i} no"})
             for i in range(20)]
    with svc.client("globex") as c:
        r = c.post("/v1/users/ghost/import", content="\n".join(lines) + "\n", headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 201, r.text
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "viewer", "prompt": "Tea or coffee?",
                                         "chosen": "Tea, please.", "rejected": "Coffee, black."})
        assert r.status_code == 201, r.text
        # a 201 means the rows are in the feedback log; the ingest worker (nice 19) moves them into the table
        # later, and under load (a full `make test`) not before the reads below: viewer's own read moves only
        # viewer's row, so the sample held viewer's pair alone. Moved here, as the worker would.
        svc.runtime.ingest.flush("globex")
        shown = lambda: [e["answer"] for side in ("highest", "lowest")  # noqa: E731
                         for e in c.get("/v1/users/viewer").json()["summary"]["nearest_prototype"][side]]
        assert any("ghostly" in a for a in shown())  # 21 pairs: the sample is full, the description kept
        deleted = counter(svc, "pluralign_users_deleted_total")
        assert c.delete("/v1/users/ghost").status_code == 200
        assert counter(svc, "pluralign_users_deleted_total") == deleted + 1
        assert shown() and not any("ghostly" in a for a in shown())


def test_the_summary_names_the_prototype_the_user_weighs_most(svc):
    """The summary's `nearest_prototype` is the prototype with the user's largest weight in their own
    model (`user_model.prototypes`), with that weight, and its sentence says so; `pal.nearest_prototype`
    is the largest of the PAL mixture's `pal.weights`."""
    with svc.client() as c:
        give_terse_answers(c, "pia")
        profile = c.get("/v1/users/pia").json()
    mixture = profile["pal"]["weights"]
    assert len(set(mixture)) == len(mixture) and profile["pal"]["nearest_prototype"] == mixture.index(max(mixture))
    weights = [p["weight"] for p in profile["user_model"]["prototypes"]]
    assert len(weights) > 1 and len(set(weights)) == len(weights)
    nearest = profile["summary"]["nearest_prototype"]
    assert nearest["prototype"] == weights.index(max(weights))
    assert nearest["weight"] == pytest.approx(max(weights), abs=1e-4)
    assert f"closest to prototype {nearest['prototype']} of {len(weights)}" in " ".join(profile["summary"]["sentences"])
