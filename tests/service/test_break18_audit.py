"""The admin fairness audit over real HTTP (break session 18): a `group_by` that no stored comparison
nor user has is a 400 naming `group_by` and the attribute names there are, not a report with one
group of no value; an attribute some comparisons lack still audits, the rest in the group " (no value)" ("unknown"
until session 43, a value's name too)."""

from __future__ import annotations

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import field_named, start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("break18-audit"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    admin_handlers=ADMIN_HANDLERS, job_workers=1)
    with server:
        with service.client("acme") as c:
            # two users a group, and cat alone in hers: a group of one user is suppressed (session 49)
            for user, attributes in (("ann", {"segment": "east"}), ("amy", {"segment": "east"}), ("bob", {}), ("ben", {}),
                                     ("cat", {"segment": "west"})):
                for i in range(6):
                    body = {"type": "comparison", "user": user, "prompt": f"Question {i}?", "chosen": f"Kind answer {i}.",
                            "rejected": f"Rude answer {i}.", "attributes": attributes}
                    assert c.post("/v1/feedback", json=body).status_code == 201
        yield service


def test_a_misspelled_group_by_is_a_400_naming_it_and_the_attributes_there_are(svc):
    with svc.client("admin") as admin:
        r = admin.get("/admin/audits/fairness", params={"group_by": "segmnt", "tenant": "acme", "wait": 120}, timeout=240)
    assert r.status_code == 400, r.text
    assert field_named(r) == "group_by"
    message = r.json()["error"]["message"]
    assert "'segmnt'" in message and "segment" in message.split("exist:")[1], message


# slow (make test-cli; speedC63): its audit job's worker, ~3.5 CPU-s of the default suite's. Its checks in the default
# suite: the " (no value)" group, the suppressed group, withheld intervals and overall, tests/unit/test_break18_audit.py
# and tests/unit/test_audit49.py (the store's audit the job runs); the page's words, tests/unit/
# test_speedC63_dashboard_withheld.py; an audit over the real app, tests/service/test_admin.py's `audited`
@pytest.mark.slow
def test_group_by_an_attribute_some_comparisons_lack_reports_them_as_of_no_value(svc):
    """And (session 49) the audit gives no user's own figures away, over the route and on the dashboard: a group of 2
    users had a 95% interval whose ends were its two users' own accuracies, a group of one user (cat's `west`: the
    default `min_group_size` is 1) its user's figures, and the overall less the groups shown would give a suppressed
    group's back. Now no group of 2 has an interval, `west` is suppressed, the overall is withheld, and the page says
    why. Failed before: `west` was in the report and every group had an interval."""
    with svc.client("admin") as admin:
        r = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "acme", "min_comparisons": 1, "wait": 120},
                      timeout=240)
        assert r.status_code == 200, r.text
        page = admin.get("/admin/dashboard", params={"tenant": "acme"}).text
    report = r.json()
    assert {g["group"]: g["users"] for g in report["groups"]} == {"east": 2, " (no value)": 2}
    assert report["suppressed_groups"] == 1 and report["interval_min_users"] == 5
    assert all(g["personalized_accuracy_interval"] is None and g["base_accuracy_interval"] is None for g in report["groups"])
    assert report["overall"] is None and report["gap_interval"] is None and report["base_gap_interval"] is None
    assert "(no interval: fewer than 5 users)" in page, page
    assert "Intervals withheld for groups of fewer than 5 users: their ends would be their users&#x27; own accuracies." in page, page
    assert "Overall figures withheld: the suppressed groups hold fewer than 2 users" in page, page
    assert "<bdi>west</bdi>" not in page

