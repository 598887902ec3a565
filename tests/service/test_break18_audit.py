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
            for user, attributes in (("ann", {"segment": "east"}), ("bob", {})):
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


def test_group_by_an_attribute_some_comparisons_lack_reports_them_as_of_no_value(svc):
    with svc.client("admin") as admin:
        r = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "acme", "min_comparisons": 1, "wait": 120},
                      timeout=240)
    assert r.status_code == 200, r.text
    assert {g["group"]: g["users"] for g in r.json()["groups"]} == {"east": 1, " (no value)": 1}
