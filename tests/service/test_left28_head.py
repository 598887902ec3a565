"""Session 28: HEAD answers the GET's status and headers without the GET's work. It was served as
the whole GET with the body dropped: HEAD on a user's export read and encoded every row, and HEAD on
the fairness audit started an audit job."""

from __future__ import annotations

import pytest

from service.users import services
from tests.service.tiny import serving_a_comparison

COMPARISON = {"type": "comparison", "user": "head28", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    with serving_a_comparison(tmp_path_factory.mktemp("head28-data"), tiny_generator_dir, tiny_pal_dir, minilm, COMPARISON) as service:
        yield service


@pytest.fixture
def exports(monkeypatch):
    """Counts the export's line builders run (the GET's work: every row read and encoded)."""
    calls = []
    for name in ("export_lines", "export_preference_lines"):
        built = getattr(services, name)
        monkeypatch.setattr(services, name, lambda *a, _built=built, **k: (calls.append(a[1:]), _built(*a, **k))[1])
    return calls


@pytest.mark.parametrize("query, name", [("", "head28.jsonl"), ("?format=preferences", "head28-preferences.jsonl")])
def test_head_of_an_export_answers_its_headers_without_building_it(svc, exports, query, name):
    with svc.client() as c:
        head = c.head("/v1/users/head28/export" + query)
        assert exports == [], "HEAD built the export"
        got = c.get("/v1/users/head28/export" + query)
        assert c.head("/v1/users/nobody28/export" + query).status_code == 404  # as GET: nothing held about them
        feedback_only = {**COMPARISON, "user": "fresh28"}  # acknowledged a moment ago: known, as GET says
        assert c.post("/v1/feedback", json=feedback_only).status_code == 201
        fresh = c.head("/v1/users/fresh28/export" + query)
    assert got.status_code == 200 and len(exports) == 1
    assert head.status_code == 200 and head.content == b"", (head.status_code, head.text[:200])
    for header in ("content-type", "content-disposition", "content-length"):
        assert head.headers.get(header) == got.headers.get(header), (header, dict(head.headers), dict(got.headers))
    assert head.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert fresh.status_code == 200, fresh.status_code


def test_head_of_the_fairness_audit_is_a_405_and_starts_no_job(svc):
    """Its GET runs an audit job: a HEAD (a link checker, `curl -I`) must not, and cannot know the
    answer's status without it."""
    with svc.client("admin") as c:
        head = c.head("/admin/audits/fairness?group_by=country")
        bare = c.head("/admin/audits/fairness")  # its required parameter missing: still the method's 405, not a 400
        options = c.options("/admin/audits/fairness")
        posted = c.post("/admin/audits/fairness", json={})
        jobs = c.get("/admin/jobs").json()["jobs"]
    assert head.status_code == 405 and head.headers["allow"] == "GET, OPTIONS", (head.status_code, dict(head.headers))
    assert bare.status_code == 405, bare.status_code
    assert jobs == [], jobs
    assert options.headers["allow"] == "GET, OPTIONS", dict(options.headers)
    assert posted.status_code == 405 and posted.headers["allow"] == "GET, OPTIONS", dict(posted.headers)
    assert "takes GET, OPTIONS" in posted.json()["error"]["message"], posted.json()
