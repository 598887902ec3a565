"""The user model through the real app: learned from feedback over HTTP, shown, exported, deleted."""

from __future__ import annotations

import json

import pytest

from tests.service.tiny import start_service

TOPICS = ["cooking", "travel", "money", "sleep", "exercise", "reading", "music", "gardening", "work", "friends",
          "weather", "coffee", "cities", "history", "games", "movies"]


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def short_and_long(topic: str) -> tuple[str, str]:
    return (f"Try {topic}.", f"There are many ways to think about {topic}, and it is worth weighing each of them "
            f"carefully before deciding what suits you, your budget and your week best.")


def test_a_preference_for_short_answers_is_learned_from_feedback_and_shown(svc):
    """No PAL prototype (trained on persona statements) is about length; after 12 comparisons the
    user's reward ranks an unseen short answer above a long one, and the profile says so."""
    with svc.client() as c:
        for topic in TOPICS[:12]:
            short, long_ = short_and_long(topic)
            r = c.post("/v1/feedback", json={"type": "comparison", "user": "sam", "prompt": f"Any tips on {topic}?",
                                              "chosen": short, "rejected": long_})
            assert r.status_code == 201, r.text
        held_out = [short_and_long(t) for t in TOPICS[12:]]
        wins = 0
        for short, long_ in held_out:
            out = c.post("/v1/rewards/score", json={"user": "sam", "prompt": "Any tips?", "responses": [long_, short]}).json()
            wins += out["best_index"] == 1
        assert wins == len(held_out)
        profile = c.get("/v1/users/sam").json()
        length = profile["user_model"]["features"]["length"]
        assert length["weight"] < 0 and length["sd"] > 0  # prefers shorter answers (other features share the credit)
        assert profile["user_model"]["comparisons"] == 12
        assert profile["user_model"]["population"] == svc.runtime.rewards.version
        # stored with the user's row, exported in readable form
        record = svc.runtime.store.get_user("acme", "sam")
        assert record.user_model is not None
        user_line = next(json.loads(x) for x in c.get("/v1/users/sam/export").text.splitlines() if '"type":"user"' in x)
        state = user_line["user_model"]
        assert state["n"] == 12 and len(state["cov"]) == len(state["mean"]) ** 2 and "length" in state["names"]
        # and deleted with the user
        assert c.delete("/v1/users/sam").status_code == 200
        assert svc.runtime.store.get_user("acme", "sam") is None
        assert c.get("/v1/users/sam").status_code == 404


def listed_and_prose(topic: str) -> tuple[str, str]:
    """The same words, once as a list and once as a sentence: nearly one point for MiniLM."""
    items = [f"read about {topic}", f"ask a friend who likes {topic}", f"try {topic} for a week"]
    return "\n".join(f"- {i}" for i in items), f"{items[0].capitalize()}, {items[1]}, {items[2]}."


@pytest.mark.parametrize("user_model", ["residual", "prototypes"])
def test_a_preference_for_lists_needs_the_residual(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, user_model):
    """The same feedback (lists preferred over the same words in prose) is learned with the
    residual; with `user_model = prototypes` (PAL weights only, the service before it) it is not."""
    server, service = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, user_model=user_model)
    with server, service.client() as c:
        for topic in TOPICS[:12]:
            listed, prose = listed_and_prose(topic)
            r = c.post("/v1/feedback", json={"type": "comparison", "user": "lee", "prompt": f"Ideas for {topic}?",
                                              "chosen": listed, "rejected": prose})
            assert r.status_code == 201, r.text
        wins = sum(
            c.post("/v1/rewards/score", json={"user": "lee", "prompt": "Ideas?", "responses": [prose, listed]}).json()["best_index"] == 1
            for listed, prose in (listed_and_prose(t) for t in TOPICS[12:])
        )
        profile = c.get("/v1/users/lee").json()
        # reviewtrial48a, docs/api.md: a stated preference is the user model's prior, so under `prototypes` it shapes no score
        assert c.patch("/v1/users/sol/stated-preferences", json={"preferences": {"length": "less"}}).status_code == 200
        texts = ["Tea.", "A pot of green tea, steeped for three minutes, with honey and a slice of lemon."]
        stated, nobody = (c.post("/v1/rewards/score", json={"user": u, "prompt": "A drink?", "responses": texts}).json()["scores"]
                          for u in ("sol", "nobody"))
    if user_model == "residual":
        assert wins == len(TOPICS[12:]) and profile["user_model"]["features"]["list_items"]["weight"] > 0
        assert stated[0] - stated[1] > nobody[0] - nobody[1], (stated, nobody)  # the statement moved the short answer up
    else:
        assert wins <= len(TOPICS[12:]) // 2 and profile["user_model"] is None
        assert stated == nobody  # the population prior's scores: the statement is stored, and shapes nothing


def test_a_refit_uses_one_snapshot_when_feedback_lands_meanwhile(svc, caplog):
    """Feedback moved into the table while a refit reads the user's history must not make its
    vectors and texts disagree (was a 400 from the profile, and failed background refits).

    The first refit after the fourth comparison, the background one or the profile read's (which
    comes first is up to the scheduler), gets its snapshot and then sees a fifth row land."""
    rt = svc.runtime
    calls = []

    def feedback(client, i):
        r = client.post("/v1/feedback", json={"type": "comparison", "user": "cy", "prompt": f"A drink {i}?",
                                              "chosen": f"Some tea, {i}.", "rejected": f"Some coffee, {i}."})
        assert r.status_code == 201, r.text

    with svc.client() as c:
        for i in range(3):
            feedback(c, i)
        rt.wait_for_background()
        original = rt.store.history

        def history_then_a_row_lands(tenant, user, **options):
            snapshot = original(tenant, user, **options)
            rt.store.history = original
            calls.append(len(snapshot))
            with svc.client() as other:
                feedback(other, 99)
            rt.ingest.flush_user(tenant, user)  # the new row is in the table before the refit reads on
            return snapshot

        rt.store.history = history_then_a_row_lands
        try:
            feedback(c, 3)
            r = c.get("/v1/users/cy")
            rt.wait_for_background()
        finally:
            rt.store.history = original
        assert r.status_code == 200, r.text
        assert calls == [4]  # one refit read the history with the fourth row and before the fifth
        assert not [rec for rec in caplog.records if "refit" in rec.getMessage() and rec.levelname == "ERROR"]
        profile = c.get("/v1/users/cy").json()
        assert profile["counts"]["preferences"] == 5
        assert profile["user_model"]["comparisons"] == 5  # a later read refits with the new row


def test_a_yes_or_no_question_gets_both_stances_and_a_minority_no_sayer_is_served_no(svc):
    """A question asking a judgement gets candidates of both stances; a user who has disagreed in
    every comparison (a stance no prototype of this tiny PAL holds) is served a "no" answer."""
    with svc.client() as c:
        for topic in TOPICS[:10]:
            r = c.post("/v1/feedback", json={
                "type": "comparison", "user": "noor", "prompt": f'Do you agree with this statement? "{topic} matters."',
                "chosen": f"No. I would not say that about {topic}.", "rejected": f"Yes. I would say that about {topic}."})
            assert r.status_code == 201, r.text
        profile = c.get("/v1/users/noor").json()
        assert profile["user_model"]["features"]["affirmation"]["weight"] < 0
        for seed in range(3):
            out = c.post("/v1/chat/completions", json={
                "model": "pluralign", "user": "noor", "n": 4, "seed": seed, "max_tokens": 4,
                "messages": [{"role": "user", "content": 'Do you agree with this statement? "Music matters."'}]}).json()
            styles = out["pluralign"]["styles"]
            assert sorted(s.rsplit("-", 1)[1] for s in styles) == ["no", "no", "yes", "yes"]
            assert styles[0].endswith("-no")
            assert out["choices"][0]["message"]["content"].startswith(("No.", "Nope"))
        plain = c.post("/v1/chat/completions", json={
            "model": "pluralign", "user": "noor", "n": 4, "seed": 0, "max_tokens": 4,
            "messages": [{"role": "user", "content": "Suggest some music."}]}).json()
        assert not any(s.endswith(("-yes", "-no")) for s in plain["pluralign"]["styles"])
