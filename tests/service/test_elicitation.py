"""Issue 16 through the real app: `pluralign.compare`, `choice` feedback over the shown pair, stated
preferences (a strong prior that feedback can overturn), the readable summary, onboarding."""

from __future__ import annotations

import json

import pytest

from tests.service.test_user_model_service import TOPICS, short_and_long
from tests.service.tiny import field_named, give_terse_answers, start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    """No user's adapter job (`adapter_every`): no test here reads one, and the comparisons its users send queued
    adapter trainings in processes of their own (chat61: ~16 CPU-s of the file's, counted as the module's service stopped)."""
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    adapter_every=1_000_000)
    with server:
        yield service


def chat(c, user: str, n: int = 4, **extra) -> dict:
    r = c.post("/v1/chat/completions", json={"model": "pluralign", "user": user, "n": n, "seed": 3, "messages": [
        {"role": "user", "content": "Any tips on cooking?"}], **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_compare_names_two_returned_choices_and_shown_feedback_stores_that_pair(svc):
    with svc.client() as c:
        out = chat(c, "newbie")
        compare = out["pluralign"]["compare"]
        assert compare is not None and len(set(compare)) == 2 and all(0 <= i < 4 for i in compare)
        assert 0 < out["pluralign"]["compare_bits"] <= 1 and out["pluralign"]["timings"]["compare_ms"] > 0
        texts = [ch["message"]["content"] for ch in out["choices"]]
        if texts[compare[0]] == texts[compare[1]]:
            pytest.skip("the tiny model wrote the same text twice")
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": out["id"], "chosen_index": compare[1], "shown": compare})
        assert r.status_code == 201, r.text
        assert len(r.json()["stored"]) == 1  # one comparison: the pick against the other shown choice only
        rows = c.get("/v1/users/newbie/preferences").json()["data"]
        assert [(x["chosen"], x["rejected"]) for x in rows] == [(texts[compare[1]], texts[compare[0]])]
        # a single returned choice offers nothing to compare; an anonymous request neither
        assert chat(c, "newbie", n=1)["pluralign"]["compare"] is None
        anon = c.post("/v1/chat/completions", json={"model": "pluralign", "n": 2, "messages": [{"role": "user", "content": "Hi"}]})
        assert anon.json()["pluralign"]["compare"] is None
        # an answer that is not kept cannot take the `choice` that `compare` asks for
        assert chat(c, "newbie", store=False)["pluralign"]["compare"] is None


@pytest.mark.parametrize(("body", "field"), [
    ({"chosen_index": 0, "shown": [0, 0]}, "shown"),
    ({"chosen_index": 0, "shown": [0, 7]}, "shown"),
    ({"chosen_index": 2, "shown": [0, 1]}, "chosen_index"),
    ({"chosen_index": 0, "shown": [0]}, "shown"),
])
def test_bad_shown_is_a_400_naming_the_field(svc, body, field):
    with svc.client() as c:
        out = chat(c, "picky")
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": out["id"], **body})
        assert r.status_code == 400, r.text
        assert field in (field_named(r) or "") or field in r.text


def test_compare_is_null_once_no_pair_of_the_returned_choices_carries_compare_min_bits(svc, monkeypatch):
    """Chat's gate, as `compare_disappears` below finds it after ~20 rounds of answers (`make test-bench`), in three
    chats: the same seeded chat of one user asks `compare` while its best pair carries at least `compare_min_bits` bits
    about which returned choice is best, and not once the setting is above what any pair carries."""
    import msgspec

    from pluralign.user.active import all_pairs, best_information
    from service.users.services import user_weights

    rt = svc.runtime
    body = {"model": "pluralign", "user": "gated", "n": 4, "seed": 11, "messages": [{"role": "user", "content": "Tips on tea?"}]}
    with svc.client() as c:
        first = c.post("/v1/chat/completions", json=body).json()
        texts = [ch["message"]["content"] for ch in first["choices"]]
        weights = user_weights(rt, "acme", "gated")
        model = weights.rewards.user_model
        x = model.candidates(rt.encoder.encode(["Tips on tea?"])[0], rt.encoder.encode(texts), texts).x
        gate = float(best_information(x, *all_pairs(len(texts)), *model.posterior(weights.state)).max())
        assert first["pluralign"]["compare"] is not None and gate >= rt.settings.compare_min_bits, gate
        monkeypatch.setattr(rt, "settings", msgspec.structs.replace(rt.settings, compare_min_bits=gate + 0.01))
        above = c.post("/v1/chat/completions", json=body).json()
        assert [ch["message"]["content"] for ch in above["choices"]] == texts  # the same choices: only the gate moved
        assert above["pluralign"]["compare"] is None
        monkeypatch.setattr(rt, "settings", msgspec.structs.replace(rt.settings, compare_min_bits=gate - 0.01))
        assert c.post("/v1/chat/completions", json=body).json()["pluralign"]["compare"] is not None


def test_compare_reads_the_posterior_the_users_answers_moved_not_a_new_users(svc, monkeypatch):
    """The other half of `compare_disappears` below (`make test-bench`, ~20 rounds until the user's answers narrow
    the posterior under `compare_min_bits`): chat's gate reads the posterior this user's answers made. A user of six
    comparisons (the shorter answer) and a stranger get the same four choices; the most a pair of them tells about
    which is best differs between the two posteriors, and with `compare_min_bits` between the two, only the one whose
    pair carries more is asked. Broken (the gate on a new user's posterior), a user who had answered everything would
    be asked as a stranger is, for good."""
    import msgspec

    from pluralign.user.active import all_pairs, best_information
    from service.users.services import user_weights

    rt = svc.runtime
    body = {"model": "pluralign", "n": 4, "seed": 5, "messages": [{"role": "user", "content": "Tips on tea?"}],
            "pluralign": {"rerank": False, "shots": 0}}  # the same four choices for both, each time

    def gate(user: str, texts: list[str]) -> float:
        weights = user_weights(rt, "acme", user)
        model = weights.rewards.user_model
        x = model.candidates(rt.encoder.encode(["Tips on tea?"])[0], rt.encoder.encode(texts), texts).x
        return float(best_information(x, *all_pairs(len(texts)), *model.posterior(weights.state)).max())

    with svc.client() as c:
        for i, topic in enumerate(TOPICS[:6]):
            short, long_ = short_and_long(f"{topic} {i}")
            assert c.post("/v1/feedback", json={"type": "comparison", "user": "answered", "prompt": f"Tips on {topic} {i}?",
                                                "chosen": short, "rejected": long_}).status_code == 201
        texts = [ch["message"]["content"] for ch in c.post("/v1/chat/completions", json={**body, "user": "answered"}).json()["choices"]]
        gates = {user: gate(user, texts) for user in ("answered", "stranger")}
        assert user_weights(rt, "acme", "answered").state is not None and abs(gates["answered"] - gates["stranger"]) > 0.01, gates
        between = (gates["answered"] + gates["stranger"]) / 2  # 0.008 from each (the encoder's batch: the 4th decimal)
        monkeypatch.setattr(rt, "settings", msgspec.structs.replace(rt.settings, compare_min_bits=between))
        for user in ("answered", "stranger"):
            out = c.post("/v1/chat/completions", json={**body, "user": user}).json()
            assert [ch["message"]["content"] for ch in out["choices"]] == texts  # the same choices: only whose posterior
            assert (out["pluralign"]["compare"] is not None) == (gates[user] > between), (user, out["pluralign"], gates)


@pytest.mark.slow  # ~20 rounds of chat and feedback (8 CPU-s): `make test-bench`; the gate: the test above
def test_compare_disappears_once_the_user_is_well_known(svc):
    """A user who answers every `compare` (picking the shorter of the two, a `choice` with `shown`; "no
    preference", `tie`, between two of one length) is asked while new; as their posterior narrows the
    pairs carry less, and once no pair carries `compare_min_bits` (0.1) bits about which returned choice
    is best `compare` is null. A new user is still asked. In a tenant of its own on the module's service.
    Until session 49 ties were not fitted and BALD's bits decided whether to ask: `compare` first stayed
    null from round 34 (of 90); since, by round 12 or so.

    Onboarding agrees: asked about the very answers chat no longer asks about (a `pool` of them), the
    well-known user is not worth asking, a stranger is. Until session 50 `next-comparison` read BALD's bits
    (`compare_bits`, which stay above 0.1 here) and told an app to keep asking this user. Until then this test
    also checked those bits where its words say the best gate (`best_information`), which it now computes."""
    from pluralign.user.active import all_pairs, best_information
    from service.users.services import user_weights

    rt = svc.runtime
    svc.keys.setdefault("well-known", rt.keys.issue("well-known"))

    def best_gate(prompt: str, texts: list[str]) -> float:
        """The most any pair of the returned choices tells about which is best, on the posterior chat read."""
        weights = user_weights(rt, "well-known", "known")
        model = weights.rewards.user_model
        x = model.candidates(rt.encoder.encode([prompt])[0], rt.encoder.encode(texts), texts).x
        return float(best_information(x, *all_pairs(len(texts)), *model.posterior(weights.state)).max())

    bits, gates, nulls, ties = [], [], [], 0
    with svc.client("well-known") as c:
        for rnd in range(90):
            prompt = f"Tip number {rnd}?"
            out = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "known", "n": 4, "seed": rnd, "messages": [
                {"role": "user", "content": prompt}]}).json()
            compare = out["pluralign"]["compare"]
            texts = [ch["message"]["content"] for ch in out["choices"]]
            if compare is None:
                nulls.append((prompt, texts, best_gate(prompt, texts)))
                if len(nulls) == 3:
                    break
                continue
            bits.append(out["pluralign"]["compare_bits"])
            gates.append(best_gate(prompt, texts))
            a, b = compare
            if texts[a] != texts[b]:
                tie = len(texts[a]) == len(texts[b])  # the rule cannot tell them apart: no preference
                ties += tie
                pick = a if len(texts[a]) < len(texts[b]) else b
                r = c.post("/v1/feedback", json={"type": "choice", "response_id": out["id"], "chosen_index": pick, "shown": compare,
                                                 "tie": tie})
                assert r.status_code == 201, r.text
        assert len(nulls) == 3, f"still asked after 90 rounds: bits {bits[-5:]}"
        assert rnd + 1 <= 20, f"compare stayed null only from round {rnd + 1} (34 before ties were fitted and best gated it)"
        # asked only while some pair tells 0.1 bits about the best choice (the encoder's batch may move the 4th decimal)
        assert min(gates) >= 0.1 - 1e-3 and max(g for _, _, g in nulls) < 0.1 + 1e-3, (gates, nulls)
        assert gates[0] > 2 * max(g for _, _, g in nulls)  # the gain about the best choice fell
        assert chat(c, "stranger")["pluralign"]["compare"] is not None
        prompt, texts, _ = nulls[-1]
        pool = [{"prompt": prompt, "answers": texts}]
        known = c.post("/v1/users/known/next-comparison", json={"pool": pool})
        stranger = c.post("/v1/users/stranger/next-comparison", json={"pool": pool})
        assert known.status_code == 200 and stranger.status_code == 200, (known.text, stranger.text)
        assert not known.json()["worth_asking"], known.json()  # BALD's `bits` may still be above 0.1: not what decides
        assert stranger.json()["worth_asking"], stranger.json()
        print(f"rounds {rnd + 1}, ties {ties}, bits {bits}, gates {gates}, onboarding bits {known.json()['bits']}")


def test_no_preference_between_the_compare_pair_reaches_the_users_model(svc):
    """A `choice` with `tie` (no preference between the shown pair) is stored as a tie and fitted at once: the
    next read of the user (before any background refit could run) has a model fitted on it, which says so,
    and the pair's margin and its variance both shrank. Until session 49 a client had no way to say "no
    preference" to a `compare` pair, and a tie (a `comparison` with `tie: true`) was stored but never fitted."""
    import numpy as np

    from service.users.services import user_weights

    rt = svc.runtime
    with svc.client() as c:
        for i, topic in enumerate(TOPICS[:3]):  # a few comparisons first: the user likes shorter answers
            short, long_ = short_and_long(topic)
            assert c.post("/v1/feedback", json={"type": "comparison", "user": "indifferent", "prompt": f"Tips on {topic} {i}?",
                                                "chosen": short, "rejected": long_}).status_code == 201
        out = chat(c, "indifferent")
        texts = [ch["message"]["content"] for ch in out["choices"]]
        a, b = next((i, j) for i in range(4) for j in range(i + 1, 4) if texts[i] != texts[j])
        before = user_weights(rt, "acme", "indifferent")
        assert before.state is not None and before.state.ties == 0 and before.state.n == 3
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": out["id"], "chosen_index": a, "shown": [a, b], "tie": True})
        assert r.status_code == 201 and len(r.json()["stored"]) == 1, r.text
        rows = c.get("/v1/users/indifferent/preferences").json()["data"]
        assert [(x["chosen"], x["rejected"], x["tie"]) for x in rows if x["tie"]] == [(texts[a], texts[b], True)]
        profile = c.get("/v1/users/indifferent").json()
    assert profile["user_model"]["ties"] == 1 and profile["user_model"]["comparisons"] == 3, profile["user_model"]
    assert profile["summary"]["sentences"][-1] == "based on 3 comparisons and 1 tie (neither answer better)"
    after = user_weights(rt, "acme", "indifferent")
    model = after.rewards.user_model
    x = model.candidates(rt.encoder.encode(["Any tips on cooking?"])[0],
                         rt.encoder.encode([texts[a], texts[b]]), [texts[a], texts[b]]).x
    z = x[0] - x[1]
    margin = lambda s: float(z @ s.mean_array())  # noqa: E731
    variance = lambda s: float(z @ s.cov_array() @ z)  # noqa: E731
    assert abs(margin(after.state)) < abs(margin(before.state)) and variance(after.state) < variance(before.state)
    assert np.isfinite(after.state.mean_array()).all()


def test_no_preference_sent_again_naming_the_other_of_the_pair_is_stored_once(svc):
    """docs/api.md has a client send "no preference" with `chosen_index` either of the pair: the same answer sent
    again (a button clicked twice, a retry) naming the other one states the same tie, but it was drawn another digest
    and stored as a new turn: 'no preference' clicked three times (0, 2, 0) stored three ties of one pair, which the
    user model fitted as three answers. A pick after it is still the user's next word, stored."""
    with svc.client() as c:
        out = chat(c, "undecided")
        texts = [ch["message"]["content"] for ch in out["choices"]]
        a, b = next((i, j) for i in range(4) for j in range(i + 1, 4) if texts[i] != texts[j])
        receipts = []
        for pick in (a, b, a):
            r = c.post("/v1/feedback", json={"type": "choice", "response_id": out["id"], "chosen_index": pick, "shown": [a, b], "tie": True})
            assert r.status_code in (200, 201), r.text
            receipts.append(r.json()["stored"])
        assert receipts[1] == receipts[0] and receipts[2] == receipts[0], receipts
        assert len(c.get("/v1/users/undecided/preferences").json()["data"]) == 1
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": out["id"], "chosen_index": b, "shown": [a, b]})
        assert r.status_code == 201 and r.json()["stored"] != receipts[0], r.text
        assert len(c.get("/v1/users/undecided/preferences").json()["data"]) == 2


def test_a_stated_preference_changes_the_next_ranking_and_enough_contrary_feedback_overrides_it(svc):
    short, long_ = short_and_long("music")
    with svc.client() as c:
        def best() -> int:
            return c.post("/v1/rewards/score", json={"user": "stella", "prompt": "Tips?", "responses": [long_, short]}).json()["best_index"]

        r = c.patch("/v1/users/stella/stated-preferences", json={"preferences": {"length": "more"}})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 1 and r.json()["preferences"] == {"length": "more"}
        assert best() == 0  # prefers longer answers, from the statement alone
        r = c.patch("/v1/users/stella/stated-preferences", json={"preferences": {"length": "less"}})
        assert r.json()["version"] == 2 and [h["direction"] for h in r.json()["history"]] == ["less"]  # this version's change
        assert [h["direction"] for h in c.get("/v1/users/stella/stated-preferences").json()["history"]] == ["more", "less"]
        assert best() == 1  # the statement changed the next ranking
        # ... and the user keeps choosing long answers: the feedback overrides the stated prior
        for i in range(4):
            for topic in TOPICS:
                s, l_ = short_and_long(topic)
                assert c.post("/v1/feedback", json={"type": "comparison", "user": "stella", "prompt": f"Tips on {topic} {i}?",
                                                    "chosen": l_, "rejected": s}).status_code == 201
        assert best() == 0
        profile = c.get("/v1/users/stella").json()
        assert profile["stated"]["preferences"] == {"length": "less"}
        length = next(f for f in profile["summary"]["features"] if f["feature"] == "length")
        # the strong prior still holds the length weight itself (other features took the credit), but
        # the summary says what the comparisons alone show, and that they contradict the statement
        assert length["stated"] == "less" and length["from_comparisons"].startswith("more")
        assert "point the other way" in length["text"]
        exported = next(json.loads(x) for x in c.get("/v1/users/stella/export").text.splitlines() if '"type":"user"' in x)
        assert exported["stated"]["version"] == 2 and len(exported["stated"]["history"]) == 2
        # clearing is a version too; an unknown feature is a 400 naming it
        assert c.patch("/v1/users/stella/stated-preferences", json={"preferences": {"length": None}}).json()["version"] == 3
        bad = c.patch("/v1/users/stella/stated-preferences", json={"preferences": {"vibes": "more"}})
        assert bad.status_code == 400 and "preferences.vibes" in bad.text
        assert c.delete("/v1/users/stella").status_code == 200
        assert c.get("/v1/users/stella/stated-preferences").json()["version"] == 0


def test_the_summary_of_a_user_who_only_stated_a_preference_claims_nothing_else(svc):
    """GET /v1/users/sp3 after stating `length` only listed every other feature as `"direction":
    "more"` at 0 +- 5, reading "prefers answers formatted as lists (uncertain)"."""
    with svc.client() as c:
        assert c.patch("/v1/users/sp3/stated-preferences", json={"preferences": {"length": "less"}}).status_code == 200
        r = c.get("/v1/users/sp3")
        assert r.status_code == 200, r.text
    summary = r.json()["summary"]
    features = {f["feature"]: f for f in summary["features"]}
    assert features["length"]["direction"] == "less" and features["length"]["text"].startswith("prefers shorter answers")
    others = [f for name, f in features.items() if name != "length"]
    assert others and all(f["weight"] == 0 and f["direction"] is None and f["text"].startswith("no preference learned yet")
                          for f in others), others
    assert not any("prefers" in t for t in summary["sentences"][1:]), summary["sentences"]


SENTENCES = ["Start with one small step.", "Keep a short list of what worked.", "Ask someone who has done it before.",
             "Set aside ten minutes each day.", "Write down what you want to change.", "Pick a time that suits the week.",
             "Check how it went after a month.", "Expect a slow start and be patient."]


def answers(topic: str, rng) -> list[str]:
    """Answers of 1 to 8 sentences in one plain register: they differ mostly in length."""
    return [f"For {topic}: " + " ".join(rng.sample(SENTENCES, n)) for n in (1, 2, 4, 8)]


def test_the_summary_names_the_direction_of_a_simulated_users_rule(svc):
    """A simulated user whose rule is "the answer with fewer words wins", over pairs of answers to
    varied prompts: the summary says, in words, that they prefer shorter answers, and shows the
    nearest prototype by stored answers."""
    import random

    rng = random.Random(0)
    with svc.client() as c:
        for topic in TOPICS:
            texts = answers(topic, rng)
            for a, b in rng.sample([(i, j) for i in range(4) for j in range(i + 1, 4)], 2):
                short, long_ = texts[a], texts[b]  # a < b: fewer sentences
                assert c.post("/v1/feedback", json={"type": "comparison", "user": "brief", "prompt": f"Tips on {topic}?",
                                                    "chosen": short, "rejected": long_}).status_code == 201
        summary = c.get("/v1/users/brief").json()["summary"]
    length = next(f for f in summary["features"] if f["feature"] == "length")
    assert length["direction"] == "less" and length["confidence"] == "confident", length
    assert summary["features"][0]["feature"] == "length"  # the most certain belief
    assert "prefers shorter answers (confident)" in summary["sentences"]
    assert summary["comparisons"] == 2 * len(TOPICS)
    # length and word length vary apart here: no joint group, and the summary is what it was before there were any
    assert summary["joint"] == [] and all(f["collinear_with"] == [] for f in summary["features"])
    nearest = summary["nearest_prototype"]
    stored = svc.runtime.store.answers_sample("acme", 100_000)[1]  # every stored answer of the tenant
    examples = nearest["highest"] + nearest["lowest"]
    assert len(nearest["highest"]) == 2 and len(nearest["lowest"]) == 2
    assert all(any(a.startswith(e["answer"].rstrip("…")) for a in stored) for e in examples)  # stored text, not invented
    assert nearest["highest"][0]["score"] > nearest["lowest"][0]["score"]


def test_onboarding_returns_the_most_informative_pair_from_a_pool(svc):
    pool = [{"prompt": "Tips on sleep?", "answers": ["Sleep.", "Sleep."]},  # identical: worth nothing
            {"prompt": "Tips on travel?", "answers": ["Go.", "Pack light, book early, and keep a day free for rest, because trips tire you."]}]
    with svc.client() as c:
        r = c.post("/v1/users/onboard/next-comparison", json={"pool": pool})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["prompt"] == "Tips on travel?" and out["pool"] == "supplied" and out["worth_asking"] and out["bits"] > 0
        # without a pool: the tenant's stored comparisons, leaving out pairs the user already compared
        own = set()
        for who, topic in (("donor", "tea"), ("onboard", "coffee")):
            s, l_ = short_and_long(topic)
            if who == "onboard":
                own = {s, l_}
            assert c.post("/v1/feedback", json={"type": "comparison", "user": who, "prompt": f"Tips on {topic}?",
                                                "chosen": s, "rejected": l_}).status_code == 201
            svc.runtime.ingest.flush_user("acme", who)
        r = c.post("/v1/users/onboard/next-comparison", json={})
        assert r.status_code == 200, r.text
        stored = r.json()
        assert stored["pool"] == "stored" and len(stored["answers"]) == 2
        assert set(stored["answers"]) != own  # the user's own comparison is not asked again
        empty = c.post("/v1/users/onboard/next-comparison", json={"pool": [{"prompt": "x", "answers": ["a"]}]})
        assert empty.status_code == 400
    with svc.client("globex") as c:  # another tenant has stored nothing
        none = c.post("/v1/users/g1/next-comparison", json={})
        assert none.status_code == 400 and "pool" in none.text


def test_onboarding_from_stored_comparisons_counts_feedback_still_in_the_log(svc):
    """`{}` asks from the tenant's stored comparisons. In a tenant whose only comparison was
    acknowledged a moment ago (still in the feedback log, not yet moved into the table), it used to
    answer 400 "no pair ... left" until the background ingest ran."""
    svc.keys.setdefault("hooli", svc.runtime.keys.issue("hooli"))
    short, long_ = short_and_long("kites")
    with svc.client("hooli") as c:
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "early", "prompt": "Tips on kites?",
                                            "chosen": short, "rejected": long_}).status_code == 201
        for target in ("coefficients", "predictive"):
            r = c.post("/v1/users/late/next-comparison", json={"target": target})
            assert r.status_code == 200, r.text
            assert r.json()["pool"] == "stored" and set(r.json()["answers"]) == {short, long_}
        nothing = c.post("/v1/users/early/next-comparison", json={})  # their own comparison is all there is
        assert nothing.status_code == 400 and field_named(nothing) == "pool"


def test_onboarding_from_stored_comparisons_samples_the_whole_tenant_past_pairs_already_compared(svc, monkeypatch):
    """The tester's reproducer: in one tenant z0 compared 210 pairs (prompts 0-209) and z1 the same
    pairs of prompts 0-199. `{}` for z1 used to answer 400 "no pair ... left": the candidates were
    the tenant's first 200 rows in storage order (z0's prompts 0-199, all compared by z1), the same
    for every user, so prompts 200-209 were never offered. Here at a tenth of the scale: a bound
    (`STORED_PAIRS`) of 20, z0's 30 pairs and z1's 20 (embedding the 410 rows took 10-17 s)."""
    from service.users import services

    monkeypatch.setattr(services, "STORED_PAIRS", 20)
    svc.keys.setdefault("initech", svc.runtime.keys.issue("initech"))

    def lines(n: int) -> bytes:
        return b"".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"Answer {i}, short.",
                                    "rejected": f"Answer {i}, which is a good deal longer than the other one."}).encode() + b"\n"
                        for i in range(n))

    with svc.client("initech") as c:
        for user, n in (("z0", 30), ("z1", 20)):
            r = c.post(f"/v1/users/{user}/import", content=lines(n), headers={"content-type": "application/x-ndjson"})
            assert r.status_code == 201, r.text
        svc.runtime.ingest.flush("initech")
        r = c.post("/v1/users/z1/next-comparison", json={})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["pool"] == "stored" and out["pairs"] == 10  # prompts 20-29, each once (z0's row)
        assert out["prompt"] in {f"Question {i}?" for i in range(20, 30)}
        fresh = c.post("/v1/users/z2/next-comparison", json={}).json()
        assert fresh["pairs"] == 20  # the bound: 20 of the 30 distinct pairs, not all of them


def test_an_answer_with_no_visible_character_is_refused_and_never_offered(svc):
    """The tester's reproducer: a comparison whose `rejected` is a zero-width space (U+200B, kept by
    `str.strip()`) was stored (201), and next-comparison with `{}` offered it as an answer."""
    from pluralign.store import StoredPreference

    svc.keys.setdefault("umbrella", svc.runtime.keys.issue("umbrella"))
    short, long_ = short_and_long("rain")
    good = {"type": "comparison", "user": "zw", "prompt": "Tips on rain?", "chosen": short, "rejected": long_}
    with svc.client("umbrella") as c:
        for field, text in (("rejected", "\u200b"), ("chosen", " \u200c\u200d\n"), ("prompt", "\u2060\ufeff")):
            r = c.post("/v1/feedback", json={**good, field: text})
            assert r.status_code == 400 and field_named(r) == field, (field, r.text)
        same = c.post("/v1/feedback", json={**good, "rejected": "\u200b" + short + "\ufeff"})  # visibly `chosen`
        assert same.status_code == 400 and field_named(same) == "rejected", same.text
        served = chat(c, "zw")
        edit = c.post("/v1/feedback", json={"type": "edit", "response_id": served["id"], "edited": "\u200b\u2060"})
        assert edit.status_code == 400 and field_named(edit) == "edited", edit.text
        line = json.dumps({"prompt": "Tips on rain?", "chosen": short, "rejected": "\u200b"}).encode()
        imported = c.post("/v1/users/zw/import", content=line, headers={"content-type": "application/x-ndjson"})
        assert imported.status_code == 400 and "line 1.rejected" in imported.text, imported.text
        assert c.post("/v1/feedback", json=good).status_code == 201
        # a row stored before answers were checked this way is never offered
        legacy = StoredPreference(tenant="umbrella", user_id="old", pref_id="legacy", prompt="Tips on snow?",
                                  chosen="Wear boots.", rejected="\u200b", kind="comparison", created_at=0.0)
        vectors = svc.runtime.encoder.encode([legacy.prompt, legacy.chosen, legacy.rejected])
        svc.runtime.store.add_preferences([legacy], vectors[:1], vectors[1:2], vectors[2:])
        svc.runtime.ingest.flush("umbrella")
        out = c.post("/v1/users/asker/next-comparison", json={})
        assert out.status_code == 200, out.text
        assert set(out.json()["answers"]) == {short, long_} and out.json()["pairs"] == 1, out.json()
        assert c.post("/v1/users/zw/next-comparison", json={}).status_code == 400  # only the blank pair is left


def test_onboarding_by_predictive_information_asks_about_the_pool_and_keeps_worth_asking(svc, monkeypatch):
    """`target: predictive` (EPIG): the pair whose answer tells most about the user's answers to the
    pool's pairs. `bits` is that information; `worth_asking` is chat's gate whatever the target: whether
    some pair tells `compare_min_bits` about which answer of its prompt is best for the user, so it turns
    false when, and only when, that does, for both criteria (until session 50 it read BALD's best pair)."""
    import msgspec

    from pluralign.user.active import best_information
    from service.users.services import user_weights

    short, long_ = short_and_long("gardens")
    pool = [{"prompt": "Tips on gardens?", "answers": [short, long_, "- Water.\n- Weed.\n- Wait."]},
            {"prompt": "Tips on baking?", "answers": ["Bake.", "Weigh the flour, preheat the oven, and let the dough rest overnight."]}]
    texts = {(item["prompt"], a) for item in pool for a in item["answers"]}
    rt = svc.runtime
    weights = user_weights(rt, "acme", "asker")
    model = weights.rewards.user_model
    answers = [a for item in pool for a in item["answers"]]
    prompts = rt.encoder.encode([item["prompt"] for item in pool for _ in item["answers"]])
    x = model.candidates(prompts, rt.encoder.encode(answers), answers).x
    gate = float(best_information(x, [0, 0, 1, 3], [1, 2, 2, 4], *model.posterior(weights.state), sets=[0, 0, 0, 1, 1]).max())
    with svc.client() as c:
        epig = c.post("/v1/users/asker/next-comparison", json={"pool": pool, "target": "predictive"})
        bald = c.post("/v1/users/asker/next-comparison", json={"pool": pool}).json()
        assert epig.status_code == 200, epig.text
        out = epig.json()
        assert out["criterion"] == "predictive" and out["pool"] == "supplied" and out["pairs"] == 4
        assert all((out["prompt"], a) in texts for a in out["answers"]) and out["answers"][0] != out["answers"][1]
        assert 0 < out["bits"] <= 1 and out["worth_asking"] and bald["worth_asking"]
        assert bald["bits"] > gate + 0.02, (bald, gate)  # BALD finds more than the gate: what decided until session 50
        # above the gate, neither criterion finds the user worth asking about, though BALD's best pair is above it
        monkeypatch.setattr(rt, "settings", msgspec.structs.replace(rt.settings, compare_min_bits=gate + 0.01))
        again = c.post("/v1/users/asker/next-comparison", json={"pool": pool, "target": "predictive"}).json()
        assert not again["worth_asking"] and not c.post("/v1/users/asker/next-comparison", json={"pool": pool}).json()["worth_asking"]
        # below it, both do, though EPIG's own bits (about other answers) may be smaller than the threshold
        monkeypatch.setattr(rt, "settings", msgspec.structs.replace(rt.settings, compare_min_bits=gate - 0.01))
        assert c.post("/v1/users/asker/next-comparison", json={"pool": pool, "target": "predictive"}).json()["worth_asking"]
        assert c.post("/v1/users/asker/next-comparison", json={"pool": pool}).json()["worth_asking"]


def test_onboarding_by_population_asks_which_known_user_the_new_one_is_like(svc, monkeypatch):
    """`target: population`: the pair whose answer tells most about which of the tenant's fitted
    users a new user is like. Runs on the other tenant (after the test above found it empty)."""
    short, long_ = short_and_long("travel")
    pool = [{"prompt": "Tips on travel?", "answers": [short, long_]},
            {"prompt": "Tips on sleep?", "answers": ["Sleep well at night.", "Rest well at night."]}]
    with svc.client("globex") as c:
        alone = c.post("/v1/users/newbie/next-comparison", json={"pool": pool, "target": "population"})
        assert alone.status_code == 200, alone.text
        assert alone.json()["criterion"] == "coefficients" and alone.json()["population_users"] == 0  # nobody to compare with yet
        for u in range(6):  # two groups: even users pick the short answer, odd ones the long one
            for topic in TOPICS[:6]:
                s, l_ = short_and_long(topic)
                chosen, rejected = (s, l_) if u % 2 == 0 else (l_, s)
                assert c.post("/v1/feedback", json={"type": "comparison", "user": f"pop{u}", "prompt": f"Tips on {topic}?",
                                                    "chosen": chosen, "rejected": rejected}).status_code == 201
            assert c.get(f"/v1/users/pop{u}").status_code == 200  # the profile read fits the user
        first = c.post("/v1/users/newbie/next-comparison", json={"pool": pool, "target": "population"}).json()
        # the other tenant's many users are not this population: only globex's six
        assert first["criterion"] == "population" and first["population_users"] == 6
        assert first["prompt"] == "Tips on travel?" and set(first["answers"]) == {short, long_} and first["bits"] > 0.1
        # known users who tell the new one apart by less than the threshold: ask about the user's own model instead
        import msgspec

        monkeypatch.setattr(svc.runtime, "settings", msgspec.structs.replace(svc.runtime.settings, compare_min_bits=first["bits"] + 0.05))
        fallback = c.post("/v1/users/newbie/next-comparison", json={"pool": pool, "target": "population"}).json()
        assert fallback["criterion"] == "coefficients" and fallback["population_users"] == 0
        assert fallback["bits"] > first["bits"] + 0.05 and fallback["worth_asking"]  # BALD still has something to ask
        monkeypatch.undo()
        s, l_ = short_and_long("hiking")  # the new user answers like the even users
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "newbie", "prompt": "Tips on hiking?",
                                            "chosen": s, "rejected": l_}).status_code == 201
        svc.runtime.ingest.flush_user("globex", "newbie")
        then = c.post("/v1/users/newbie/next-comparison", json={"pool": pool, "target": "population"}).json()
        assert then["criterion"] == "population" and then["bits"] < first["bits"]  # which group is now partly known
        assert c.delete("/v1/users/pop0").status_code == 200  # a deleted user is no longer compared against
        assert c.post("/v1/users/newbie/next-comparison", json={"pool": pool, "target": "population"}).json()["population_users"] == 5
        bad = c.post("/v1/users/newbie/next-comparison", json={"pool": pool, "target": "everyone"})
        assert bad.status_code == 400 and "target" in bad.text


def test_onboarding_from_stored_comparisons_shows_each_pair_in_an_order_that_reveals_no_choice(svc):
    """The tester's reproducer: Alice stored Tea > Coffee; `{}` for a new user answered
    ["Tea.", "Coffee."] (the chosen answer first), and after Bob stored Coffee > Tea it answered
    ["Coffee.", "Tea."]: a position bias that also told the new user what another user picked. Each
    pair's order is now a coin of the user's seed and the pair's texts, not of the stored choice."""
    svc.keys.setdefault("tea-house", svc.runtime.keys.issue("tea-house"))
    newcomers = [f"new{i}" for i in range(12)]
    with svc.client("tea-house") as c:
        def shown() -> list[list[str]]:
            out = [c.post(f"/v1/users/{u}/next-comparison", json={}) for u in newcomers]
            assert all(r.status_code == 200 for r in out), [r.text for r in out]
            return [r.json()["answers"] for r in out]

        def store(user: str, chosen: str, rejected: str) -> None:
            assert c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": "Tea or coffee?",
                                                "chosen": chosen, "rejected": rejected}).status_code == 201
            svc.runtime.ingest.flush_user("tea-house", user)

        store("alice", "Tea.", "Coffee.")
        after_alice = shown()
        assert {tuple(a) for a in after_alice} == {("Tea.", "Coffee."), ("Coffee.", "Tea.")}  # not always the choice first
        store("bob", "Coffee.", "Tea.")
        assert shown() == after_alice  # Bob's contrary row changes nothing a newcomer sees
        assert shown() == after_alice  # and asking again gives the same pair in the same order


def test_onboarding_from_stored_comparisons_does_not_embed_a_large_backlog_inside_the_request(svc, monkeypatch):
    """The tester's reproducer: after importing 3,000 rows, the tenant's first `{}` took 113.7 s: it
    moved (embedded) the whole backlog of the feedback log inline. Beyond `FLUSH_INLINE_ROWS` pending
    rows it now answers 503 at once, with `Retry-After`, and leaves the backlog to the ingest worker."""
    import threading

    from service.users import services

    monkeypatch.setattr(services, "FLUSH_INLINE_ROWS", 2)
    svc.keys.setdefault("backlog", svc.runtime.keys.issue("backlog"))
    lines = b"".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"Answer {i}.",
                                 "rejected": f"Answer {i}, a longer one."}).encode() + b"\n" for i in range(3))
    answered: list = []
    with svc.client("backlog") as c:
        with svc.runtime.ingest.paused():  # the worker moves nothing meanwhile: the 3 rows stay in the log
            r = c.post("/v1/users/importer/import", content=lines, headers={"content-type": "application/x-ndjson"})
            assert r.status_code == 201, r.text
            asker = threading.Thread(target=lambda: answered.append(c.post("/v1/users/fresh/next-comparison", json={})))
            asker.start()
            asker.join(timeout=20)
            assert answered, "the request waited to move the tenant's whole backlog itself"
        asker.join()
        busy = answered[0]
        assert busy.status_code == 503 and busy.headers["retry-after"] == str(services.FLUSH_RETRY_AFTER), busy.text
        assert "still being stored" in busy.json()["error"]["message"] and "retry" in busy.json()["error"]["message"]
        svc.runtime.ingest.flush("backlog")  # what the worker does meanwhile
        again = c.post("/v1/users/fresh/next-comparison", json={})
        assert again.status_code == 200 and again.json()["pool"] == "stored" and again.json()["pairs"] == 3, again.text


def test_a_tie_moves_the_population_questionnaire_towards_the_known_users_who_are_indifferent(svc):
    """`target: population` in a tenant of two kinds of known users: four who choose by length (short
    or long) and two who choose by lists against prose between answers of one length, so they cannot
    tell a short answer from a long one. A new user first gets a length question (it splits more
    known users) and answers "no preference" (`tie`). That tie is evidence: of the known users, only
    the list users would be indifferent there, so the next question is the list one. Before ties were
    weighed, a tie told the route nothing and it asked the other length question next."""
    svc.keys.setdefault("stationers", svc.runtime.keys.issue("stationers"))

    def lists_and_prose(topic: str) -> tuple[str, str]:
        return (f"On {topic}:\n- plan\n- try\n- review", f"On {topic}, plan first, then try, then review.")

    pool = [{"prompt": "Tips on travel?", "answers": list(short_and_long("travel"))},
            {"prompt": "Tips on sleep?", "answers": list(short_and_long("sleep"))},
            {"prompt": "Tips on music?", "answers": list(lists_and_prose("music"))}]
    with svc.client("stationers") as c:
        def known(user: str, pairs) -> None:
            for topic, (chosen, rejected) in pairs:
                assert c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Tips on {topic}?",
                                                    "chosen": chosen, "rejected": rejected}).status_code == 201
            assert c.get(f"/v1/users/{user}").status_code == 200  # the profile read fits the user

        for u in range(4):  # by length: two pick short, two long
            known(f"length{u}", [(t, short_and_long(t)[:: 1 if u % 2 == 0 else -1]) for t in TOPICS[:8]])
        for u in range(2):  # by lists, between answers of one length: one likes lists, one prose
            known(f"lists{u}", [(t, lists_and_prose(t)[:: 1 if u == 0 else -1]) for t in TOPICS[:8]])
        first = c.post("/v1/users/shrug/next-comparison", json={"pool": pool, "target": "population"}).json()
        assert first["criterion"] == "population" and first["population_users"] == 6, first
        assert first["prompt"] in ("Tips on travel?", "Tips on sleep?"), first  # a length question first
        a, b = first["answers"]
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "shrug", "prompt": first["prompt"], "chosen": a,
                                            "rejected": b, "tie": True}).status_code == 201
        svc.runtime.ingest.flush_user("stationers", "shrug")
        then = c.post("/v1/users/shrug/next-comparison", json={"pool": pool, "target": "population"}).json()
        assert then["criterion"] == "population" and then["prompt"] == "Tips on music?", then


def test_onboarding_by_population_skips_users_of_an_older_population_without_losing_the_current_ones(
        svc, tmp_path, tiny_pal_dir, monkeypatch):
    """After the population model is swapped, users who have not been back keep states of the old
    one: they are skipped, and they must not fill the bounded read of fitted users so that the
    users already refitted against the new population are never found (the criterion would fall
    back to BALD for good once a tenant had more dormant users than the bound). In a tenant of its
    own on the module's service (it had a service of its own), last in the file: it swaps the
    service's population model (and swaps the first back)."""
    import shutil

    import service.users.services as users_services

    monkeypatch.setattr(users_services, "POPULATION_USERS", 2)  # the bound, small enough to fill with three users
    svc.keys.setdefault("dormant", svc.runtime.keys.issue("dormant"))
    short, long_ = short_and_long("travel")
    pool = [{"prompt": "Tips on travel?", "answers": [short, long_]}]

    def fitted(c, user: str, likes_short: bool) -> None:
        for topic in TOPICS[:4]:
            s, l_ = short_and_long(topic)
            chosen, rejected = (s, l_) if likes_short else (l_, s)
            assert c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Tips on {topic}?",
                                                "chosen": chosen, "rejected": rejected}).status_code == 201
        assert c.get(f"/v1/users/{user}").status_code == 200  # the profile read fits the user

    with svc.client("dormant") as c:
        for u in range(3):
            fitted(c, f"old{u}", u % 2 == 0)
        newer = tmp_path / "pal-2"
        shutil.copytree(tiny_pal_dir, newer)
        (newer / "retrained.txt").write_text("another checkpoint version\n")
        first = svc.runtime.rewards.version
        # their refits (queued as their rows moved) are stored before the swap: one that lagged behind it (a loaded
        # machine; session 45) fitted old2 against the new population, current then, and the bound read old2 and new0,
        # who both like short answers: the population could not tell them apart, and the criterion fell back to BALD
        svc.runtime.wait_for_background()
        version = svc.runtime.swap_rewards(newer).version  # old0..old2 now hold states of the old population
        try:
            assert version != first
            fitted(c, "new0", True)
            fitted(c, "new1", False)
            assert c.get("/v1/users/new0").json()["pal"]["version"] == version
            svc.runtime.wait_for_background()  # every row moved and every queued refit stored (they lag under load)
            out = c.post("/v1/users/newbie/next-comparison", json={"pool": pool, "target": "population"})
            assert out.status_code == 200, out.text
            assert out.json()["criterion"] == "population" and out.json()["population_users"] == 2, out.json()
        finally:
            assert svc.runtime.swap_rewards(tiny_pal_dir).version == first


PLAIN_ANSWERS = ["Go slow. Rest.", "Eat well and rest.", "Ask a friend. Try it.", "Take a walk. Do less.", "Keep it up. Go on."]
WORDY_ANSWERS = [
    "Systematically establish comprehensive preparation, considering environmental circumstances thoroughly and deliberately.",
    "Prioritize sustainable organizational strategies, anticipating unexpected complications and evaluating alternatives.",
    "Incorporate professional recommendations deliberately, scheduling preparation and documenting considerations meticulously.",
    "Evaluate alternative methodologies comprehensively, establishing measurable expectations and organizational responsibilities.",
    "Anticipate unexpected complications proactively, considering environmental circumstances and professional recommendations.",
]


def import_shorter_and_plainer(c, user: str, pick) -> None:
    """400 comparisons (16 prompts x 5 plain x 5 wordy answers): the plain answer is also the shorter,
    so length and word length move together in every one; `pick(i)` says whether the plain one won."""
    rows = [{"prompt": f"Tips on {topic}?", "chosen": plain if pick(i) else wordy, "rejected": wordy if pick(i) else plain}
            for i, (topic, plain, wordy) in enumerate((t, p, w) for t in TOPICS for p in PLAIN_ANSWERS for w in WORDY_ANSWERS)]
    r = c.post(f"/v1/users/{user}/import", content="\n".join(json.dumps(x) for x in rows).encode(),
               headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 201 and len(r.json()["stored"]) == 400, r.text


def test_features_the_comparisons_moved_together_are_named_and_their_joint_direction_is_confident(svc):
    """A simulated user who always picks the shorter answer, in 400 comparisons where the shorter answer
    also used shorter words: the profile called length "uncertain" (no direction at all) and word length
    "uncertain", and its sentences said nothing was settled. The comparisons cannot tell the two apart,
    but the user's direction along them jointly is plain: the summary says both."""
    with svc.client() as c:
        import_shorter_and_plainer(c, "plainer", lambda i: True)
        summary = c.get("/v1/users/plainer").json()["summary"]
    assert summary["comparisons"] == 400
    # before: "no preference about how answers are written is settled yet", length "uncertain"
    assert not any(t.startswith("no preference about how answers are written") for t in summary["sentences"]), summary
    (joint,) = summary["joint"]
    assert joint["features"] == ["length", "word_length"] and joint["cosine"] >= 0.9
    assert joint["direction"] == {"length": "less", "word_length": "less"}
    assert joint["confidence"] == "confident" and joint["probability"] > 0.99, joint
    assert joint["text"].startswith("prefers shorter answers with shorter, plainer words (confident)")
    assert "cannot tell which of the two you care about" in joint["text"]
    assert summary["sentences"][0] == joint["text"]
    features = {f["feature"]: f for f in summary["features"]}
    assert features["length"]["collinear_with"] == ["word_length"] and features["word_length"]["collinear_with"] == ["length"]
    assert "cannot tell them apart" in features["length"]["text"]


def test_a_user_who_picks_at_random_among_the_same_pairs_is_still_uncertain(svc):
    """The same 400 pairs, picked by a coin: the features are as collinear, and nothing is claimed."""
    import random

    coin = random.Random(5)
    picks = [coin.random() < 0.5 for _ in range(400)]
    with svc.client() as c:
        import_shorter_and_plainer(c, "coin", lambda i: picks[i])
        summary = c.get("/v1/users/coin").json()["summary"]
    (joint,) = summary["joint"]
    assert joint["features"] == ["length", "word_length"] and joint["confidence"] == "uncertain", joint
    assert joint["probability"] < 0.9
    assert summary["sentences"][0] == "no preference about how answers are written is settled yet", summary["sentences"]


def test_a_stated_preference_the_comparisons_contradict_along_their_joint_direction_is_said_to_be(svc):
    """The user states "longer answers" after 400 comparisons in which they always chose the shorter
    (and plainer) answer. Length alone cannot be told apart from word length in them, so the
    comparisons alone say `none (uncertain)` on length, and the profile read "prefers longer answers
    (confident); you said you prefer longer answers" with no word of the 400 choices against it."""
    with svc.client() as c:
        import_shorter_and_plainer(c, "contrary", lambda i: True)
        r = c.patch("/v1/users/contrary/stated-preferences", json={"preferences": {"length": "more"}})
        assert r.status_code == 200, r.text
        summary = c.get("/v1/users/contrary").json()["summary"]
    length = next(f for f in summary["features"] if f["feature"] == "length")
    assert length["stated"] == "more" and "point the other way" in length["text"], length
    assert length["text"] in summary["sentences"]  # a stated feature is always said
    (joint,) = summary["joint"]
    assert joint["direction"] == {"length": "less", "word_length": "less"} and joint["confidence"] == "confident"


@pytest.mark.parametrize("name", ["längé", "length\u0301", "LENGTH", "x" * 300])
def test_a_stated_preference_on_a_feature_that_is_not_one_is_a_400_naming_it(svc, name):
    """Feature names are the service's own (never a tenant's): any other name, in any script or
    spelling, is refused naming `preferences.<name>` (a long one cut), and nothing is stored."""
    with svc.client() as c:
        r = c.patch("/v1/users/namer/stated-preferences", json={"preferences": {name: "more"}})
        assert r.status_code == 400 and field_named(r).startswith(f"preferences.{name[:40]}"), r.text
        assert c.get("/v1/users/namer/stated-preferences").json()["version"] == 0


def import_longer_with_plainer_words(c, user: str) -> None:
    """96 comparisons (8 prompts x 12 answers) of a 3-word answer of 3-letter words against a longer one
    (6 to 26 words) whose words are longer in rough proportion (length and word length move together:
    cosine 0.97), picked by a user who likes longer answers and dislikes longer words (Bradley-Terry on
    3 x length - word length, drawn with a seed): the comparisons tell the two apart, each confidently."""
    import numpy as np

    from pluralign.user.features import response_features

    short = "Cat cat cat."
    word = {3: "cat", 4: "bird", 5: "house", 6: "garden", 7: "kitchen", 8: "building", 9: "furniture", 10: "restaurant"}  # letters ->
    longer = [" ".join([word[3 + words // 4 + extra]] * words) + "." for words in (6, 10, 16, 26) for extra in (-1, 0, 1)]
    moved = response_features(longer) - response_features([short])  # (12, F)
    rng = np.random.default_rng(0)
    rows = []
    for topic in TOPICS[:8]:
        for answer, x in zip(longer, moved, strict=True):
            picked = rng.random() < 1 / (1 + np.exp(-(3 * x[0] - x[4])))
            rows.append({"prompt": f"Tips on {topic}?", "chosen": answer if picked else short, "rejected": short if picked else answer})
    r = c.post(f"/v1/users/{user}/import", content="\n".join(json.dumps(x) for x in rows).encode(),
               headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 201 and len(r.json()["stored"]) == len(rows), r.text


def test_features_moved_together_that_the_comparisons_still_tell_apart_each_speak_for_themselves(svc):
    """Length and word length moved together (cosine >= 0.9), yet 96 comparisons settle each of them
    (longer answers, shorter words: each confident on its own). The summary called them features the
    comparisons "cannot tell apart", left both confident sentences out and led with the group's own,
    along a direction the user barely leans on: "prefers shorter answers with shorter, plainer words
    (likely)", the opposite of the user's confident "longer answers" (with other words, whose group
    sentence was `uncertain`: "no preference about how answers are written is settled yet")."""
    with svc.client() as c:
        import_longer_with_plainer_words(c, "contrast")
        summary = c.get("/v1/users/contrast").json()["summary"]
    from pluralign.user import UserState

    (group,) = UserState.decode(svc.runtime.store.get_user("acme", "contrast").user_model).collinear  # moved together, stored
    assert group.features == ["length", "word_length"] and group.cosine >= 0.9, group
    features = {f["feature"]: f for f in summary["features"]}
    assert features["length"]["direction"] == "more" and features["length"]["confidence"] == "confident", features["length"]
    assert features["word_length"]["direction"] == "less" and features["word_length"]["confidence"] == "confident"
    # before: ["no preference about how answers are written is settled yet", ...]
    assert features["length"]["text"] in summary["sentences"] and features["word_length"]["text"] in summary["sentences"], summary
    assert summary["joint"] == [], summary["joint"]
    for name in ("length", "word_length"):
        assert features[name]["collinear_with"] == [] and "cannot tell" not in features[name]["text"], features[name]
        assert features[name]["text"] in summary["sentences"], summary["sentences"]


def test_a_user_of_one_comparison_reads_one_comparison(svc):
    """One comparison moves every feature it moves together (a cosine of +-1 over one row): the group's
    sentence read "moved together in your 1 comparisons", and a stated preference it contradicts
    "your 1 comparisons point the other way"."""
    with svc.client() as c:
        r = c.post("/v1/users/once/import", content=json.dumps({"prompt": "Tips on sleep?", "chosen": PLAIN_ANSWERS[0],
                                                                "rejected": WORDY_ANSWERS[0]}).encode(),
                   headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 201, r.text
        assert c.patch("/v1/users/once/stated-preferences", json={"preferences": {"length": "more"}}).status_code == 200
        summary = c.get("/v1/users/once").json()["summary"]
    (joint,) = summary["joint"]
    assert "moved together in your 1 comparison, so" in joint["text"], joint["text"]
    texts = [joint["text"], *summary["sentences"], *(f["text"] for f in summary["features"])]
    assert not [t for t in texts if "1 comparisons" in t], texts
    length = next(f for f in summary["features"] if f["feature"] == "length")
    assert length["text"].endswith("and along them together your 1 comparison points the other way"), length["text"]


def test_features_that_moved_in_one_comparison_of_many_are_said_to_have_moved_in_that_one(svc):
    """Two features that moved in one comparison only (the chosen answer a list with exclamation marks,
    every other answer prose without one) have a cosine of 1 and form a group; its sentence said they
    "moved together in your 17 comparisons"."""
    rows = [{"prompt": f"Tips on {topic}?", "chosen": PLAIN_ANSWERS[i % 5], "rejected": WORDY_ANSWERS[i % 5]}
            for i, topic in enumerate(TOPICS)]
    rows.append({"prompt": "Tips on sleep?", "chosen": "Try these!\n- Rest well!\n- Walk daily!\n- Read more!",
                 "rejected": "Rest well, walk daily and read more."})
    with svc.client() as c:
        r = c.post("/v1/users/listed-once/import", content="\n".join(json.dumps(x) for x in rows).encode(),
                   headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 201 and len(r.json()["stored"]) == len(rows), r.text
        summary = c.get("/v1/users/listed-once").json()["summary"]
    [joint] = [j for j in summary["joint"] if "list_items" in j["features"]]
    assert joint["features"] == ["list_items", "exclamations"], joint
    assert f"moved together in 1 of your {len(rows)} comparisons, so" in joint["text"], joint["text"]


def test_a_user_model_a_later_release_wrote_is_served_as_it_is_and_a_later_version_refitted(svc):
    """A later release that shares the state's `version` but adds a field (as profile43 added `collinear`, session 49
    `ties`) writes a user model this release reads as it is, without that field: served, not refitted. Until session 50
    such a state did not decode here (every struct forbade unknown fields) and the user was refitted at each read,
    and the later release, reading that refit without its field, refitted again: during a rolling update each read
    on the other release refitted the user (docs/operations.md). So is a field added to a struct inside the state (a
    collinear group's). A state of a later `version` (whose fields may mean something else) is refitted from the
    user's comparisons, as before."""
    import msgspec

    from pluralign.user import UserState
    from pluralign.user.model import STATE_VERSION

    rt = svc.runtime
    with svc.client() as c:
        rows = [{"prompt": f"Tips on {topic}?", "chosen": PLAIN_ANSWERS[i % 5], "rejected": WORDY_ANSWERS[i % 5]}
                for i, topic in enumerate(TOPICS)]
        import_rows(c, "rolled-back", rows)
        assert c.get("/v1/users/rolled-back").status_code == 200
        rt.wait_for_background()  # the import's own refit, done: it would write over the later state

        def written_by_a_later_release(**changes) -> UserState:
            record = rt.store.get_user("acme", "rolled-back")
            later = {**msgspec.msgpack.decode(record.user_model), **changes}
            rt.store.put_user(msgspec.structs.replace(record, user_model=msgspec.msgpack.encode(later), updated_at=record.updated_at + 1e-3))
            return UserState.decode(record.user_model)

        fitted = written_by_a_later_release(a_later_field=[1.0])
        r = c.get("/v1/users/rolled-back")
        assert r.status_code == 200, r.text
        assert r.json()["user_model"]["comparisons"] == len(rows) and r.json()["summary"]["joint"], r.json()["summary"]
        kept = rt.store.get_user("acme", "rolled-back").user_model
        assert b"a_later_field" in kept and UserState.decode(kept).fitted_at == fitted.fitted_at  # served, not refitted
        # a field a later release adds to a struct inside the state (as profile44 added `moved_in` to each collinear
        # group): served too (until session 51 the group refused it, so the whole state, and the user was refitted)
        groups = msgspec.msgpack.decode(kept)["collinear"]
        assert groups, "the rows move length and word length together: a collinear group"
        written_by_a_later_release(collinear=[{**g, "a_later_field": 1.0} for g in groups])
        assert c.get("/v1/users/rolled-back").json()["summary"]["joint"]
        kept = rt.store.get_user("acme", "rolled-back").user_model
        assert b"a_later_field" in kept and UserState.decode(kept).fitted_at == fitted.fitted_at  # served, not refitted
        written_by_a_later_release(version=STATE_VERSION + 1)
        assert c.get("/v1/users/rolled-back").status_code == 200
    refitted = UserState.decode(rt.store.get_user("acme", "rolled-back").user_model)
    assert refitted.version == STATE_VERSION and refitted.n == len(rows) and refitted.fitted_at > fitted.fitted_at


def test_a_user_model_holding_nan_or_no_probability_is_refitted_not_served(svc):
    """A stored state decodes with NaN in it (or a probability of 2): before, the profile said of the user
    "prefers shorter answers" from a NaN (`leaning(nan)` was "less") with `probability` null, or
    "(confident)" from 2.0; the library now refuses those numbers, and the service reads such a state as
    unreadable: refitted from the user's comparisons, not served, nor a 500. Nor is it a known user a new one
    is compared against (`population_particles`, `stored_state`), nor one the tenant's pooled prior is estimated from."""
    import math

    import msgspec

    from pluralign.user import UserState

    rt = svc.runtime
    rows = [{"prompt": f"Tips on {topic}?", "chosen": PLAIN_ANSWERS[i % 5], "rejected": WORDY_ANSWERS[i % 5]}
            for i, topic in enumerate(TOPICS[:6])]
    pool = [{"prompt": "Tips on travel?", "answers": list(short_and_long("travel"))},
            {"prompt": "Tips on sleep?", "answers": ["Sleep well at night.", "Rest well at night."]}]
    with svc.client() as c:
        import_rows(c, "damaged-state", rows)
        import_rows(c, "damaged-peer", [{**row, "chosen": row["rejected"], "rejected": row["chosen"]} for row in rows])
        assert c.get("/v1/users/damaged-state").status_code == 200 and c.get("/v1/users/damaged-peer").status_code == 200
        rt.wait_for_background()  # the import's own refit, done: it would write over the damaged state
        fitted = c.get("/v1/users/damaged-state").json()["summary"]["features"]
        for damage in ({"p_more": math.nan}, {"p_more": 2.0}, {"mean": math.nan}):
            record = rt.store.get_user("acme", "damaged-state")
            state = msgspec.msgpack.decode(record.user_model)
            if "p_more" in damage:
                state["p_more"]["length"] = damage["p_more"]
            else:
                state["mean"][state["names"].index("length")] = damage["mean"]
            rt.store.put_user(msgspec.structs.replace(record, user_model=msgspec.msgpack.encode(state), updated_at=record.updated_at + 1e-3))
            if "mean" in damage:  # a new user compared against the tenant's fitted users: a NaN mean among them
                # made trial47b's `group_information` refuse the predictive, a 500 for every new user of the tenant
                asked = c.post("/v1/users/damaged-newbie/next-comparison", json={"pool": pool, "target": "population"})
                assert asked.status_code == 200, asked.text
            r = c.get("/v1/users/damaged-state")
            assert r.status_code == 200, (damage, r.text)
            [length] = [f for f in r.json()["summary"]["features"] if f["feature"] == "length"]
            assert isinstance(length["probability"], float) and isinstance(length["weight"], float), (damage, length)
            assert r.json()["summary"]["features"] == fitted, damage  # what the comparisons say, refitted
            stored = UserState.decode(rt.store.get_user("acme", "damaged-state").user_model)
            assert stored.readable() and stored.n == len(rows), damage  # written back refitted


def import_rows(c, user: str, rows: list[dict]) -> None:
    r = c.post(f"/v1/users/{user}/import", content="\n".join(json.dumps(x) for x in rows).encode(),
               headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 201 and len(r.json()["stored"]) == len(rows), r.text


EXCLAIMED = [("Rest well!", "Rest well."), ("Walk daily!", "Walk daily."), ("Read more!", "Read more."), ("Eat greens!", "Eat greens.")]


def test_a_user_whose_comparisons_all_agree_on_one_feature_is_confident_of_it(svc):
    """12 comparisons, each the same answer with and without an exclamation mark (only `exclamations`
    moves), the exclaimed one always chosen. The Laplace z of the weight stays near 1 however many agree
    (the likelihood is flat on the chosen side): the summary read "prefers exclamation marks (likely)"
    (z 1.5: -> the Laplace probability 0.93), while the posterior puts ~1e-4 on the other sign."""
    rows = [{"prompt": f"Tips on {topic}?", "chosen": loud, "rejected": quiet}
            for topic, (loud, quiet) in zip(TOPICS[:12], EXCLAIMED * 3, strict=True)]
    with svc.client() as c:
        import_rows(c, "exclaims", rows)
        summary = c.get("/v1/users/exclaims").json()["summary"]
    feature = next(f for f in summary["features"] if f["feature"] == "exclamations")
    assert feature["direction"] == "more" and feature["confidence"] == "confident", feature
    assert feature["probability"] > 0.99 and feature["moved_in"] == 12, feature
    assert feature["text"] == "prefers exclamation marks (confident)" and feature["text"] in summary["sentences"], summary


def test_a_belief_that_rests_on_one_comparison_says_so(svc):
    """One comparison under the wide prior (sd 5) already gives the chosen side ~0.95 (the prior expects
    strong preferences; importance sampling agrees, BENCHMARKS.md), so it reads `likely`: the sentence
    says it rests on that one comparison, of one user or among 13 (whose summary ends "based on 13")."""
    once = [{"prompt": "Tips on sleep?", "chosen": "Rest well!", "rejected": "Rest well."}]
    among = once + [{"prompt": f"Tips on {topic}?", "chosen": plain, "rejected": wordy}
                    for topic, plain, wordy in zip(TOPICS[:12], PLAIN_ANSWERS * 3, WORDY_ANSWERS * 3, strict=False)]
    with svc.client() as c:
        import_rows(c, "exclaimed-once", once)
        import_rows(c, "exclaimed-once-of-13", among)
        alone, of_many = (c.get(f"/v1/users/{u}").json()["summary"] for u in ("exclaimed-once", "exclaimed-once-of-13"))
    for summary, said in ((alone, "from your 1 comparison"), (of_many, f"from 1 of your {len(among)} comparisons")):
        feature = next(f for f in summary["features"] if f["feature"] == "exclamations")
        assert feature["confidence"] == "likely" and feature["moved_in"] == 1, feature
        assert feature["text"] == f"prefers exclamation marks (likely, {said})", feature
        assert feature["text"] in summary["sentences"], summary["sentences"]


def test_a_belief_moved_by_ties_counts_them_as_ties_not_comparisons(svc):
    """Since session 49 the user model learns from ties, and a feature's `moved_in` (and a group's) counts the ties
    that moved it too, but the sentences went on calling them all comparisons: "prefers exclamation marks (likely,
    from 3 of your 2 comparisons)", "length and word length moved together in 1 of your 2 comparisons" (a tie moved
    them, no comparison did), and for a user of ties alone "... in your 0 comparisons"; a stated feature of such a
    user had no `from_comparisons`, though the state holds what their ties alone say about it."""
    tie = {"prompt": "Tips on sleep?", "chosen": "Rest well!", "rejected": "Rest well, and keep a regular bedtime through the whole of the week.",
           "tie": True}
    mixed = [{"prompt": "Tips on cooking?", "chosen": "Cook slowly!", "rejected": "Cook slowly."},
             {"prompt": "Tips on travel?", "chosen": "Pack light!", "rejected": "Pack light."}, tie]
    ties = [{"prompt": f"Tips on {topic}?", "chosen": plain, "rejected": wordy, "tie": True}
            for topic, plain, wordy in zip(TOPICS[:5], PLAIN_ANSWERS, WORDY_ANSWERS, strict=True)]
    with svc.client() as c:
        import_rows(c, "tied-mixed", mixed)
        import_rows(c, "tied-only", ties)
        assert c.patch("/v1/users/tied-only/stated-preferences", json={"preferences": {"length": "less"}}).status_code == 200
        summary, alone = (c.get(f"/v1/users/{u}").json()["summary"] for u in ("tied-mixed", "tied-only"))
    exclamations = next(f for f in summary["features"] if f["feature"] == "exclamations")
    assert exclamations["moved_in"] == 3 and exclamations["confidence"] == "likely", exclamations
    assert exclamations["text"] == "prefers exclamation marks (likely, from your 2 comparisons and 1 tie)", exclamations
    [group] = summary["joint"]
    assert group["features"] == ["length", "word_length"] and "moved together in 1 of your 2 comparisons and 1 tie," in group["text"], group
    [group] = alone["joint"]
    assert "moved together in your 5 ties," in group["text"], group
    length = next(f for f in alone["features"] if f["feature"] == "length")
    assert length["stated"] == "less" and length["from_comparisons"] is not None, length
    assert all("comparison" not in f["text"] for f in alone["features"]) and "comparison" not in group["text"], alone


def test_a_user_of_ties_alone_reads_what_the_summary_is_based_on(svc):
    """Five ties (neither answer better) and no comparison with a winner: the summary said "based on 0
    comparisons" beside `counts.preferences` 5, as if nothing had been sent; until session 49 it said the ties
    were not counted (the user model did not fit them), since it is based on them."""
    rows = [{"prompt": f"Tips on {topic}?", "chosen": plain, "rejected": wordy, "tie": True}
            for topic, plain, wordy in zip(TOPICS[:5], PLAIN_ANSWERS, WORDY_ANSWERS, strict=True)]
    with svc.client() as c:
        import_rows(c, "ties-only", rows)
        profile = c.get("/v1/users/ties-only").json()
    summary = profile["summary"]
    assert profile["counts"]["preferences"] == 5 and summary["comparisons"] == 0, profile
    assert summary["sentences"][-1] == "based on 0 comparisons and 5 ties (neither answer better)", summary["sentences"]
    assert summary["ties"] == 5 and summary["ties_learned"] == 5 and summary["unpaired_ratings"] == 0, summary
    assert profile["user_model"]["ties"] == 5 and profile["user_model"]["comparisons"] == 0, profile["user_model"]


def test_a_simulated_user_who_only_ties_reads_as_indifferent_on_what_the_tied_answers_differ_in(svc):
    """Session http54: a user who only ever answered "no preference" (8 ties, each a short plain answer against a long
    wordy one) read as one the model knew nothing about: "no preference about how answers are written is settled yet",
    and "no preference learned yet between longer answers and shorter answers", though the ties pulled those weights to
    0 (word length's sd 5 -> ~0.3). The features the tied answers differ in now say the user showed no preference on
    them, counting the ties; a feature no tie moved still reads as not learned yet."""
    rows = [{"prompt": f"Tips on {topic}?", "chosen": plain, "rejected": wordy, "tie": True}
            for topic, plain, wordy in zip(TOPICS[:8], PLAIN_ANSWERS * 2, WORDY_ANSWERS * 2, strict=False)]
    with svc.client() as c:
        import_rows(c, "indifferent-8", rows)
        summary = c.get("/v1/users/indifferent-8").json()["summary"]
    features = {f["feature"]: f for f in summary["features"]}
    assert "no preference about how answers are written is settled yet" not in summary["sentences"], summary["sentences"]
    for name, more, less in (("length", "longer answers", "shorter answers"),
                             ("word_length", "longer words (a formal register)", "shorter, plainer words")):
        belief = features[name]
        assert belief["direction"] is None and belief["no_preference_shown"] and belief["moved_in"] == 8, belief
        assert belief["sd"] < 4.0, belief  # the ties narrowed it (the prior's sd is 5)
        assert belief["text"].startswith(f"no preference shown between {more} and {less}: the answers of your 8 ties "
                                         "differ in it, and you found neither better"), belief
        assert belief["text"] in summary["sentences"], summary["sentences"]
    unmoved = features["exclamations"]
    assert unmoved["moved_in"] == 0 and not unmoved["no_preference_shown"], unmoved
    assert unmoved["text"].startswith("no preference learned yet") and unmoved["text"] not in summary["sentences"], unmoved
    assert summary["sentences"][-1] == "based on 0 comparisons and 8 ties (neither answer better)", summary["sentences"]


def test_a_user_who_chose_the_short_plain_answer_and_tied_once_is_not_told_they_showed_no_preference_on_length(svc):
    """Review reviewhttp54: 6 comparisons choosing a short plain answer over a long wordy one, and one tie on exclamation
    marks, read "prefers shorter answers with shorter, plainer words (confident)" and, among the same sentences, "no
    preference shown between longer answers and shorter answers: the answers of 6 of your 6 comparisons and 1 tie differ
    in it, and they lean neither way": length alone leans neither way only because it moved with word length. The joint
    sentence speaks for both; the tie's own feature still reads as no preference shown."""
    rows = [{"prompt": f"Tips on {topic}?", "chosen": plain, "rejected": wordy}
            for topic, plain, wordy in zip(TOPICS[:6], PLAIN_ANSWERS * 2, WORDY_ANSWERS * 2, strict=False)]
    rows.append({"prompt": "Tips on resting?", "chosen": "Rest well!", "rejected": "Rest well.", "tie": True})
    with svc.client() as c:
        import_rows(c, "short-and-one-tie", rows)
        summary = c.get("/v1/users/short-and-one-tie").json()["summary"]
    features = {f["feature"]: f for f in summary["features"]}
    assert summary["sentences"][0].startswith("prefers shorter answers with shorter, plainer words"), summary["sentences"]
    for name, more in (("length", "longer answers"), ("word_length", "longer words")):
        assert not features[name]["no_preference_shown"], features[name]
        assert not any(line.startswith(f"no preference shown between {more}") for line in summary["sentences"]), summary
    assert features["exclamations"]["no_preference_shown"] and features["exclamations"]["text"] in summary["sentences"], summary


def test_a_tie_that_moved_no_feature_of_the_comparisons_adds_no_sentence_on_them(svc):
    """Review reviewhttp54: with 17 comparisons, contractions and second person (moved by 4 comparisons that split) read
    "no preference learned yet", as no sentence; one tie more, "Rest well." against "Sleep early." (which differ in
    neither), added two sentences, "no preference shown between contractions ... and they lean neither way" and the same
    of second person: the summary counted any tie as one of the answers a feature moved in. Now only ties that moved the
    feature (`UserState.tied_in`) make it read as no preference shown; the summary reads the same with the tie."""
    mixed = [("You can rest. Don't rush.", "One should rest and not rush."), ("Yes, walk daily.", "No, walk daily."),
             ("- rest\n- eat", "Rest and eat."), ("You'll do fine!", "It will be fine.")]
    rows = [{"prompt": f"Tips on {t}?", "chosen": p, "rejected": w} for t, p, w in zip(TOPICS[:5], PLAIN_ANSWERS, WORDY_ANSWERS, strict=False)]
    rows += [{"prompt": f"Q{i}?", "chosen": a if i % 2 else b, "rejected": b if i % 2 else a} for i, (a, b) in enumerate(mixed * 2)]
    rows += [{"prompt": f"E{i}?", "chosen": a if i % 2 else b, "rejected": b if i % 2 else a} for i, (a, b) in enumerate(EXCLAIMED)]
    summaries = {}
    with svc.client() as c:
        for user, ties in (("split-no-tie", []), ("split-one-tie", [{"prompt": "Tips on resting?", "chosen": "Rest well.",
                                                                      "rejected": "Sleep early.", "tie": True}])):
            import_rows(c, user, rows + ties)
            summaries[user] = c.get(f"/v1/users/{user}").json()["summary"]
    untied, tied = ({f["feature"]: f for f in summaries[user]["features"]} for user in ("split-no-tie", "split-one-tie"))
    for name in ("contractions", "second_person"):
        assert untied[name]["moved_in"] == tied[name]["moved_in"] == 4, (untied[name], tied[name])  # the tie did not move it
        assert not tied[name]["no_preference_shown"] and tied[name]["text"].startswith("no preference learned yet"), tied[name]
    assert [line for line in summaries["split-one-tie"]["sentences"] if "no preference" in line] == [], summaries["split-one-tie"]
    assert tied["word_length"]["moved_in"] == untied["word_length"]["moved_in"] + 1  # what the tie did move


def test_a_user_of_ratings_of_3_alone_is_told_what_the_model_learns_from(svc):
    """A rating of 3 (one answer, no other named) is the only tie the user's own model does not learn from. A user who
    sent only such ratings has no fitted state yet, and the summary then read as under PAL's weights alone: "your 1
    tie (neither answer better) is not counted: the model learns from comparisons with a winner", though the model
    learns from ties of two answers since session 49 and this is a rating."""
    with svc.client() as c:
        out = chat(c, "rater-of-3", n=1)
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": out["id"], "rating": 3})
        assert r.status_code == 201, r.text
        summary = c.get("/v1/users/rater-of-3").json()["summary"]
    assert summary["ties"] == 1 and summary["ties_learned"] == 0, summary
    assert summary["sentences"][-1] == ("based on 0 comparisons; your 1 rating of 3 (one answer, no other named) is not counted: "
                                        "the model learns from two answers compared"), summary["sentences"]


def test_the_last_sentence_names_ties_and_lone_ratings_in_number():
    from service.users.services import based_on

    assert based_on(12, 0, 0) == "based on 12 comparisons"
    # PAL's weights alone (`user_model = prototypes`) learn from winners only
    assert based_on(1, 1, 0) == ("based on 1 comparison; your 1 tie (neither answer better) is not counted: "
                                 "the model learns from comparisons with a winner")
    assert based_on(3, 2, 1) == ("based on 3 comparisons; your 2 ties (neither answer better) and 1 rating of an answer "
                                 "with no other to compare it with are not counted: the model learns from comparisons with a winner")
    # the user's own model learns from ties of two answers too; a rating of 3 names one answer
    assert based_on(1, 1, 0, 1, learns_ties=True) == "based on 1 comparison and 1 tie (neither answer better)"
    assert based_on(3, 3, 1, 2, learns_ties=True) == (
        "based on 3 comparisons and 2 ties (neither answer better); your 1 rating of 3 (one answer, no other named) and 1 rating "
        "of an answer with no other to compare it with are not counted: the model learns from two answers compared")


def _profile_read_as_a_row_lands(svc, monkeypatch, user: str, **landing) -> dict:
    """The profile (GET /v1/users/{user}) of a user who imported two comparisons and a tie, read while one more row of
    theirs lands between the fit the read serves and the read's count of their rows (another request's feedback,
    moved in by the ingest worker meanwhile): the row asks "Tips on money?", PLAIN_ANSWERS[3] over WORDY_ANSWERS[3],
    with the StoredPreference fields `landing` (its `kind`, a `tie`). Asserts the tie was learned before, and the row
    landed."""
    import time
    import uuid

    import numpy as np

    from pluralign.store import StoredPreference

    rt = svc.runtime
    rows = [{"prompt": f"Tips on {topic}?", "chosen": plain, "rejected": wordy}
            for topic, plain, wordy in zip(TOPICS[:2], PLAIN_ANSWERS, WORDY_ANSWERS, strict=False)]
    rows.append({"prompt": "Tips on sleep?", "chosen": PLAIN_ANSWERS[2], "rejected": WORDY_ANSWERS[2], "tie": True})
    with svc.client() as c:
        import_rows(c, user, rows)
        assert c.get(f"/v1/users/{user}").json()["summary"]["ties_learned"] == 1
    count, landed = rt.store.count_preferences, []

    def after_a_row_lands(tenant: str, user_id: str) -> int:
        if user_id == user and not landed:
            now = time.time()
            landed.append(StoredPreference(tenant=tenant, user_id=user_id, pref_id=uuid.uuid4().hex, prompt="Tips on money?",
                                           chosen=PLAIN_ANSWERS[3], rejected=WORDY_ANSWERS[3], created_at=now,
                                           received_at=now, **landing))
            vectors = np.zeros((1, rt.store.dim), np.float32)
            rt.store.add_preferences(landed, vectors, vectors, vectors)
        return count(tenant, user_id)

    monkeypatch.setattr(rt.store, "count_preferences", after_a_row_lands)
    with svc.client() as c:
        profile = c.get(f"/v1/users/{user}").json()
    assert landed, profile
    return profile


def test_a_comparison_stored_while_a_profile_is_read_is_not_called_a_rating(svc, monkeypatch):
    """A comparison that lands between the fit a profile read serves and the profile's count of the user's rows
    (another request's feedback, moved in by the ingest worker meanwhile) is in `counts.preferences` but not in
    the fit's `comparisons`. The summary took every row past those for a tie or a rating (`ties` as counted, the
    rest ratings), and told a user who never rated an answer "your 1 tie (...) and 1 rating of an answer with no
    other to compare it with are not counted"."""
    profile = _profile_read_as_a_row_lands(svc, monkeypatch, "raced", kind="comparison")
    summary = profile["summary"]
    assert profile["counts"]["preferences"] == 4 and summary["comparisons"] == 2, profile
    assert summary["ties"] == 1 and summary["unpaired_ratings"] == 0, summary
    assert summary["sentences"][-1] == "based on 2 comparisons and 1 tie (neither answer better)", summary["sentences"]


def test_a_tie_stored_while_a_profile_is_read_is_not_called_a_rating_of_3(svc, monkeypatch):
    """The same race for a tie of two answers ("no preference" between a `compare` pair): it lands after the fit the
    read serves, so the fit's `ties` are one short of the stored ties, and the summary took the difference for ratings
    of 3 ("your 1 rating of 3 (one answer, no other named) is not counted") for a user who never rated an answer."""
    profile = _profile_read_as_a_row_lands(svc, monkeypatch, "tie-raced", tie=True, kind="choice")
    summary = profile["summary"]
    assert profile["counts"]["preferences"] == 4 and summary["comparisons"] == 2, profile
    assert summary["ties"] == 2 and summary["ties_learned"] == 1 and summary["unpaired_ratings"] == 0, summary
    assert summary["sentences"][-1] == "based on 2 comparisons and 1 tie (neither answer better)", summary["sentences"]


def _summary_after_comparisons(svc, user: str, prompt: str, pairs: list[tuple[str, str]]) -> dict:
    """The profile summary of `user` once each (chosen, rejected) of `pairs` was posted as a comparison (201), the
    i-th to the prompt "`prompt` i?"."""
    with svc.client() as c:
        for i, (chosen, rejected) in enumerate(pairs):
            r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"{prompt} {i}?",
                                             "chosen": chosen, "rejected": rejected})
            assert r.status_code == 201, r.text
        return c.get(f"/v1/users/{user}").json()["summary"]


def test_a_joint_belief_on_length_and_exclamations_reads_as_one_sentence(svc):
    """trial48a, a profile page built on the API: a user who chose the short answer without exclamation marks
    over a long one with them, six times, moved `length` and `exclamations` together. The summary's sentence
    put the second feature's noun phrase after "with": "prefers shorter answers with answers without
    exclamation marks (confident)". A joint sentence now names what the answers have after "with"."""
    pairs = [("Rest.", "Go for a long walk in the park! Then call a friend!"),
             ("Tea.", "Make a big pot of green tea! Add honey and lemon!"),
             ("Read.", "Pick up a novel you love! Read a chapter before bed!"),
             ("Cook.", "Try a new recipe tonight! Invite some friends over!"),
             ("Sleep.", "Go to bed early tonight! Turn off every screen first!"),
             ("Walk.", "Take the dog out for a run! Explore a new trail!")]
    summary = _summary_after_comparisons(svc, "quiet48", "What should I do now", pairs)
    (joint,) = summary["joint"]
    assert joint["features"] == ["length", "exclamations"] and joint["direction"] == {"length": "less", "exclamations": "less"}
    assert joint["text"].startswith(f"prefers shorter answers with no exclamation marks ({joint['confidence']}): "
                                    "length and exclamations moved together in your 6 comparisons"), joint["text"]
    assert summary["sentences"][0] == joint["text"]


def test_a_user_with_stated_preferences_alone_is_ranked_by_them_not_by_maxmin(svc):
    """trial48a: docs/api.md said a user with `"prior": true` is served the MaxMin candidate; one who has only stated
    preferences is `"prior": true` too, and is ranked by their model, whose prior the statements shaped (as their
    reward scores are). Pins the documented exception: the top choice follows the statement."""
    tops = {}
    with svc.client() as c:
        for direction in ("more", "less"):
            user = f"stated-only48-{direction}"
            assert c.patch(f"/v1/users/{user}/stated-preferences", json={"preferences": {"length": direction}}).status_code == 200
            reply = chat(c, user, n=4)
            texts = [choice["message"]["content"] for choice in reply["choices"]]
            scores = c.post("/v1/rewards/score", json={"user": user, "prompt": "Any tips on cooking?", "responses": texts}).json()["scores"]
            assert reply["pluralign"]["prior"] is True
            assert scores == sorted(scores, reverse=True), (direction, texts, scores)  # ranked by the user's model
            tops[direction] = texts[0]
    assert len(tops["more"].split()) > len(tops["less"].split()), tops


def test_a_joint_belief_on_features_of_both_signs_says_what_the_answers_have_before_what_they_lack(svc):
    """reviewtrial48a: a user who chose a long answer in prose with exclamation marks over a short list without
    them, six times, moved `length`, `list_items` and `exclamations` together. The joint sentence read "prefers
    longer answers with no lists and exclamation marks", which a reader takes as no exclamation marks either:
    the opposite of the user's direction on them. What the answers have now comes first, what they lack last."""
    pairs = [("Go for a long walk in the park! Then call a friend!", "- Rest\n- Tea"),
             ("Make a big pot of green tea! Add honey and lemon!", "- Tea\n- Honey"),
             ("Pick up a novel you love! Read a chapter before bed!", "- Book\n- Bed"),
             ("Try a new recipe tonight! Invite some friends over!", "- Cook\n- Eat"),
             ("Go to bed early tonight! Turn off every screen first!", "- Bed\n- Sleep"),
             ("Take the dog out for a run! Explore a new trail!", "- Dog\n- Run")]
    summary = _summary_after_comparisons(svc, "loud48", "What should I do later", pairs)
    (joint,) = summary["joint"]
    assert joint["direction"] == {"length": "more", "list_items": "less", "exclamations": "more"}, joint
    assert joint["text"].startswith(f"prefers longer answers with exclamation marks and no lists ({joint['confidence']}): "), joint["text"]


def test_a_user_who_only_answered_no_preference_counts_among_the_tenants_users(svc, monkeypatch):
    """A user whose every answer was a tie ("no preference", fitted by Davidson's term) has a model that moved: towards
    indifference on the pairs they tied. They are one of the tenant's kinds of users, the very one a newcomer's tie
    weighs towards: `target: population` compares a newcomer with them, and the pooled prior is estimated from them
    too. Until session 50 both counted only users fitted on comparisons with a winner (`state.n > 0`,
    `n_preferences >= 1`), and left them out while their own requests were served from their fit (`prior` false)."""
    import msgspec

    rt = svc.runtime
    svc.keys.setdefault("shruggers", rt.keys.issue("shruggers"))
    pool = [{"prompt": "Tips on travel?", "answers": list(short_and_long("travel"))},
            {"prompt": "Tips on sleep?", "answers": list(short_and_long("sleep"))}]
    with svc.client("shruggers") as c:
        for user, answer in (("picks-short", "short"), ("picks-long", "long"), ("no-preference", "tie")):
            import_rows(c, user, [{"prompt": f"Tips on {topic}?", "chosen": pair[answer == "long"], "rejected": pair[answer != "long"],
                                   "tie": answer == "tie"} for topic in TOPICS[:4] for pair in [short_and_long(topic)]])
        rt.wait_for_background()  # each import's refit
        shrug = c.get("/v1/users/no-preference").json()["user_model"]
        assert (shrug["comparisons"], shrug["ties"]) == (0, 4), shrug
        scored = c.post("/v1/rewards/score", json={"user": "no-preference", "prompt": "Tips?", "responses": list(short_and_long("music"))})
        assert scored.json()["prior"] is False  # served from their own fit
        asked = c.post("/v1/users/newcomer/next-comparison", json={"pool": pool, "target": "population"}).json()
        assert asked["criterion"] == "population" and asked["population_users"] == 3, asked
        monkeypatch.setattr(rt, "settings", msgspec.structs.replace(rt.settings, pooled_prior_users=3))
        s, l_ = short_and_long("hiking")
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "newcomer", "prompt": "Tips on hiking?", "chosen": s,
                                            "rejected": l_}).status_code == 201
        fitted = c.get("/v1/users/newcomer").json()["user_model"]
    assert fitted["pooled_users"] == 3, fitted  # fitted under the prior of all three


def test_a_user_nothing_was_learned_from_is_closest_to_no_prototype(svc):
    """(session trial16_51) A user who only stated a preference (no comparison, no tie) has a profile, but nothing of their own
    answers placed them near a prototype: the summary says so, rather than naming the population's
    largest prototype as theirs ("closest to prototype 1 of 2" beside "based on 0 comparisons", until then),
    and its `nearest_prototype` has no probability or confidence."""
    with svc.client() as c:
        r = c.patch("/v1/users/quiet51/stated-preferences", json={"preferences": {"length": "less"}})
        assert r.status_code == 200, r.text
        profile = c.get("/v1/users/quiet51").json()
    summary = profile["summary"]
    nearest = summary["nearest_prototype"]
    said = [s for s in summary["sentences"] if "prototype" in s]
    assert len(said) == 1, summary["sentences"]
    assert not said[0].startswith("closest to prototype"), said
    assert said[0].startswith("no prototype is closest yet: nothing learned from your answers"), said
    assert nearest["confidence"] is None and nearest["probability"] is None, nearest
    assert summary["sentences"][-1] == "based on 0 comparisons"


def test_the_nearest_prototype_says_how_likely_it_is_the_closest(svc):
    """(session trial16_51) After a few comparisons the summary's nearest prototype carries the posterior probability that it is
    the one the user weighs most (`probability`, checked here against 20,000 draws of the exported
    posterior), its `confidence` on the features' scale, and the sentence says it (until then it named the
    prototype with no confidence, however little the user's answers told the prototypes apart)."""
    with svc.client() as c:
        give_terse_answers(c, "terse51")
        profile = c.get("/v1/users/terse51").json()
        lines = [json.loads(line) for line in c.get("/v1/users/terse51/export").text.splitlines()]
    import numpy as np

    state = next(line for line in lines if line["type"] == "user")["user_model"]
    at = [i for i, name in enumerate(state["names"]) if name.startswith("prototype_")]
    mean = np.asarray(state["mean"])[at]
    cov = np.asarray(state["cov"]).reshape(len(state["mean"]), -1)[np.ix_(at, at)]
    draws = np.random.default_rng(7).multivariate_normal(mean, cov, 20_000)
    nearest = profile["summary"]["nearest_prototype"]
    assert nearest["prototype"] == int(mean.argmax())
    expected = float((draws.argmax(1) == nearest["prototype"]).mean())
    assert nearest["probability"] == pytest.approx(expected, abs=0.03)
    # away from both boundaries (Phi(2) ~0.977 and Phi(1) ~0.841), where sampling error could put it either side: until
    # session reviewtrial16_51 an `expected` in [0.977, 0.98) asked for "likely" where the service rightly said "confident"
    level = ("confident" if expected >= 0.987 else "likely" if 0.85 <= expected < 0.967 else
             "uncertain" if expected < 0.83 else None)
    if level is not None:
        assert nearest["confidence"] == level, nearest
    sentence = next(s for s in profile["summary"]["sentences"] if "prototype" in s)
    assert sentence.startswith(f"closest to prototype {nearest['prototype']} of {len(at)} "
                               f"(weight {nearest['weight']:.2f}, {nearest['confidence']})"), sentence


def test_if_none_match_on_stated_preferences_is_evaluated_not_ignored(svc):
    """(session trial16_51) RFC 9110, 13.2.1: an origin server evaluates `If-None-Match` (weak comparison), and a
    method whose condition is false is not performed: a PATCH is a 412 that changes nothing, a GET a 304 with the
    tag. Until then the header was ignored: a settings page that sent `If-None-Match: *` ("only if nothing was ever
    stated") overwrote the user's own statement (200, version 2), and a page polling with its tag got the whole record."""
    url = "/v1/users/stella51/stated-preferences"
    with svc.client() as c:
        own = c.patch(url, json={"preferences": {"length": "less"}})  # the user's own: version 1
        one = own.headers["etag"]
        assert own.status_code == 200
        # a record always exists (version 0 for a user who never stated anything), so `*` never holds
        for tags in ("*", one, f"W/{one}", f'"0", {one}'):
            r = c.patch(url, json={"preferences": {"length": "more"}}, headers={"If-None-Match": tags})
            assert r.status_code == 412 and field_named(r) == "If-None-Match" and r.headers["etag"] == one, (tags, r.text)
        assert c.get(url).json()["preferences"] == {"length": "less"}  # nothing changed
        r = c.patch(url, json={"preferences": {"list_items": "more"}}, headers={"If-None-Match": '"0"'})  # not at 0: done
        two = r.headers["etag"]
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
        for tags in (two, f"W/{two}", "*", f'"7", {two}'):
            r = c.get(url, headers={"If-None-Match": tags})
            assert r.status_code == 304 and r.headers["etag"] == two and r.content == b"", (tags, r.status_code, r.text)
        for tags in (one, '"2"', "2"):  # the record before, and the version alone (the tag until session versions52)
            r = c.get(url, headers={"If-None-Match": tags})
            assert r.status_code == 200 and r.json()["version"] == 2
        for bad in ('"2', "abc", '"2", *'):
            r = c.patch(url, json={"preferences": {"length": "more"}}, headers={"If-None-Match": bad})
            assert r.status_code == 400 and field_named(r) == "If-None-Match", (bad, r.text)
        assert c.get(url).json()["version"] == 2



@pytest.mark.slow  # ~60 s of chats on two cores: `make test-bench`
def test_a_user_who_changes_their_mind_is_asked_again_and_the_summary_follows(svc):
    """trial16_51: a client that answers every `compare` pair and, on a chat without one, tells the app which of the
    shortest and the longest returned answers it prefers (a `choice` with `shown`), picking the shorter for 30 chats
    and until chat stops asking, then always the longer. Until
    session 51 the gate read only the posterior's certainty, which a change of mind does not lower: `compare` came
    back now and then, then stopped, and the summary still said "shorter". Since, the user's newest answers are
    checked against the posterior fitted on the older ones (`UserState.surprise`, `pluralign.user.active.recent_surprise`):
    once the check fails, chat asks on every chat and onboarding's `worth_asking` is true, until the posterior follows
    the user (the summary says "longer") and the check passes; then, a consistent user again, they stop being asked.

    Session 52: the check no longer trusts the posterior's calibration (coin flippers were flagged too), and ranks the
    newest answers' losses among the older answers' own held-out ones, which needs more answers: session 51's client
    (answering only `compare` pairs, known from 13 answers, then 7 contrary answers to `compare` pairs in 40 chats, the
    pairs the posterior is least sure of) reached z 2.16 and was never flagged; the client above, known from 30
    answers, is flagged after its 6th contrary answer (z 3.25) and asked on the next 7 chats, until the summary says
    "longer". The bound asserted: within 10 contrary answers (`benchmarks/changed_mind.py`: users known from 37 answers
    are flagged after 3-10, from 13 after 4-10 for 18 of 20)."""
    from service.users.services import user_weights

    rt = svc.runtime
    svc.keys.setdefault("mind", rt.keys.issue("mind"))
    log = []  # (round, picks longer, compare shown, surprised before the chat, contrary answers sent before it, its z)
    contrary = [0]

    def rounds(pick_longer: bool, start: int, most: int, stop) -> None:
        for rnd in range(start, start + most):
            state = user_weights(rt, "mind", "flip").state
            out = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "flip", "n": 4, "seed": rnd, "messages": [
                {"role": "user", "content": f"Tip number {rnd}?"}]}).json()
            compare = out["pluralign"]["compare"]
            texts = [ch["message"]["content"] for ch in out["choices"]]
            log.append((rnd, pick_longer, compare is not None, state is not None and state.surprised, contrary[0], None if state is None else round(state.surprise, 2)))
            shown = compare
            if shown is None:  # unprompted: the shortest and the longest returned answers
                shown = [min(range(len(texts)), key=lambda i: len(texts[i])), max(range(len(texts)), key=lambda i: len(texts[i]))]
            if shown is not None and texts[shown[0]] != texts[shown[1]]:
                a, b = sorted(shown, key=lambda i: len(texts[i]))
                tie = len(texts[a]) == len(texts[b])
                r = c.post("/v1/feedback", json={"type": "choice", "response_id": out["id"], "chosen_index": b if pick_longer else a,
                                                 "shown": shown, "tie": tie})
                assert r.status_code == 201, r.text
                contrary[0] += pick_longer and not tie
            if stop():
                return

    def length_direction() -> str:
        summary = c.get("/v1/users/flip").json()["summary"]
        return next(f for f in summary["features"] if f["feature"] == "length")["direction"]

    quiet = lambda: len(log) >= 3 and not any(e[2] for e in log[-3:])  # noqa: E731
    with svc.client("mind") as c:
        rounds(False, 0, 60, lambda: len(log) >= 30 and quiet())
        assert quiet() and length_direction() == "less", log  # well known: no longer asked
        flip = len(log)
        worth = []

        def settled() -> bool:
            state = user_weights(rt, "mind", "flip").state
            if state.surprised and not worth:  # onboarding agrees with chat: worth asking again
                prompt = f"Tip number {log[-1][0]}?"
                r = c.post("/v1/users/flip/next-comparison", json={"pool": [{"prompt": prompt, "answers": ["Yes.", "Well, yes, in most cases it is."]}]})
                worth.append(r.json()["worth_asking"])
            return len(log) - flip >= 6 and quiet() and length_direction() == "more"

        rounds(True, flip, 40, settled)
        after = log[flip:]
        print(f"phase 1 {flip} rounds; phase 2 {after}")
        surprised = [i for i, e in enumerate(after) if e[3]]
        assert surprised, after  # the contrary answers failed the check
        assert after[surprised[0]][4] <= 10, after  # within 10 contrary answers
        # from the first chat after the check failed, asked on every chat while it fails
        assert all(e[2] for e in after if e[3]), after
        assert worth == [True], worth
        assert length_direction() == "more", after  # the summary followed
        assert quiet() and not after[-1][3], after  # and, consistent again, the user stops being asked


@pytest.mark.slow  # ~30 refits through the app: `make test-bench`
def test_a_coin_flipping_user_is_not_taken_for_one_who_changed_their_mind(svc):
    """(session 52) A user with no preference, picking the shorter or the longer answer by a coin (a fixed seed), is
    checked at every refit from their 15th answer to their 45th. Until session 52 the check trusted the older answers'
    posterior to be calibrated, and on few coin flips it is overconfident: this user was flagged (and would be asked on
    every chat) at 3 of 31 refits (z up to 3.66, all before their 22nd answer). Since, the newest answers' losses are ranked among the older answers' own held-out
    losses, and a user whose answers are alike is flagged about as often as a normal z of 3 says (`pluralign.user.active.SURPRISE_Z`,
    `benchmarks/changed_mind.py`): here at most 1 of 31 is allowed (measured: 0)."""
    import numpy as np

    from service.users.services import user_weights

    rt = svc.runtime
    svc.keys.setdefault("coins52", rt.keys.issue("coins52"))
    rng = np.random.default_rng(52)
    flagged = []
    with svc.client("coins52") as c:
        for i in range(45):
            topic = TOPICS[i % len(TOPICS)]
            short, long_ = short_and_long(f"{topic} on day {i}")
            chosen, rejected = (short, long_) if rng.random() < 0.5 else (long_, short)
            r = c.post("/v1/feedback", json={"type": "comparison", "user": "coin", "prompt": f"Tips on {topic}, day {i}?",
                                             "chosen": chosen, "rejected": rejected})
            assert r.status_code == 201, r.text
            if i >= 14:
                state = user_weights(rt, "coins52", "coin").state
                assert state.n == i + 1, (state.n, i)
                flagged.append(round(state.surprise, 2))
    print("surprise at refits 15-45:", flagged)
    assert sum(z >= 3 for z in flagged) <= 1, flagged


@pytest.mark.slow  # 30 onboarding rounds, ~5 s: `make test-bench`
def test_onboarding_a_user_who_answers_alike_is_not_taken_for_one_who_changed_their_mind(svc):
    """reviewmind52: docs/api.md's onboarding, a client that sends each `next-comparison` pair's pick as a comparison
    (always the shorter answer: a user who never changes) and asks again, 30 questions (a questionnaire of fixed
    length: it reads `worth_asking` but goes on). The pairs it is offered are those the posterior is least sure of,
    so each new answer is harder to predict than the older ones have become: mind52's rank z alone, which takes old
    and new answers as alike, rose with each answer here (-0.53 at the 15th, 3.01 at the 27th, 3.58 at the 30th), and
    `worth_asking`, false from the 17th question, turned true again at the 28th: a user who never changed asked
    again. The check fails only when session 51's z, each answer against its own pair's uncertainty, does too: never
    here (z -1.42 to -1.04), and once `worth_asking` is false it stays false."""
    import numpy as np

    from service.users.services import user_weights

    rt = svc.runtime
    svc.keys.setdefault("steady52", rt.keys.issue("steady52"))
    rng = np.random.default_rng(52)
    pool = [{"prompt": f"Tips on {topic}?", "answers": [f"On {topic}: " + " ".join(["and then rest"] * int(k)) + "."
                                                       for k in rng.choice(np.arange(1, 20), 4, replace=False)]}
            for topic in TOPICS]  # 16 prompts x 4 answers of 3 to 58 words
    surprise, worth = [], []
    with svc.client("steady52") as c:
        for _ in range(30):
            r = c.post("/v1/users/steady/next-comparison", json={"pool": pool})
            assert r.status_code == 200, r.text
            pair = r.json()
            worth.append(pair["worth_asking"])
            shorter, longer = sorted(pair["answers"], key=len)
            r = c.post("/v1/feedback", json={"type": "comparison", "user": "steady", "prompt": pair["prompt"],
                                             "chosen": shorter, "rejected": longer})
            assert r.status_code == 201, r.text
            surprise.append(round(user_weights(rt, "steady52", "steady").state.surprise, 2))
    print("surprise at each refit:", surprise, "worth asking:", worth)
    assert not any(z >= 3 for z in surprise), surprise
    assert False in worth and not any(worth[worth.index(False):]), worth  # well known, and not asked again


def test_a_user_sure_of_the_shorter_answer_who_starts_to_tie_is_asked_again(svc):
    """(session 52) The changed-mind check reads ties. A user who picked the shorter answer 15 times, then says "no
    preference" between short and long answers (ties, `tie: true`), has changed their mind about length: after 10 ties
    their newest answers fail the check, and onboarding's `worth_asking` says to ask again. Until session 52 the check read only the comparisons with a winner
    among the newest answers, and fitted the ties into the older answers' posterior instead: this user read z -2.30.
    A user who goes on picking the shorter answer stays unflagged."""
    from service.users.services import user_weights

    rt = svc.runtime
    svc.keys.setdefault("ties52", rt.keys.issue("ties52"))
    with svc.client("ties52") as c:
        for user, tie in (("tier", True), ("steady", False)):
            for i in range(25):
                topic = TOPICS[i % len(TOPICS)]
                short, long_ = short_and_long(f"{topic} on day {i}")
                r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Tips on {topic}, day {i}?",
                                                 "chosen": short, "rejected": long_, "tie": tie and i >= 15})
                assert r.status_code == 201, r.text
        tier, steady = (user_weights(rt, "ties52", u).state for u in ("tier", "steady"))
        assert (tier.n, tier.ties, steady.n) == (15, 10, 25), (tier.n, tier.ties, steady.n)
        assert tier.surprised and not steady.surprised, (tier.surprise, steady.surprise)
        short, long_ = short_and_long("tea")
        r = c.post("/v1/users/tier/next-comparison", json={"pool": [{"prompt": "Tips on tea?", "answers": [short, long_]}]})
        assert r.status_code == 200 and r.json()["worth_asking"], r.text


def test_a_stated_preference_does_not_make_a_collinear_feature_confident_against_the_comparisons(svc):
    """trial16_51: stated "longer", then 10 comparisons picking the shorter answer. The stated prior pins `length`
    (sd 0.5), so the comparisons' evidence went to the feature that moved with it: "not addressing the reader as 'you'
    (confident)" at -5.95 +- 2.10, where without the statement it read -0.89 +- 4.60, uncertain. The summary now
    says of such a feature no more than the comparisons alone say (`UserState.p_more_from_comparisons`, every feature's)."""
    with svc.client() as c:
        beliefs = {}
        for user, stated in (("turncoat", True), ("unstated", False)):
            if stated:
                assert c.patch(f"/v1/users/{user}/stated-preferences", json={"preferences": {"length": "more"}}).status_code == 200
            for topic in TOPICS[:10]:
                short, long_ = short_and_long(topic)
                assert c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Tips on {topic}?",
                                                    "chosen": short, "rejected": long_}).status_code == 201
            beliefs[user] = {f["feature"]: f for f in c.get(f"/v1/users/{user}").json()["summary"]["features"]}
    you, plain = beliefs["turncoat"]["second_person"], beliefs["unstated"]["second_person"]
    assert you["weight"] < -2 * you["sd"], you  # the posterior still puts the evidence there ...
    assert plain["confidence"] == "uncertain" and you["confidence"] != "confident", (you, plain)  # ... the summary does not claim it
    assert "alone do not show" in you["text"] and "length" in you["text"], you["text"]
    assert beliefs["turncoat"]["length"]["stated"] == "more"  # the stated feature's own line is as it was
    for name, belief in beliefs["unstated"].items():  # no statement: nothing is capped
        assert "alone do not show" not in belief["text"], (name, belief)


YES_NO_QUESTIONS = ("Should I exercise every day?", "Should I quit my job to travel?", "Is it fine to skip breakfast?")


def test_a_questionnaire_of_yes_or_no_questions_asks_each_question_not_only_the_first(svc):
    """trial16_52's reproducer: a calibration pool of three questions, each answered "Yes." or "No.". Once the
    user answered one, next-comparison answered 400 "no pair of different answers left": a pair was taken as asked
    whatever its prompt, so "Yes." against "No." was asked once for the whole questionnaire. From the tenant's
    stored comparisons likewise: three users' yes-or-no answers to three questions were one pair (`pairs` 1). A
    question is its prompt with its two answers; the same question sent twice in a pool still counts once."""
    svc.keys.setdefault("yesno", svc.runtime.keys.issue("yesno"))
    pool = [{"prompt": q, "answers": ["Yes.", "No."]} for q in YES_NO_QUESTIONS]
    with svc.client("yesno") as c:
        first = c.post("/v1/users/quiz/next-comparison", json={"pool": [*pool, pool[0]]})
        assert first.status_code == 200, first.text
        assert first.json()["pairs"] == 3, first.json()  # the repeated item is one question
        asked = [first.json()["prompt"]]
        for left in (2, 1):
            assert c.post("/v1/feedback", json={"type": "comparison", "user": "quiz", "prompt": asked[-1],
                                                "chosen": "Yes.", "rejected": "No."}).status_code == 201
            r = c.post("/v1/users/quiz/next-comparison", json={"pool": pool})
            assert r.status_code == 200, r.text
            assert r.json()["pairs"] == left and r.json()["prompt"] not in asked, (asked, r.json())
            asked.append(r.json()["prompt"])
        assert sorted(asked) == sorted(YES_NO_QUESTIONS)
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "quiz", "prompt": asked[-1],
                                            "chosen": "Yes.", "rejected": "No."}).status_code == 201
        done = c.post("/v1/users/quiz/next-comparison", json={"pool": pool})  # every question answered: the 400 says so
        assert done.status_code == 400 and field_named(done) == "pool", done.text
        assert "answered every question of this `pool`" in done.json()["error"]["message"], done.text
        # the tenant's stored comparisons: quiz's three answers, one question each; a newcomer is asked any of three
        svc.runtime.ingest.flush("yesno")
        stored = c.post("/v1/users/newcomer/next-comparison", json={})
        assert stored.status_code == 200, stored.text
        assert stored.json()["pairs"] == 3 and stored.json()["pool"] == "stored", stored.json()
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "newcomer", "prompt": stored.json()["prompt"],
                                            "chosen": "No.", "rejected": "Yes."}).status_code == 201
        svc.runtime.ingest.flush("yesno")
        again = c.post("/v1/users/newcomer/next-comparison", json={}).json()
        assert again["pairs"] == 2 and again["prompt"] != stored.json()["prompt"], again


def test_the_prototype_sentence_quotes_a_stored_answer_as_it_reads(svc):
    """trial16_52's reproducer: the summary's sentence on the nearest prototype quoted the stored answer as Python
    writes a string (`repr`): a list answer read "answers like '- Saturday: \\"hike\\"\\\\n- Sunday: rest, it\\\\'s
    fine'", its line break and apostrophe as backslashes before a user. It now reads as the answer does, its lines
    joined by spaces, between typographic quotes; the answer itself stays whole in `nearest_prototype.highest`."""
    svc.keys.setdefault("quoting", svc.runtime.keys.issue("quoting"))
    chosen, rejected = "- Saturday: \"hike\"\n- Sunday: rest, it's fine", "Stay home and read\ta long book, it's calm."
    with svc.client("quoting") as c:
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "lister", "prompt": "Weekend plan?",
                                            "chosen": chosen, "rejected": rejected}).status_code == 201
        out = c.get("/v1/users/lister").json()["summary"]
    sentence = next(s for s in out["sentences"] if "prototype" in s)
    highest = out["nearest_prototype"]["highest"][0]["answer"]
    assert highest in (chosen, rejected)
    assert "\\" not in sentence, sentence
    assert f"answers like \u201c{' '.join(highest.split())}\u201d" in sentence, sentence


SHORTER_ANSWERS = [  # trial16_52's questionnaire user who picked the shorter answer of each pair asked
    ("Tips for a job interview?", "Be on time.", "- Research the company\n- Practice answers\n- Ask questions"),
    ("How can I sleep better?", "Wow, you'll love this: don't drink coffee after noon!", "- Dark room\n- No screens\n- Same bedtime"),
    ("What should I read?", "Dune.", "You might enjoy Dune, a sweeping science fiction novel about politics, ecology and religion on a desert planet."),
    ("How can I sleep better?", "- Dark room\n- No screens\n- Same bedtime",
     "Keep a regular bedtime, make your room dark and cool, and put screens away an hour before you sleep so your body winds down."),
    ("How do I boil an egg?", "Boil it 9 minutes.", "- Boil water\n- Add egg\n- Wait 9 minutes\n- Cool it"),
    ("How can I sleep better?", "Go to bed earlier.", "Wow, you'll love this: don't drink coffee after noon!"),
    ("Suggest a weekend plan.", "- Saturday: hike\n- Sunday: rest", "Saturday: a long hike in the hills. Sunday: brunch with friends, then a film."),
    ("How do I boil an egg?", "Hey! Just toss it in boiling water, it's easy!", "- Boil water\n- Add egg\n- Wait 9 minutes\n- Cool it"),
    ("Tips for a job interview?", "Be on time.", "It is advisable to arrive punctually and to dress formally."),
    ("How do I boil an egg?", "Boil it 9 minutes.", "Hey! Just toss it in boiling water, it's easy!"),
    ("How do I boil an egg?", "- Boil water\n- Add egg\n- Wait 9 minutes\n- Cool it",
     "Bring a pot of water to a rolling boil, lower the egg in gently, let it cook for about nine minutes, then cool it in cold water before peeling."),
    ("Tips for a job interview?", "It is advisable to arrive punctually and to dress formally.", "- Research the company\n- Practice answers\n- Ask questions"),
    ("Suggest a weekend plan.", "Saturday: a long hike in the hills. Sunday: brunch with friends, then a film.",
     "Good day! I would be delighted to propose the following itinerary: Saturday a hike, Sunday repose."),
    ("What should I read?", "- Dune\n- Emma\n- Beloved", "I would respectfully recommend the works of Jane Austen, notably Emma."),
    ("Tips for a job interview?", "- Research the company\n- Practice answers\n- Ask questions",
     "Research the company beforehand, practise answering common questions aloud, and prepare a few thoughtful questions of your own to ask the interviewer."),
]


def test_a_stated_preference_does_not_make_a_group_of_features_likely_against_the_comparisons(svc):
    """trial16_52: the questionnaire user above (15 comparisons, the shorter answer chosen each time) then stated
    "longer". The stated prior pins `length`, so the comparisons' evidence went to features that moved with it, and the
    summary's first sentence read "prefers answers with exclamation marks and contractions (a casual register)
    (likely)" (0.86), where the same comparisons without the statement read 0.75, uncertain, and said nothing of them.
    trial16_51 capped single features at what the comparisons alone say; a group of features moved together (`joint`)
    now is too."""
    svc.keys.setdefault("grouped", svc.runtime.keys.issue("grouped"))
    lines = "".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in SHORTER_ANSWERS)
    summaries = {}
    with svc.client("grouped") as c:
        for user, stated in (("said-longer", True), ("said-nothing", False)):
            r = c.post(f"/v1/users/{user}/import", content=lines.encode(), headers={"content-type": "application/x-ndjson"})
            assert r.status_code == 201, r.text
            if stated:
                assert c.patch(f"/v1/users/{user}/stated-preferences", json={"preferences": {"length": "more"}}).status_code == 200
            summaries[user] = c.get(f"/v1/users/{user}").json()["summary"]
    groups = {user: {tuple(j["features"]): j for j in s["joint"]} for user, s in summaries.items()}
    alone = groups["said-nothing"]
    assert alone, summaries["said-nothing"]  # the comparisons moved some features together
    for features, group in groups["said-longer"].items():
        if "length" in features:
            continue  # the stated feature's own group rests on the statement
        levels = ("uncertain", "likely", "confident")
        assert levels.index(group["confidence"]) <= levels.index(alone[features]["confidence"]), (group, alone[features])
        if alone[features]["confidence"] == "uncertain":
            assert group["confidence"] == "uncertain" and group["text"] not in summaries["said-longer"]["sentences"], group


def test_a_stored_questionnaire_shows_its_yes_and_no_in_an_order_of_each_question(svc):
    """reviewtrial16_52's reproducer: since trial16_52 each stored question of a questionnaire is asked, not only its
    first, but the order of a stored pair's answers was a coin of the user's seed and the two texts alone: every
    "Yes."/"No." question showed the same answer first to a user ("No." eight times out of eight here), so a user who
    tends to pick the first answer shown read as saying "No." to everything, and the chosen answer of the tenant's users
    came first on all of them or on none. The coin now reads the prompt too: still the same on every call."""
    svc.keys.setdefault("yesno-order", svc.runtime.keys.issue("yesno-order"))
    questions = [f"Question {i}: should I do it?" for i in range(8)]
    with svc.client("yesno-order") as c:
        for q in questions:
            assert c.post("/v1/feedback", json={"type": "comparison", "user": "earlier", "prompt": q,
                                                "chosen": "Yes.", "rejected": "No."}).status_code == 201
        svc.runtime.ingest.flush("yesno-order")
        shown = {}
        for _ in questions:
            r = c.post("/v1/users/asked/next-comparison", json={})
            assert r.status_code == 200, r.text
            if not shown:
                again = c.post("/v1/users/asked/next-comparison", json={}).json()
                assert (again["prompt"], again["answers"]) == (r.json()["prompt"], r.json()["answers"])  # the same on every call
            shown[r.json()["prompt"]] = r.json()["answers"]
            chosen, rejected = r.json()["answers"]
            assert c.post("/v1/feedback", json={"type": "comparison", "user": "asked", "prompt": r.json()["prompt"],
                                                "chosen": chosen, "rejected": rejected}).status_code == 201
    assert sorted(shown) == questions
    firsts = [answers[0] for answers in shown.values()]
    assert {"Yes.", "No."} == set(firsts), shown


def test_the_prototypes_are_described_by_distinct_answer_pairs_not_by_a_questionnaire_repeating_one(svc, monkeypatch):
    """reviewtrial16_52's reproducer: since trial16_52 the stored sample counts a question (a prompt and its answers)
    once, as next-comparison must, and the prototypes' description drew the same sample: a tenant of 300 "Yes."/"No."
    questions and 40 other pairs was described from 200 questions holding 20 of those pairs (42 distinct answers; 82
    before), while the description shows each answer once anyway. Its sample counts each pair of answers once again
    (here 4 of them: the tenant's 3 other pairs and one "Yes."/"No." question, so its 8 answers are all shown)."""
    from service.users import services

    monkeypatch.setattr(services, "DESCRIBED_PAIRS", 4)
    svc.keys.setdefault("quiz-described", svc.runtime.keys.issue("quiz-described"))
    others = [("Tips for a job interview?", "Be on time.", "Research the company and practise your answers aloud."),
              ("How can I sleep better?", "Dark room.", "Keep a regular bedtime and put screens away an hour before."),
              ("What should I read?", "Dune.", "You might enjoy Emma, a comedy of manners by Jane Austen.")]
    rows = [(f"Question {i}: should I do it?", "Yes.", "No.") for i in range(12)] + others
    lines = "".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in rows)
    with svc.client("quiz-described") as c:
        r = c.post("/v1/users/quizzer/import", content=lines.encode(), headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 201, r.text
    svc.runtime.ingest.flush("quiz-described")
    described = services.prototype_descriptions(svc.runtime, "quiz-described", per_side=10)
    shown = {x.answer for x in described[0].highest + described[0].lowest}
    assert shown == {"Yes.", "No.", *(a for _, c, r in others for a in (c, r))}, shown


def test_a_capped_belief_reports_a_direction_and_probability_that_agree(svc):
    """review belief52: a belief capped at what the comparisons alone say (trial16_51's feature, trial16_52's group)
    kept the posterior's direction whatever the cap left of its probability: the questionnaire user above, stated
    "longer", read `exclamations` "less" at 0.586 and `second_person` "less" at 0.5728, below the Φ(0.25) = 0.5987 under
    which the docs promise no direction, and a group capped that low read "no preference learned yet along ...; your 15
    comparisons alone do not show it". A capped belief now reports the comparisons' own side: no direction below
    Φ(0.25), the other side where they lean the other way; `probability` is always the likelier side's."""
    svc.keys.setdefault("capped", svc.runtime.keys.issue("capped"))
    lines = "".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in SHORTER_ANSWERS)
    with svc.client("capped") as c:
        r = c.post("/v1/users/said-longer/import", content=lines.encode(), headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 201, r.text
        assert c.patch("/v1/users/said-longer/stated-preferences", json={"preferences": {"length": "more"}}).status_code == 200
        summary = c.get("/v1/users/said-longer").json()["summary"]
    capped = [b for b in summary["features"] + summary["joint"] if "alone do not show" in b["text"]]
    assert capped, summary  # the case this is about
    for belief in summary["features"] + summary["joint"]:
        assert belief["probability"] >= 0.5, belief
        assert (belief["direction"] is None) == (belief["probability"] < 0.5987), belief
        if belief["direction"] is None:
            assert "show it" not in belief["text"] and belief["text"].startswith("no preference learned yet"), belief
    shown = {b["feature"]: b for b in summary["features"]}
    assert shown["exclamations"]["direction"] is None and "alone do not show one" in shown["exclamations"]["text"], shown


class CountingEncoder:
    """The runtime's encoder, recording every text it is asked to embed."""

    def __init__(self, encoder):
        self.inner, self.encoder_id, self.dim = encoder, encoder.encoder_id, encoder.dim
        self.max_length = getattr(encoder, "max_length", None)
        self.texts: list[str] = []

    def encode(self, texts):
        texts = list(texts)
        self.texts += texts
        return self.inner.encode(texts)


def test_a_pool_sent_again_is_not_encoded_again_but_another_tenants_and_after_a_delete_is(svc, monkeypatch):
    """pool52's reproducer: every next-comparison call with a `pool` embedded each of its texts again (1.3-3.0 s for 32
    items on two cores), so a questionnaire of ten questions spent ~20 s embedding the same texts. A pool sent again
    is now read from the tenant's memory of its pool vectors: the second call embeds nothing and answers alike.
    Another tenant sending the same texts embeds them itself (no answer or timing tells it what acme sent), and a
    DELETE of one of acme's users drops acme's pool vectors (a pool may quote that user's texts)."""
    counting = CountingEncoder(svc.runtime.encoder)
    monkeypatch.setattr(svc.runtime, "encoder", counting)
    pool = [{"prompt": f"Pool question {i} on gardening?",
             "answers": [f"Water it {i} times.", f"Water the bed {i} times a week in the morning, deeply, so roots grow down."]}
            for i in range(4)]
    texts = {t for item in pool for t in (item["prompt"], *item["answers"])}
    with svc.client() as c:
        first = c.post("/v1/users/pooled-a/next-comparison", json={"pool": pool})
        assert first.status_code == 200, first.text
        assert set(counting.texts) == texts
        counting.texts.clear()
        second = c.post("/v1/users/pooled-b/next-comparison", json={"pool": pool})
        assert second.status_code == 200, second.text
        assert counting.texts == []  # every text of the pool came from memory
        same = lambda out: {k: v for k, v in out.json().items() if k not in ("bits", "user")}  # noqa: E731
        assert same(second) == same(first)  # the same pair, asked of another new user
        assert second.json()["bits"] == pytest.approx(first.json()["bits"])
    with svc.client("globex") as c:  # the same texts from another tenant: embedded for it, as if acme had sent nothing
        assert c.post("/v1/users/pooled-a/next-comparison", json={"pool": pool}).status_code == 200
        assert set(counting.texts) == texts
    counting.texts.clear()
    with svc.client() as c:
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "pool-leaver", "prompt": pool[0]["prompt"],
                                            "chosen": pool[0]["answers"][0], "rejected": pool[0]["answers"][1]}).status_code == 201
        assert c.delete("/v1/users/pool-leaver").status_code == 200
        counting.texts.clear()
        assert c.post("/v1/users/pooled-b/next-comparison", json={"pool": pool}).status_code == 200
        assert set(counting.texts) == texts  # embedded again: nothing of acme's pool outlived the DELETE


def test_the_summary_of_a_user_whose_newest_answers_contradict_it_says_so(svc):
    """trial16_53: a user who picked the shorter answer 30 times, then the longer one 10 times in a row. Their newest
    answers fail the held-out check (`UserState.surprised`): chat asks them on every chat and onboarding's
    `worth_asking` is true, because the service takes them to have changed their mind. But the summary, the user's
    one view of what the model believes, said only "prefers shorter answers with shorter, plainer words and no 'you'
    addressing the reader (likely)" (one by one through the app, a user known from 30 answers read "prefers shorter
    answers (confident)" until their 14th contrary answer), with not a word that their newest answers say otherwise. It now says so (`changed_mind`, and a sentence that leads `sentences`); a user who goes on picking
    the shorter answer reads as before."""
    from service.users.services import user_weights

    def rows(turn_at: int) -> list[dict]:
        out = []
        for i in range(40):  # 10 questions asked 4 times: 30 texts to embed
            short, long_ = short_and_long(TOPICS[i % 10])
            chosen, rejected = (long_, short) if i >= turn_at else (short, long_)
            out.append({"prompt": f"Tips on {TOPICS[i % 10]}?", "chosen": chosen, "rejected": rejected,
                        "created_at": 1_700_000_000 + 60 * i})
        return out

    with svc.client() as c:
        import_rows(c, "turned-longer", rows(turn_at=30))
        import_rows(c, "kept-shorter", rows(turn_at=40))
        turned, kept = (c.get(f"/v1/users/{u}").json()["summary"] for u in ("turned-longer", "kept-shorter"))
        short, long_ = short_and_long("tea")
        asked = c.post("/v1/users/turned-longer/next-comparison", json={"pool": [{"prompt": "Tips on tea?", "answers": [short, long_]}]})
    assert user_weights(svc.runtime, "acme", "turned-longer").state.surprised  # the check the service asks again by
    assert asked.status_code == 200 and asked.json()["worth_asking"], asked.text
    # the posterior has not followed yet ("prefers shorter answers with shorter, plainer words ... (likely)"): the
    # summary must not leave it at that
    assert any(s.startswith("prefers shorter answers") for s in turned["sentences"]), turned["sentences"]
    assert turned["changed_mind"] is True, turned
    assert turned["sentences"][0] == ("your newest 10 answers disagree with what your earlier answers showed, as if you "
                                      "changed your mind: what follows still rests on the earlier ones, and pluralign "
                                      "asks again which answer you prefer until it has caught up"), turned["sentences"]
    assert kept["changed_mind"] is False and not any("newest" in s for s in kept["sentences"]), kept["sentences"]
    assert any(s.startswith("prefers shorter answers") for s in kept["sentences"]), kept["sentences"]


def test_a_profile_never_quotes_another_users_text_unless_the_tenant_opts_in(svc, monkeypatch):
    """trial16_53: the summary's nearest prototype was shown by stored answers of the tenant, other users' prompts and
    answers (an `edit` is text a user wrote): bob, who only stated a preference, read alice's "my landlord ...
    eviction" question and her answer in his profile, the page a user reads about themself. trial16_53 added
    `PLURALIGN_PROFILE_EXAMPLES=own` but left the default quoting others; the review of trial16_53 made `own` the
    default (the lead's decision): each user's profile is described by their own stored pairs (bob, none: empty lists
    and no quote), and `tenant` is an opt-in for tenants whose data is shared by design. The dashboard (an auditor's
    view, `prototype_descriptions`) still shows the tenant's."""
    import msgspec

    from service.users.services import prototype_descriptions

    rt = svc.runtime
    svc.keys.setdefault("privacy53", rt.keys.issue("privacy53"))
    secret = "How do I answer my landlord's eviction letter about unpaid rent?"
    with svc.client("privacy53") as c:
        import_rows(c, "alice", [{"prompt": secret, "chosen": "Call a tenants' union today.",
                                  "rejected": "Ignore it and hope the letter goes away."}])
        assert c.patch("/v1/users/bob/stated-preferences", json={"preferences": {"length": "less"}}).status_code == 200
        import_rows(c, "carol", [{"prompt": "Tips on tea?", "chosen": "Brew it for three minutes.", "rejected": "Boil it."}])
        rt.ingest.flush("privacy53")  # every row in the table, as the feedback worker moves them
        bob, carol, alice = (c.get(f"/v1/users/{u}").json()["summary"] for u in ("bob", "carol", "alice"))
        monkeypatch.setattr(rt, "settings", msgspec.structs.replace(rt.settings, profile_examples="tenant"))
        shared = c.get("/v1/users/bob").json()["summary"]
    assert bob["nearest_prototype"]["highest"] == [] and bob["nearest_prototype"]["lowest"] == [], bob
    assert not any("“" in s for s in bob["sentences"]), bob["sentences"]  # quotes nothing
    for summary, own in ((carol, {"Brew it for three minutes.", "Boil it."}),
                         (alice, {"Call a tenants' union today.", "Ignore it and hope the letter goes away."})):
        shown = {e["answer"] for side in ("highest", "lowest") for e in summary["nearest_prototype"][side]}
        assert shown and shown <= own, (shown, own)
        assert any(f"“{summary['nearest_prototype']['highest'][0]['answer']}”" in s for s in summary["sentences"])
    assert "landlord" not in json.dumps(carol) and "landlord" not in json.dumps(bob)
    # opted in (`tenant`): the tenant's stored answers, alice's among them, as before
    assert "landlord" in json.dumps(shared["nearest_prototype"]), shared["nearest_prototype"]
    # the auditor's view is the tenant's whatever the setting
    audited = prototype_descriptions(rt, "privacy53")
    assert secret in {e.prompt for d in audited for e in d.highest + d.lowest}


def test_a_pool_whose_answers_read_the_same_is_refused_saying_why(svc):
    """trial16_53: a calibration pool whose every prompt has answers that differ only in Unicode normalization or
    invisible characters ("Café" in NFC and NFD, "Yes." and "Yes." with a zero-width space) holds no question to ask,
    as documented ("Text in any script"); the 400 told the app to "send a calibration `pool` of prompts with 2-8
    answers each", which it had just done. It now says the answers read as one."""
    with svc.client() as c:
        for answers in (["Caf\u00e9 is good.", "Cafe\u0301 is good."], ["Yes.", "Yes.\u200b", "\u2060Yes."]):
            r = c.post("/v1/users/same-reader/next-comparison", json={"pool": [{"prompt": "Coffee?", "answers": answers}]})
            assert r.status_code == 400 and field_named(r) == "pool", r.text
            message = r.json()["error"]["message"]
            assert "read the same" in message and "2-8 answers" not in message, message

def test_texts_scored_again_are_not_encoded_again_but_another_tenants_and_after_a_delete_are(svc, monkeypatch):
    """Session small53: `POST /v1/rewards/score` embedded its prompt and every response again on each call (an app
    scoring its candidates for several users, or again after a refit, paid the encoder each time). They now come from
    the tenant's text vectors in memory, as a next-comparison pool's do: the second call embeds nothing and scores
    alike; another tenant embeds the same texts itself, and a DELETE of one of acme's users drops acme's vectors."""
    counting = CountingEncoder(svc.runtime.encoder)
    monkeypatch.setattr(svc.runtime, "encoder", counting)
    body = {"prompt": "Score question on baking bread?",
            "responses": ["Knead it ten minutes.", "Knead the dough ten minutes, rest it an hour, then bake it hot, with steam."]}
    texts = {body["prompt"], *body["responses"]}
    with svc.client() as c:
        first = c.post("/v1/rewards/score", json={**body, "user": "scored-a"})
        assert first.status_code == 200, first.text
        assert set(counting.texts) == texts
        counting.texts.clear()
        second = c.post("/v1/rewards/score", json={**body, "user": "scored-a"})
        assert second.status_code == 200, second.text
        assert counting.texts == []  # every text came from memory
        assert second.json() == first.json()
    with svc.client("globex") as c:  # the same texts from another tenant: embedded for it
        assert c.post("/v1/rewards/score", json={**body, "user": "scored-a"}).status_code == 200
        assert set(counting.texts) == texts
    counting.texts.clear()
    with svc.client() as c:
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "score-leaver", "prompt": body["prompt"],
                                            "chosen": body["responses"][0], "rejected": body["responses"][1]}).status_code == 201
        assert c.delete("/v1/users/score-leaver").status_code == 200
        counting.texts.clear()
        assert c.post("/v1/rewards/score", json={**body, "user": "scored-a"}).status_code == 200
        assert set(counting.texts) == texts  # embedded again: nothing of acme's texts outlived the DELETE


def test_a_second_pick_of_a_compare_pair_is_stored_and_learned_beside_the_first(svc):
    """The review of trial16_53 (the lead's question): a user shown `compare`'s pair who picks A, then B, then A
    again has each pick stored and learned from, the docs said "A is their last word". What the service does, and now
    what the docs say: every pick is one more comparison (the pair read as two to one for A), none withdraws an earlier
    one, `summary.comparisons` counts the three; the newest answers count for more only in whether to ask again."""
    with svc.client() as c:
        out = chat(c, "twice-picked", n=2)
        compare = out["pluralign"]["compare"]
        texts = [ch["message"]["content"] for ch in out["choices"]]
        if compare is None or texts[compare[0]] == texts[compare[1]]:
            pytest.skip("the tiny model wrote the same text twice")
        a, b = compare
        for pick in (a, b, a):
            r = c.post("/v1/feedback", json={"type": "choice", "response_id": out["id"], "chosen_index": pick, "shown": compare})
            assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers, r.text
        rows = c.get("/v1/users/twice-picked/preferences").json()["data"]
        profile = c.get("/v1/users/twice-picked").json()
    assert sorted((x["chosen"], x["rejected"]) for x in rows) == sorted(
        [(texts[a], texts[b]), (texts[b], texts[a]), (texts[a], texts[b])])
    assert profile["summary"]["comparisons"] == 3 and profile["summary"]["sentences"][-1] == "based on 3 comparisons", profile["summary"]


def test_a_tenants_scoring_pushes_no_other_tenants_pool_vectors_out(svc, monkeypatch):
    """Review reviewsmall53: small53 kept `POST /v1/rewards/score`'s texts in the pool vectors' one LRU (64 MiB for
    every tenant), so a tenant scoring fresh candidates (each call new texts: ~100 KB of MiniLM vectors for 64
    responses, the whole budget in ~600 calls) pushed out every other tenant's questionnaire pool, which was then embedded
    again at each question, as before session pool52. Scores keep their vectors apart (`Runtime.score_vectors`). The
    pool vectors are made small here (room for 16 texts), as 64 MiB of scores would be slow to send."""
    from pluralign.embed.cache import VECTOR_ENTRY_BYTES, ScopedVectors

    counting = CountingEncoder(svc.runtime.encoder)
    monkeypatch.setattr(svc.runtime, "encoder", counting)
    monkeypatch.setattr(svc.runtime, "pool_vectors", ScopedVectors(16 * (4 * counting.dim + VECTOR_ENTRY_BYTES)))
    pool = [{"prompt": f"Kept pool question {i} on tea?", "answers": [f"Steep it {i} minutes.", f"Green tea {i} minutes, cooler water."]}
            for i in range(2)]
    with svc.client("globex") as c:
        assert c.post("/v1/users/pool-keeper/next-comparison", json={"pool": pool}).status_code == 200
    assert len(counting.texts) == 6
    with svc.client() as c:  # acme scores 17 texts it never sent before
        r = c.post("/v1/rewards/score", json={"user": "scorer", "prompt": "Fresh candidates?",
                                              "responses": [f"Fresh candidate {i}." for i in range(16)]})
        assert r.status_code == 200, r.text
    counting.texts.clear()
    with svc.client("globex") as c:
        assert c.post("/v1/users/pool-keeper/next-comparison", json={"pool": pool}).status_code == 200
    assert counting.texts == []  # globex's pool still came from memory


def test_one_tenants_flood_of_fresh_scores_keeps_another_tenants_recent_score_vectors(svc, monkeypatch):
    """Session http54: `Runtime.score_vectors` was one LRU for every tenant, so a tenant scoring fresh candidates call after
    call pushed out every other tenant's score vectors: globex's candidates, scored a moment before, were embedded
    again. Past the bound the tenant holding the most gives up its least recently used (`ScopedVectors`): acme's flood
    evicts acme's own. The score vectors are made small here (room for 24 texts)."""
    from pluralign.embed.cache import SCOPE_BYTES, VECTOR_ENTRY_BYTES, ScopedVectors

    counting = CountingEncoder(svc.runtime.encoder)
    monkeypatch.setattr(svc.runtime, "encoder", counting)
    monkeypatch.setattr(svc.runtime, "score_vectors", ScopedVectors(24 * (4 * counting.dim + VECTOR_ENTRY_BYTES) + 2 * SCOPE_BYTES))
    kept = {"user": "keeper", "prompt": "Which tea?", "responses": ["Green tea, cooler water.", "Black tea, boiling water."]}
    with svc.client("globex") as c:
        assert c.post("/v1/rewards/score", json=kept).status_code == 200
    with svc.client() as c:  # acme scores 5 x 9 texts it never sent before: nearly twice the room
        for call in range(5):
            r = c.post("/v1/rewards/score", json={"user": "flooder", "prompt": f"Fresh question {call}?",
                                                  "responses": [f"Fresh candidate {call}.{i}" for i in range(8)]})
            assert r.status_code == 200, r.text
    assert len(counting.texts) == 3 + 45
    counting.texts.clear()
    with svc.client("globex") as c:
        assert c.post("/v1/rewards/score", json=kept).status_code == 200
    assert counting.texts == []  # globex's three texts still came from memory (before: embedded again)
    assert svc.runtime.score_vectors.scope_bytes("acme") <= 21 * (4 * counting.dim + VECTOR_ENTRY_BYTES)
