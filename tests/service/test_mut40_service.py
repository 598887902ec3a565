"""Over real HTTP: what survived mutation testing of the service (sessions 39 and 40)."""

from __future__ import annotations

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from service.users.journal import JOURNAL_FOLDER
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_delete_journal import wait_until
from tests.service.test_delete_stopped import Stopped
from tests.service.tiny import fixed_answers, fixed_service, start_service


def test_another_tenants_chat_of_the_same_user_id_does_not_keep_a_stopped_delete_from_finishing(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """acme's DELETE of GONE stops (a kill) before the rows left the store; then globex's user of the same
    id chats. The next start finishes acme's DELETE from the journal: GONE of acme sent nothing since, so
    everything of theirs goes, their stated preferences and users row included. Were globex's chat taken
    for acme's user coming back (the store's interactions read without the tenant), only acme's rows
    from before would go and the users row, with what they stated, would stay."""
    from service.users import services

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        r = acme.patch(f"/v1/users/{GONE}/stated-preferences", json={"preferences": {"length": "less"}})
        assert r.status_code == 200, r.text
        assert acme.get(f"/v1/users/{GONE}").status_code == 200

        def killed(tenant, user):
            raise Stopped

        monkeypatch.setattr(svc.runtime.store, "delete_user", killed)
        with pytest.raises(Stopped):
            services.delete(svc.runtime, "acme", GONE)
        monkeypatch.undo()
        monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
        assert acme.get(f"/v1/users/{GONE}").status_code == 200  # stopped before the rows went
        r = globex.post("/v1/chat/completions", json={"model": "pluralign", "user": GONE, "messages": [
            {"role": "user", "content": "Hello?"}], "pluralign": {"candidates": 1, "shots": 0, "styles": False}})
        assert r.status_code == 200, r.text

    again, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with again, svc.client("acme") as acme:
        assert wait_until(lambda: not any((data / JOURNAL_FOLDER).iterdir())), list((data / JOURNAL_FOLDER).iterdir())
        assert acme.get(f"/v1/users/{GONE}").status_code == 404
        assert acme.get(f"/v1/users/{GONE}/stated-preferences").json()["preferences"] == {}
        assert acme.get(f"/v1/users/{GONE}/preferences").status_code == 404
        assert svc.runtime.store.count_interactions("globex", GONE) == 1  # globex's user keeps their chat


def test_a_429_answered_as_its_window_ends_still_says_retry_after_at_least_1(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """Litestar reads the clock when the request is counted and again when the 429's headers are made: a
    window that ends between the two makes its RateLimit-Reset 0. A client honouring Retry-After must
    still be told to wait (at least 1 s), never 0 (sent again at once: another 429, a busy loop). The
    rate limiter's clock is made to advance 0.13 s at each reading, so such 429s come in a few requests."""
    import litestar.middleware.rate_limit as rate_limit

    readings = iter(1_000_000.0 + 0.13 * i for i in range(10_000))
    monkeypatch.setattr(rate_limit, "time", lambda: next(readings))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, tenant_requests_per_second=2)
    with server, svc.client() as c:
        answers = [c.get("/v1/users/nobody/preferences") for _ in range(30)]
    refused = [(a.headers["RateLimit-Reset"], a.headers["Retry-After"]) for a in answers if a.status_code == 429]
    assert ("0", "1") in refused, refused  # the window ended while the 429 was made
    assert all(int(after) >= 1 for _, after in refused), refused


CHOICES = ["Rest.", "Sleep at regular hours and keep the room dark.",
           "Consider the following, at some length: sleep at regular hours, keep the room dark and cool, avoid screens "
           "late at night, and take a short walk every afternoon so that you are tired by evening.",
           "- sleep at regular hours\n- keep the room dark\n- avoid screens late\n- walk every afternoon"]


def test_compare_and_the_next_comparison_read_what_a_new_user_stated(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """A new user's `pluralign.compare` (the pair of returned choices worth asking about, and its bits) is
    drawn from their prior with what they stated (PATCH stated-preferences): for a user who stated
    `length` less and `list_items` less, it is what POST .../next-comparison finds over a pool of the same
    choices for them, and not what it is for a user who stated nothing (their stated directions move the
    prior's mean and narrow it: a pair set apart by length alone tells less)."""
    prompt = "How do I sleep better?"
    with fixed_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, fixed_answers(CHOICES)) as svc, svc.client() as c:
        r = c.patch("/v1/users/terse/stated-preferences", json={"preferences": {"length": "less", "list_items": "less"}})
        assert r.status_code == 200, r.text
        seen = {}
        for user in ("plain", "terse"):
            r = c.post("/v1/chat/completions", json={"model": "pluralign", "user": user, "n": 4, "pluralign": {"candidates": 4, "styles": False},
                                                     "messages": [{"role": "user", "content": prompt}]})
            assert r.status_code == 200, r.text
            out = r.json()
            texts = [ch["message"]["content"] for ch in out["choices"]]
            assert sorted(texts) == sorted(CHOICES), texts
            asked = c.post(f"/v1/users/{user}/next-comparison", json={"pool": [{"prompt": prompt, "answers": texts}]})
            assert asked.status_code == 200, asked.text
            best = asked.json()
            compare = out["pluralign"]["compare"]
            assert compare is not None, out["pluralign"]
            assert {texts[compare[0]], texts[compare[1]]} == set(best["answers"]), (user, compare, best)
            assert out["pluralign"]["compare_bits"] == pytest.approx(best["bits"], abs=2e-3), (user, out["pluralign"], best)
            seen[user] = (frozenset(best["answers"]), best["bits"])
    assert seen["terse"] != seen["plain"] and abs(seen["terse"][1] - seen["plain"][1]) > 0.01, seen
