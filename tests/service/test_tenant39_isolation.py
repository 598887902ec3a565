"""A hostile tenant with its own valid key, over HTTP with the real app: it never reads, infers or
disturbs another tenant's data through any route (session 39's review of "one tenant never stalls or
reads another"). Tenant acme stores texts carrying MARKER; every answer globex gets is searched for it,
and every "not found" globex gets for one of acme's ids is compared with the one for an id no tenant holds."""

from __future__ import annotations

import re

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import start_service

MARKER = "acmesecret7q"
TOPICS = ["tea", "rain", "maps", "bread", "chess", "socks"]


def comparison(user: str, topic: str, marker: str = "") -> dict:
    return {"type": "comparison", "user": user, "prompt": f"Tips on {topic}? {marker}",
            "chosen": f"Short {topic} tip {marker}", "rejected": f"A very long rambling answer about {topic} {marker}, on and on."}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path_factory.mktemp("data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                    pooled_prior_users=2, deletion_sweep_s=3600)
    with server, service.client("acme") as acme:
        for user in ("a1", "a2", "a3"):
            for topic in TOPICS:
                assert acme.post("/v1/feedback", json=comparison(user, topic, MARKER)).status_code == 201
            assert acme.get(f"/v1/users/{user}").status_code == 200  # fitted
        chat = acme.post("/v1/chat/completions", json={"model": "pluralign", "user": "a1", "n": 2,
                                                       "messages": [{"role": "user", "content": f"Tips on tea? {MARKER}"}]})
        assert chat.status_code == 200, chat.text
        service.acme_response = chat.json()["id"]
        assert acme.patch("/v1/users/a1/stated-preferences", json={"preferences": {"length": "less"}}).status_code == 200
        yield service


def clean(text: str) -> str:
    """An answer without what differs from request to request (request ids, times, the user id)."""
    text = re.sub(r"req_[0-9a-f]{32}", "req", text)
    return text


def test_globex_reads_nothing_of_acme_through_chat_profile_onboarding_and_scores(svc):
    with svc.client("globex") as g:
        for topic in TOPICS[:3]:
            assert g.post("/v1/feedback", json=comparison("g2", topic, "globexown")).status_code == 201
        answers = []
        for user in ("g1", "a1"):  # a new user, and the id of one of acme's users
            r = g.post("/v1/chat/completions", json={"model": "pluralign", "user": user, "n": 2, "pluralign": {"shots": 8},
                                                     "messages": [{"role": "user", "content": "Tips on tea?"}]})
            assert r.status_code == 200, r.text
            assert r.json()["pluralign"]["history"] == [], r.json()["pluralign"]
            answers.append(r.text)
            r = g.post(f"/v1/users/{user}/next-comparison", json={})
            assert r.status_code == 200, r.text
            answers.append(r.text)
            r = g.post(f"/v1/users/{user}/next-comparison", json={"target": "population"})
            answers.append(r.text)
            assert r.status_code != 200 or r.json()["population_users"] <= 1, r.text  # only g2 is fitted in globex
            r = g.get(f"/v1/users/{user}/stated-preferences")
            assert r.status_code == 200 and r.json()["version"] == 0, r.text
            answers.append(r.text)
            r = g.post("/v1/rewards/score", json={"user": user, "prompt": "Tips on tea?", "responses": ["Short.", "Long long long."]})
            assert r.status_code == 200 and r.json()["prior"] is True, r.text
            answers.append(r.text)
        for topic in TOPICS[:2]:
            assert g.post("/v1/feedback", json=comparison("g1", topic)).status_code == 201
        profile = g.get("/v1/users/g1")
        assert profile.status_code == 200, profile.text
        answers.append(profile.text)
        assert profile.json()["user_model"]["pooled_users"] <= 1, profile.json()["user_model"]
        answers.append(g.get("/v1/users/g1/export").text)
        answers.append(g.get("/v1/users/g1/preferences").text)
        for text in answers:
            assert MARKER not in text, text


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/v1/users/{}", None),
    ("HEAD", "/v1/users/{}", None),
    ("GET", "/v1/users/{}/preferences", None),
    ("GET", "/v1/users/{}/export", None),
    ("HEAD", "/v1/users/{}/export", None),
    ("GET", "/v1/users/{}/export?format=preferences", None),
    ("DELETE", "/v1/users/{}", None),
])
def test_another_tenants_user_answers_as_no_user_at_all(svc, method, path, body):
    with svc.client("globex") as g:
        theirs = g.request(method, path.format("a2"), json=body)
        nobody = g.request(method, path.format("n2"), json=body)
    assert theirs.status_code == nobody.status_code == 404, (theirs.text, nobody.text)
    assert clean(theirs.text).replace("a2", "ID") == clean(nobody.text).replace("n2", "ID")
    varies = lambda h: {k: v for k, v in h.items() if k not in ("x-request-id", "date", "content-length") and not k.startswith("ratelimit")}  # noqa: E731
    assert varies(theirs.headers) == varies(nobody.headers)


@pytest.mark.parametrize("kind", ["choice", "rating", "edit"])
def test_feedback_on_another_tenants_response_answers_as_an_unknown_response(svc, kind):
    body = {"choice": {"chosen_index": 0}, "rating": {"rating": 1}, "edit": {"edited": "Better tea tip."}}[kind]
    with svc.client("globex") as g:
        theirs = g.post("/v1/feedback", json={"type": kind, "response_id": svc.acme_response, **body})
        nobody = g.post("/v1/feedback", json={"type": kind, "response_id": "chatcmpl-" + "0" * 32, **body})
    assert theirs.status_code == nobody.status_code == 404, (theirs.text, nobody.text)
    assert clean(theirs.text).replace(svc.acme_response, "ID") == clean(nobody.text).replace("chatcmpl-" + "0" * 32, "ID")


def test_import_and_delete_of_the_same_user_id_in_another_tenant_leave_acmes_user_alone(svc):
    with svc.client("globex") as g, svc.client("acme") as a:
        before = a.get("/v1/users/a3/export").text
        line = '{"prompt": "Tips on tea?", "chosen": "Tea short.", "rejected": "Tea long long.", "user_id": "a3"}\n'
        r = g.post("/v1/users/a3/import", content=line.encode(), headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 201, r.text
        assert g.get("/v1/users/a3").json()["counts"]["preferences"] == 1
        assert g.delete("/v1/users/a3").status_code == 200
        after = a.get("/v1/users/a3/export").text
        assert a.get("/v1/users/a3").json()["counts"]["preferences"] == len(TOPICS)
    strip = lambda t: re.sub(r'"(updated_at|created_at|received_at)":[0-9.e+-]+', "", t)  # noqa: E731
    assert strip(after) == strip(before)


@pytest.mark.parametrize("method,path", [
    ("GET", "/admin/jobs"), ("POST", "/admin/jobs"), ("GET", "/admin/jobs/0123456789abcdef0123456789abcdef"),
    ("POST", "/admin/jobs/0123456789abcdef0123456789abcdef/cancel"), ("GET", "/admin/audits/fairness?group_by=x"),
    ("GET", "/admin/dashboard"), ("GET", "/admin/dashboard?tenant=acme"),
])
def test_a_tenant_key_opens_no_admin_route(svc, method, path):
    with svc.client("globex") as g:
        r = g.request(method, path, json={"kind": "audit", "params": {"group_by": "x", "tenant": "acme"}} if method == "POST" else None)
    assert r.status_code == 403, (method, path, r.status_code, r.text)
    assert MARKER not in r.text


def test_a_tenant_key_opens_no_admin_session(svc):
    import httpx

    r = httpx.post(svc.url + "/admin/login", data={"key": svc.keys["globex"]}, follow_redirects=False)
    assert r.status_code == 401 and "pluralign_admin" not in r.headers.get("set-cookie", "")


def test_metrics_name_no_tenant_and_no_user(svc):
    import httpx

    text = httpx.get(svc.url + "/metrics").text
    for word in ("acme", "globex", "a1", "a2", "g1", MARKER):
        assert not re.search(rf'="[^"]*\b{word}\b[^"]*"', text), word


def test_keys_create_says_an_admin_key_reaches_every_tenant(capsys):
    """An admin key made with `--tenant acme --admin` reads globex's dashboard and jobs too: `--admin`'s
    help said only "/admin routes only", so an operator could hand one to a tenant as its own."""
    from tests.unit.clitools import cli

    code, out, _ = cli(capsys, "keys", "create", "--help")
    assert code == 0 and "every tenant" in " ".join(out.split()), out


def test_metrics_can_be_the_operators_alone(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """/metrics counts every tenant's traffic (rows stored, feedback, jobs): with two tenants, its totals less one
    tenant's own are the other's. With `metrics_admin_only` it needs an admin key: a tenant key is a 403 and no key a
    401 naming it, and a scraper with the admin key reads it as before; /health stays open (probes send no key).
    Before (session 44) there was no such setting: any client read the totals."""
    import httpx

    server, service = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, metrics_admin_only=True)
    with server:
        anonymous = httpx.get(service.url + "/metrics")
        tenant = httpx.get(service.url + "/metrics", headers={"Authorization": f"Bearer {service.keys['acme']}"})
        admin = httpx.get(service.url + "/metrics", headers={"Authorization": f"Bearer {service.keys['admin']}"})
        health = httpx.get(service.url + "/health")
    assert anonymous.status_code == 401 and "pluralign_table_rows" not in anonymous.text, anonymous.text
    assert tenant.status_code == 403 and "metrics_admin_only" in tenant.text.lower(), tenant.text
    assert "pluralign_table_rows" not in tenant.text
    assert admin.status_code == 200 and "pluralign_table_rows" in admin.text, admin.text
    assert health.status_code == 200, health.text


def test_the_dashboard_of_a_tenant_that_shows_nowhere_says_so(svc):
    """Session trial53: `/admin/dashboard?tenant=acmee` (a typo of acme) was served as an empty tenant's page, "No
    audit has been run yet", "no jobs", "no stored comparisons yet": an operator read acme as idle. A tenant with no
    key, no removal and nothing held (what `tenants remove` checks before it begins) is now said to show nowhere, with
    the command that names the tenants; a tenant that does show (acme, and globex, a key and nothing stored) is not."""
    notice = "Tenant <b>acmee</b> shows nowhere here: it has no key, no removal and nothing held"
    with svc.client("admin") as admin:
        typo = admin.get("/admin/dashboard", params={"tenant": "acmee"})
        assert typo.status_code == 200, typo.text[:300]
        assert notice in typo.text and "<code>pluralign keys list</code> names the tenants with keys" in typo.text, typo.text[:2000]
        for tenant in ("acme", "globex"):
            page = admin.get("/admin/dashboard", params={"tenant": tenant})
            assert page.status_code == 200 and "shows nowhere here" not in page.text, tenant
        assert "shows nowhere here" not in admin.get("/admin/dashboard").text  # every tenant's page


def test_the_dashboard_of_an_admin_keys_label_does_not_say_it_has_no_key(svc):
    """Review of trial53: an admin key's `--tenant` only labels it (`keys create --tenant ops --admin`), so `?tenant=ops`
    shows nowhere; the page said "it has no key" and pointed at `pluralign keys list`, which lists ops's key."""
    with svc.client("admin") as admin:
        label = next(k.tenant for k in svc.runtime.keys.list() if k.admin)
        page = admin.get("/admin/dashboard", params={"tenant": label}).text
    assert "shows nowhere here" in page and "it has no key" not in page, page[:2000]
    assert f"its only keys are admin keys, whose <code>--tenant {label}</code> only labels them" in page, page[:2000]
