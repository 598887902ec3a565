"""The audit report's schema (ver session 40): privacy40 added `withheld_groups` to the report and left it at
schema 1. Reports are decoded strictly, so a release reading a report a later one wrote said "unknown field",
as if the file were damaged, and a report of schema 1 rewritten by a DELETE (now holding `withheld_groups`)
still said schema 1. Now the report is schema 2; a later schema is refused by its number, before its fields,
and an earlier one reads (and is written back) as this one."""

from __future__ import annotations

import logging

import msgspec

from service.admin.controllers import ADMIN_HANDLERS, _audit_response, _since_previous
from tests.service.test_break20_delete import GONE
from tests.service.test_break20_delete_b import logged
from tests.service.test_scale37_delete_audits import groups_of, stored_audits
from tests.service.test_upgrade29 import upgraded  # noqa: F401

SCHEMA_LATER = "audit report schema 5, written by a later release of pluralign (this one reads schemas 1-4)"


def test_a_delete_names_the_schema_of_an_audit_report_a_later_release_wrote(serve):
    """Before: the DELETE's log said the report held an unknown field (`from_a_later_release`), as for a damaged file.
    And every reader of the stored reports names it (audit41): before, the dashboard left it out without a word, the
    audit route's answer for its job was a bare 500, and the change since the previous audit by `segment` passed over
    it without a word."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    jobs = data / "jobs"
    first = stored_audits(jobs, n=2)  # GONE alone in one group of it; the second, made a second later, readable
    path = jobs / f"{first}.result.json"
    later = msgspec.json.decode(path.read_bytes())
    path.write_bytes(msgspec.json.encode({**later, "schema_version": 5, "from_a_later_release": 1}))
    with server, svc.client("acme") as acme, svc.client("admin") as admin_http:
        with logged("pluralign.service") as records:
            r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 500, r.text  # the report may still hold them: the DELETE is tried again, as for any such file
        assert r.json()["error"]["code"] == "population_not_rewritten", r.text
        said = " ".join(records)
        assert SCHEMA_LATER in said, said
        assert "unknown field" not in said, said

        page = admin_http.get("/admin/dashboard")
        assert page.status_code == 200, page.text
        assert "1 stored audit report cannot be read by this release" in page.text, page.text
        assert f"audit job {first}: its report cannot be read: {SCHEMA_LATER}" in page.text, page.text
        admin = server.server.config.app.state.admin
        answer = _audit_response(admin, admin.runner.get(first))  # the route's answer for that job's report
        assert answer.status_code == 500
        assert answer.content["error"]["code"] == "audit_report_unreadable", answer.content
        assert SCHEMA_LATER in answer.content["error"]["message"], answer.content
        second = next(j for j in admin.runner.list(kind="audit") if j.id != first)
        newer = msgspec.structs.replace(admin.report(second), created_at=second.created_at + 3600)
        assert _since_previous(newer, admin.reports()).previous_created_at is not None  # the readable second: the latest earlier
        with logged("pluralign.service", logging.WARNING) as warnings:
            shown = _since_previous(admin.report(second), admin.reports())
        assert shown.previous_created_at is None and shown.gap_change is None  # the unreadable one comes between
        assert any(SCHEMA_LATER in w for w in warnings), warnings
        # a damaged one: listed too, but what its decode said (it may quote the file) only in the log
        (jobs / f"{second.id}.result.json").write_bytes(b'{"schema_version": 2, "group_by": "secret-value-7f3"')
        with logged("pluralign.service") as records:
            page = admin_http.get("/admin/dashboard")
        assert "2 stored audit reports cannot be read by this release" in page.text, page.text
        assert f"audit job {second.id}: its report cannot be read: its file is missing or damaged" in page.text, page.text
        assert "secret-value-7f3" not in page.text and "truncated" not in page.text.lower()
        assert any(second.id in r and "DecodeError" in r for r in records), records
        # one whose 95% intervals (trial48b) are no [low, high] pairs: before review session trial48b it decoded (a list
        # of any length) and the dashboard's render of it took `bounds[1]`: a 500 for the whole page
        report = {**later, "schema_version": 3, "gap_interval": []}
        report["groups"][0]["personalized_accuracy_interval"] = [0.5]
        (jobs / f"{second.id}.result.json").write_bytes(msgspec.json.encode(report))
        page = admin_http.get("/admin/dashboard")
        assert page.status_code == 200, page.text
        assert f"audit job {second.id}: its report cannot be read: its file is missing or damaged" in page.text, page.text


def test_a_report_of_schema_1_reads_and_is_written_back_as_schema_2(upgraded):  # noqa: F811
    """b7168d1's audit (schema 1): alice alone in group `a`. Her DELETE withholds `a` (`withheld_groups`), a field
    of schema 2: before, the rewritten report still said schema 1, which a release reading schema 1 would refuse."""
    expected, data, service = upgraded("b7168d1")
    jobs = data / "jobs"
    audit = next(j for j in expected["jobs"]["jobs"] if j["kind"] == "audit")["id"]
    assert msgspec.json.decode((jobs / f"{audit}.result.json").read_bytes())["schema_version"] == 1
    assert groups_of(jobs, audit) == {"b"}  # read as schema 4: `a`, alice's alone, suppressed (review session 49)
    with service.client("default") as default:
        r = default.delete("/v1/users/alice")
        assert r.status_code == 200, r.text
    for name in ("result.json", "out"):
        stored = msgspec.json.decode((jobs / f"{audit}.{name}").read_bytes())
        # this release's schema (3 since trial48b: the intervals, null in a report read from schema 1; 4 since session 49).
        # No group withheld: `a` was read suppressed, and alice's DELETE took the unshown part out (`without_unshown`)
        assert (stored["schema_version"], stored["withheld_groups"], stored["gap_interval"], stored["overall"]) == (4, 0, None, None), name
    assert groups_of(jobs, audit) == {"b"}
