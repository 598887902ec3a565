"""Session 59 (hints59), against the real app over HTTP: a 404's route hint, msgspec's wording, the jobs example.

- A path a route's fixed segments are mistyped in is told the route meant by `pluralign.data.text.closest_name`, the
  one rule of every "did you mean". Before, difflib at ratio 0.75 chose it: a word begun (`/v1/feed`, `.../next`) and
  a path with two segments off (`/V1/Models`) had no hint, and far paths had one (`/v1/forwards/score` was told
  `/v1/rewards/score`, `.../preference_kinds` `.../preferences`).
- A body's field of the wrong type or out of bounds is said in our words (`must be an integer or null, not text`):
  before, msgspec's (`Expected `int | null`, got `str``, `Expected `int` >= 1`, `Number out of range`).
- The Swagger page's first example of `POST /admin/jobs` is taken by a fresh service: before, it was alice's adapter,
  a 400 until she has stored comparisons."""

from __future__ import annotations

import httpx
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import start_service

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    # no job runs (job_workers 0): a queued job is what the examples ask for
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    admin_handlers=ADMIN_HANDLERS, job_workers=0)
    service.keys["default"] = service.runtime.keys.issue("default")
    with server:
        yield service


def _error(r: httpx.Response) -> dict:
    return r.json()["error"]


@pytest.mark.parametrize("method,path,meant", [
    ("POST", "/v1/chat/completion", "POST /v1/chat/completions"),
    ("GET", "/v1/user/alice", "GET /v1/users/alice"),
    ("POST", "/v1/feedbacks", "POST /v1/feedback"),
    ("POST", "/v1/feed", "POST /v1/feedback"),  # a word begun
    ("POST", "/v1/users/alice/next", "POST /v1/users/alice/next-comparison"),
    ("GET", "/v1/users/alice/stated", "GET /v1/users/alice/stated-preferences"),
    ("GET", "/V1/Models", "GET /v1/models"),  # two segments in another case
    ("GET", "/v1/user/alice/preference", "GET /v1/users/alice/preferences"),  # two segments a letter off
])
def test_a_mistyped_route_is_told_the_route_meant(svc, method, path, meant):
    r = httpx.request(method, svc.url + path, headers={"Authorization": f"Bearer {svc.keys['acme']}"})
    assert r.status_code == 404, r.text
    assert _error(r)["message"].startswith(f"no route `{method} {path}`: did you mean `{meant}`?"), r.text


@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/forwards/score"),  # no slip of `rewards`
    ("GET", "/v1/users/alice/preference_kinds"),  # no slip of `preferences`
    ("POST", "/v1/chat/complete"),
    ("GET", "/v1/feedbacks"),  # /v1/feedback takes no GET
    ("GET", "/v1/nope"),
])
def test_a_path_far_from_every_route_gets_no_hint(svc, method, path):
    r = httpx.request(method, svc.url + path, headers={"Authorization": f"Bearer {svc.keys['acme']}"})
    assert r.status_code == 404, r.text
    assert _error(r)["message"] == f"no route `{method} {path}`: docs/api.md lists the routes", r.text


@pytest.mark.parametrize("path,who,body,param,said", [
    ("/v1/chat/completions", "acme", {"model": "pluralign", "user": "ann", "messages": HI, "max_tokens": "64"}, "max_tokens",
     "`max_tokens`: must be an integer or null, not text (send the number without quotes: 3, not \"3\")"),
    ("/v1/chat/completions", "acme", {"model": "pluralign", "user": "ann", "messages": HI, "stream": "true"}, "stream",
     "`stream`: must be true, false or null, not text (send true or false without quotes)"),
    ("/v1/chat/completions", "acme", {"model": "pluralign", "user": "ann", "messages": HI, "temperature": 1e400}, "temperature",
     "`temperature`: a number out of range: no 64-bit integer or float holds it"),
    ("/v1/feedback", "acme", {"type": "comparison", "user": 3, "prompt": "p", "chosen": "a", "rejected": "b"}, "user",
     "`user`: must be text, not an integer (send it as a JSON string, in quotes: \"3\", not 3)"),
    ("/admin/jobs", "admin", {"kind": "pal", "params": {"epochs": 0}}, "params.epochs", "`params.epochs`: must be at least 1"),
    ("/admin/jobs", "admin", {"kind": "pal", "params": {"epochs": "3"}}, "params.epochs", "`params.epochs`: must be an integer, not text"),
    # review hints59: 1.5 is a number too (before: "not a number"); a refused value is cut, the choices named (before: all of it, none)
    ("/v1/chat/completions", "acme", {"model": "pluralign", "user": "ann", "messages": HI, "max_tokens": 1.5}, "max_tokens",
     "`max_tokens`: must be an integer or null, not a number with a fraction or exponent"),
    ("/admin/jobs", "admin", {"kind": "pal", "params": {"epochs": 1.0}}, "params.epochs",
     "`params.epochs`: must be an integer, not a number with a fraction or exponent"),
    ("/admin/jobs", "admin", {"kind": "audit", "params": {"group_by": "lang", "personalized": "z" * 5000}}, "params.personalized",
     "`params.personalized`: must be one of `logistic`, `pal`; got '" + "z" * 63 + "...'"),
])
def test_a_field_s_problem_is_said_in_our_words(svc, path, who, body, param, said):
    import json

    r = httpx.post(svc.url + path, headers={"Authorization": f"Bearer {svc.keys[who]}", "Content-Type": "application/json"},
                   content=json.dumps(body).replace("Infinity", "1e400"), timeout=60)
    assert r.status_code == 400, r.text
    error = _error(r)
    assert error["param"] == param and error["message"].startswith(said), r.text
    assert "Expected" not in error["message"] and "`$" not in error["message"], r.text


def test_the_jobs_examples_on_the_docs_page_are_taken_by_a_fresh_service(svc):
    """The first example is the one Swagger UI's "Try it out" shows; the adapter one is taken once alice has a stored
    comparison, as its summary says (before that: the 400 naming `params.user` it names)."""
    examples = httpx.get(svc.url + "/schema/openapi.json").json()["paths"]["/admin/jobs"]["post"]["requestBody"]["content"]
    [(_, spec)] = examples.items()
    (first, shown), *others = spec["examples"].items()
    with svc.client("admin") as admin:
        r = admin.post("/admin/jobs", json=shown["value"])
        assert r.status_code == 201, (first, r.text)
        assert r.json()["state"] == "queued", r.text
        [(name, adapter)] = others
        assert adapter["value"]["kind"] == "adapter" and "stored comparisons" in adapter["summary"], adapter
        r = admin.post("/admin/jobs", json=adapter["value"])
        assert r.status_code == 400 and _error(r)["param"] == "params.user", r.text
        user, tenant = adapter["value"]["params"]["user"], adapter["value"]["params"]["tenant"]
        with svc.client(tenant) as client:
            stored = client.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": "Tea or coffee?",
                                                        "chosen": "Tea.", "rejected": "Coffee."})
            assert stored.status_code == 201, stored.text
        r = admin.post("/admin/jobs", json=adapter["value"])
        assert r.status_code == 201, (name, r.text)


def test_a_job_snapshot_leaves_out_a_stored_pair_of_look_alike_answers(svc):
    """review breakF63 (here to share this module's service, whose jobs stay queued). Since breakF63 a preference file's
    reader refuses a row whose two answers only look alike (`a b` and `a` + U+00A0 + `b`, `fine` and `ﬁne`: `look_key`),
    as feedback does; imports before it stored such rows. An adapter job trains on the user's snapshot (`pluralign train
    adapter --data SNAPSHOT`) and a PAL or EM job on the population snapshot (`--protocol file --data SNAPSHOT`), each
    read by `read_preference_file`: both held the stored row, the reader refused its line ("line 2, field `rejected`: is
    the same answer as `chosen`"), and every adapter job of that user and every population job of the service failed.
    The snapshots leave such a row out (and a blank one an older version stored), as the preferences export does; the
    user's other comparisons are kept. A user holding only such pairs has nothing to train an adapter on: a 400 naming
    `params.user`, as for a user with none (before, a job queued to fail)."""
    from pluralign.store.tables import StoredPreference
    from tests.service.test_blank_answers import stored_as_an_older_version_stored
    from training.common import read_preference_file

    pairs = [("oldpairs", "Tea?", "Green tea.", "Black coffee."), ("oldpairs", "Say?", "a b", "a\u00a0b"),
             ("oldpairs", "Fine?", "fine", "\ufb01ne"), ("oldpairs", "Blank?", "Yes.", "Yes.\u3164"), ("oldpairs", "Milk?", "Yes.", "No."),
             ("onlylook", "Say?", "a  b", "a b")]
    stored_as_an_older_version_stored(svc.runtime, [
        StoredPreference(tenant="acme", user_id=u, pref_id=f"o{i}", prompt=p, chosen=a, rejected=b, kind="comparison",
                         created_at=1_700_000_000.0 + i) for i, (u, p, a, b) in enumerate(pairs)])
    admin = svc.server.server.config.app.state.admin
    snapshot, strict = admin.snapshot("acme", "oldpairs")
    kept = read_preference_file("--data", str(snapshot))
    assert [(r.chosen, r.rejected) for r in kept] == [("Green tea.", "Black coffee."), ("Yes.", "No.")] and strict == 2
    population = read_preference_file("--data", str(admin.population_snapshot()))
    assert sorted(r.chosen for r in population if r.user_id.startswith("acme/o")) == ["Green tea.", "Yes."]
    with svc.client("admin") as c:
        r = c.post("/admin/jobs", json={"kind": "adapter", "params": {"user": "onlylook", "tenant": "acme"}})
    assert r.status_code == 400 and _error(r)["param"] == "params.user", r.text
