"""Issue 16's new surface driven by a hostile or careless client over HTTP: stated preferences,
next-comparison, `choice` with `shown`, the summary for users with 0/1 comparisons, export after
PATCH, the dashboard's prototype section and a yes-or-no chat question."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import field_named, start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    admin_handlers=ADMIN_HANDLERS)
    with server:
        yield service


def named(r) -> str:
    return (field_named(r) or "") + " " + r.text


@pytest.mark.parametrize(("body", "field"), [
    ({"preferences": {"bogus": "more"}}, "preferences.bogus"),
    ({"preferences": {"prototype_0": "less"}}, "preferences.prototype_0"),
    ({"preferences": {"length": "LESS"}}, "preferences"),
    ({"preferences": {"length": 1}}, "preferences"),
    ({"preferences": {}}, "preferences"),
    ({"preferences": ["length"]}, "preferences"),
    ({"preferences": None}, "preferences"),
    ({}, "preferences"),
    ({"preferences": {"length": "less"}, "extra": 1}, "extra"),
])
def test_bad_stated_patch_is_a_400_naming_the_field(svc, body, field):
    with svc.client() as c:
        r = c.patch("/v1/users/hostile/stated-preferences", json=body)
        assert r.status_code == 400, r.text
        assert field in named(r)
        assert c.get("/v1/users/hostile").status_code == 404  # nothing stored by a refused PATCH


def test_stated_patch_bad_json_and_huge_body(svc):
    with svc.client() as c:
        r = c.patch("/v1/users/hostile2/stated-preferences", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        huge = {"preferences": {"length": "less", **{f"x{i}" * 50: "more" for i in range(20_000)}}}
        r = c.patch("/v1/users/hostile2/stated-preferences", json=huge)
        assert r.status_code in (400, 413), r.text
        r = c.patch("/v1/users/" + "u" * 5000 + "/stated-preferences", json={"preferences": {"length": "less"}})
        assert 400 <= r.status_code < 500, r.text


def test_stated_is_per_tenant_exported_and_gone_after_delete(svc):
    with svc.client() as c, svc.client("globex") as other:
        r = c.patch("/v1/users/carol/stated-preferences", json={"preferences": {"length": "less", "list_items": "more"}})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 1
        r = c.patch("/v1/users/carol/stated-preferences", json={"preferences": {"list_items": None}})
        assert r.json()["version"] == 2 and r.json()["preferences"] == {"length": "less"}
        # another tenant sees nothing of carol
        assert other.get("/v1/users/carol").status_code == 404
        assert other.get("/v1/users/carol/stated-preferences").json()["version"] == 0
        assert other.get("/v1/users/carol/export").status_code == 404
        # the profile with 0 comparisons: a summary that names the stated feature
        prof = c.get("/v1/users/carol").json()
        assert prof["summary"]["comparisons"] == 0
        length = [f for f in prof["summary"]["features"] if f["feature"] == "length"][0]
        assert length["stated"] == "less" and length["direction"] == "less"
        lines = [json.loads(x) for x in c.get("/v1/users/carol/export").text.splitlines()]
        user_line = [x for x in lines if x["type"] == "user"][0]
        assert user_line["stated"]["version"] == 2 and user_line["stated"]["preferences"] == {"length": "less"}
        assert len(user_line["stated"]["history"]) == 3
        assert c.delete("/v1/users/carol").status_code == 200
        assert c.get("/v1/users/carol").status_code == 404
        assert c.get("/v1/users/carol/stated-preferences").json()["version"] == 0
        assert c.get("/v1/users/carol/export").status_code == 404


def test_concurrent_patch_and_delete_leave_a_consistent_user(svc):
    with svc.client() as c:
        for rnd in range(2):
            user = f"race{rnd}"
            c.patch(f"/v1/users/{user}/stated-preferences", json={"preferences": {"length": "less"}})
            with ThreadPoolExecutor(4) as pool:
                futs = [pool.submit(c.patch, f"/v1/users/{user}/stated-preferences", json={"preferences": {"exclamations": "more"}}),
                        pool.submit(c.delete, f"/v1/users/{user}"),
                        pool.submit(c.patch, f"/v1/users/{user}/stated-preferences", json={"preferences": {"length": None}})]
                codes = [f.result().status_code for f in futs]
            assert all(code < 500 for code in codes), codes
            st = c.get(f"/v1/users/{user}/stated-preferences").json()
            prof = c.get(f"/v1/users/{user}")
            # the record either exists with its versions in order, or is gone
            assert (prof.status_code == 404) == (st["version"] == 0), (prof.status_code, st)
            assert [h["version"] for h in st["history"]] == sorted(h["version"] for h in st["history"])


def test_summary_with_one_comparison(svc):
    with svc.client() as c:
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "once", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No, never, not at all."})
        assert r.status_code == 201, r.text
        prof = c.get("/v1/users/once")
        assert prof.status_code == 200, prof.text
        assert prof.json()["summary"]["comparisons"] == 1
        assert "based on 1 comparison" in prof.json()["summary"]["sentences"]


@pytest.mark.parametrize(("pool", "field"), [
    ([], "pool"),
    ("x", "pool"),
    ([{"prompt": "p", "answers": ["a"]}], "pool"),
    ([{"prompt": "p", "answers": ["a", "a"]}], "pool"),
    ([{"prompt": "p", "answers": ["a", " a "]}], "pool"),
    ([{"prompt": "p", "answers": [1, 2]}], "pool"),
    ([{"prompt": "p", "answers": ["a", "b"]}] * 65, "pool"),
    ([{"prompt": "p", "answers": [f"a{i}" for i in range(9)]}], "pool"),
    ([{"prompt": "p", "answers": ["   ", "A real answer."]}], "pool[0].answers[0]"),
    ([{"prompt": "p", "answers": ["A real answer.", "\u200b\u2060"]}], "pool[0].answers[1]"),  # no visible character
    ([{"prompt": "p", "answers": ["a", "\ufeffa\u200d"]}], "pool"),  # visibly the same answer
    ([{"prompt": "\u200b", "answers": ["One.", "Two."]}], "pool[0].prompt"),
    ([{"prompt": "  ", "answers": ["One.", "Two."]}], "pool[0].prompt"),
    ([{"prompt": "p", "answers": ["a", "b"], "extra": 1}], "extra"),
])
def test_bad_next_comparison_pool_is_a_400(svc, pool, field):
    with svc.client() as c:
        r = c.post("/v1/users/newcomer/next-comparison", json={"pool": pool})
        assert r.status_code == 400, r.text
        assert field in named(r)


def test_next_comparison_edges(svc):
    with svc.client() as c, svc.client("globex") as other:
        r = c.post("/v1/users/newcomer/next-comparison", json={"pool": [{"prompt": "Hi?", "answers": ["Same.", "Same.", "Other!"]}]})
        assert r.status_code == 200, r.text
        assert len(set(r.json()["answers"])) == 2
        # short answers: their number is bounded, not their length (speed60a: 550 characters each cost ~3 CPU-s of encoding)
        big = [{"prompt": f"Question {i}?", "answers": [f"Answer {i}.{j}." for j in range(8)]} for i in range(8)]
        r = c.post("/v1/users/newcomer/next-comparison", json={"pool": big})  # 64 answers: the most one request encodes
        assert r.status_code == 200, r.text
        # 64 prompts x 8 answers took about a minute of encoding: a 400 naming the pool, before any work
        r = c.post("/v1/users/newcomer/next-comparison", json={"pool": big * 8})
        assert r.status_code == 400 and "pool" in named(r) and "at most 64" in r.text, r.text
        # stored pool: another tenant's stored answers never come back
        c.post("/v1/feedback", json={"type": "comparison", "user": "secret", "prompt": "Acme secret?", "chosen": "ACME-ONLY-1", "rejected": "ACME-ONLY-2"})
        r = other.post("/v1/users/g1/next-comparison", json={})
        assert r.status_code in (200, 400), r.text
        assert "ACME-ONLY" not in r.text
        r = c.post("/v1/users/newcomer/next-comparison", content=b"[]", headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text


def chat(c, user: str, content: str, n: int = 4) -> dict:
    r = c.post("/v1/chat/completions", json={"model": "pluralign", "user": user, "n": n, "seed": 3, "messages": [
        {"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def yes_no_response(svc) -> dict:
    with svc.client() as c:
        return chat(c, "yesno", "Should I learn to play the piano?")


@pytest.mark.parametrize("body", [
    {"chosen_index": 0, "shown": [0, 1, 1]},
    {"chosen_index": 0, "shown": [-1, 0]},
    {"chosen_index": 0, "shown": "01"},
    {"chosen_index": 0, "shown": [0, 1.5]},
    {"chosen_index": 0, "shown": []},
    {"chosen_index": 0, "shown": [0, 99999999999999999999]},
    {"chosen_index": 3, "shown": [0, 1]},
])
def test_bad_shown_on_a_yes_no_question(svc, yes_no_response, body):
    with svc.client() as c:
        out = yes_no_response
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": out["id"], **body})
        assert r.status_code == 400, r.text
        assert "shown" in named(r) or "chosen_index" in named(r)


def test_yes_no_chat_compare_and_shown(svc):
    with svc.client() as c, svc.client("globex") as other:
        out = chat(c, "yesno2", "Is it a good idea to drink coffee at night?")
        compare = out["pluralign"]["compare"]
        assert compare is None or (len(set(compare)) == 2 and all(0 <= i < len(out["choices"]) for i in compare))
        if compare:
            r = other.post("/v1/feedback", json={"type": "choice", "response_id": out["id"], "chosen_index": compare[0], "shown": compare})
            assert r.status_code == 404, r.text
            r = c.post("/v1/feedback", json={"type": "choice", "response_id": out["id"], "chosen_index": compare[0], "shown": compare})
            assert r.status_code in (201, 400), r.text


def test_dashboard_escapes_stored_answers(svc):
    with svc.client() as c, svc.client("admin") as admin:
        for i in range(3):
            r = c.post("/v1/feedback", json={"type": "comparison", "user": f"xss{i}", "prompt": "<img src=x onerror=alert(1)>",
                                             "chosen": f"<script>alert({i})</script>", "rejected": f"</td></table><b>plain {i}</b>"})
            assert r.status_code == 201, r.text
            c.get(f"/v1/users/xss{i}/preferences")  # moved from the feedback log into the table
        page = admin.get("/admin/dashboard").text
        assert "&lt;script&gt;alert(" in page  # the stored answers are shown, escaped
        assert "<script>alert" not in page and "<img src=x" not in page and "<b>plain" not in page
        page = admin.get("/admin/dashboard", params={"tenant": "acme"}).text
        assert "<script>alert" not in page and "&lt;script&gt;" in page
        page = admin.get("/admin/dashboard", params={"tenant": "<script>"})
        assert page.status_code < 500 and "<script>" not in page.text


FEATURES = ("length", "list_items", "exclamations", "contractions", "word_length", "second_person", "affirmation")


def test_concurrent_patches_of_different_features_all_land(svc):
    with svc.client() as c, ThreadPoolExecutor(7) as pool:
        codes = list(pool.map(lambda f: c.patch("/v1/users/conc/stated-preferences", json={"preferences": {f: "more"}}).status_code, FEATURES))
        assert codes == [200] * 7
        st = c.get("/v1/users/conc/stated-preferences").json()
        assert st["version"] == 7 and st["preferences"] == dict.fromkeys(FEATURES, "more")
        assert sorted(h["version"] for h in st["history"]) == list(range(1, 8))


def test_stated_affirmation_picks_the_stance_of_a_yes_no_answer(svc):
    with svc.client() as c:
        for direction, stance in (("less", "-no"), ("more", "-yes")):
            user = f"sayer-{direction}"
            assert c.patch(f"/v1/users/{user}/stated-preferences", json={"preferences": {"affirmation": direction}}).status_code == 200
            out = chat(c, user, "Should I learn to swim?", n=1)
            assert out["pluralign"]["styles"][0].endswith(stance), out["pluralign"]["styles"]


def test_an_either_or_question_gets_no_yes_and_no_answers(svc):
    """The tester's chat: "Should I learn Python or Rust first?" with n 4 got `...-yes`/`...-no`
    styles and answers opening "No. ..." and "Yes. ...", as if it asked for a judgement."""
    with svc.client() as c:
        out = chat(c, "chooser", "Should I learn Python or Rust first?")
        assert not any(s.endswith(("-yes", "-no")) for s in out["pluralign"]["styles"]), out["pluralign"]["styles"]
        assert not any(ch["message"]["content"].startswith(("Yes.", "No.", "Oh yes", "Nope")) for ch in out["choices"])
        judged = chat(c, "chooser", "Should I learn Python or not?")  # a yes-or-no question still gets both stances
        assert sorted(s.rsplit("-", 1)[1] for s in judged["pluralign"]["styles"]) == ["no", "no", "yes", "yes"]


ENGLISH_OPENINGS = ("Sure thing!", "Certainly.", "Yes.", "No.", "Oh yes", "Nope")


def test_a_question_in_another_script_gets_no_english_opening(svc):
    """Session small53: every styled candidate began with an English opening ("Certainly. ", "Sure thing! Here are a
    few ideas:") whatever the question's language, so a question in Chinese was answered "Certainly. " and the rest in
    whatever the model wrote. A question written mostly in another script than Latin (told by `unicodedata`'s names
    of its letters) is now generated from the style's instruction alone; a Latin-script one keeps its opening (a
    French question still gets the English one: telling French from English needs a language model)."""
    def answers(c, question: str) -> list[str]:  # n 2: two opposite corners, a casual and a formal opening
        r = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "scripts", "n": 2, "seed": 3, "max_tokens": 2,
                                                 "messages": [{"role": "user", "content": question}]})
        assert r.status_code == 200 and len(r.json()["pluralign"]["styles"]) == 2, r.text
        return [ch["message"]["content"] for ch in r.json()["choices"]]

    with svc.client() as c:
        for question in ("我应该怎样学习游泳？", "Как научиться плавать?"):  # more scripts: tests/unit/test_styles.py
            got = answers(c, question)
            assert not any(text.startswith(ENGLISH_OPENINGS) for text in got), (question, got)
        english = answers(c, "How do I learn to swim?")
    assert sorted(text.split()[0] for text in english) == ["Certainly.", "Sure"], english
