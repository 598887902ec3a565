"""The audit report's schema (ver session 40): privacy40 added `withheld_groups` to the report and left it at
schema 1. Reports are decoded strictly, so a release reading a report a later one wrote said "unknown field",
as if the file were damaged, and a report of schema 1 rewritten by a DELETE (now holding `withheld_groups`)
still said schema 1. Now the report is schema 2; a later schema is refused by its number, before its fields,
and an earlier one reads (and is written back) as this one."""

from __future__ import annotations

import msgspec

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import GONE
from tests.service.test_break20_delete_b import logged
from tests.service.test_scale37_delete_audits import groups_of, stored_audits
from tests.service.test_upgrade29 import upgraded  # noqa: F401


def test_a_delete_names_the_schema_of_an_audit_report_a_later_release_wrote(serve):
    """Before: the DELETE's log said the report held an unknown field (`from_a_later_release`), as for a damaged file."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    jobs = data / "jobs"
    first = stored_audits(jobs, n=1)  # GONE alone in one group of it
    path = jobs / f"{first}.result.json"
    later = msgspec.json.decode(path.read_bytes())
    path.write_bytes(msgspec.json.encode({**later, "schema_version": 3, "from_a_later_release": 1}))
    with server, svc.client("acme") as acme:
        with logged("pluralign.service") as records:
            r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 500, r.text  # the report may still hold them: the DELETE is tried again, as for any such file
        assert r.json()["error"]["code"] == "population_not_rewritten", r.text
    said = " ".join(records)
    assert "audit report schema 3, written by a later release of pluralign (this one reads schemas 1-2)" in said, said
    assert "unknown field" not in said, said


def test_a_report_of_schema_1_reads_and_is_written_back_as_schema_2(upgraded):  # noqa: F811
    """b7168d1's audit (schema 1): alice alone in group `a`. Her DELETE withholds `a` (`withheld_groups`), a field
    of schema 2: before, the rewritten report still said schema 1, which a release reading schema 1 would refuse."""
    expected, data, service = upgraded("b7168d1")
    jobs = data / "jobs"
    audit = next(j for j in expected["jobs"]["jobs"] if j["kind"] == "audit")["id"]
    assert msgspec.json.decode((jobs / f"{audit}.result.json").read_bytes())["schema_version"] == 1
    assert groups_of(jobs, audit) == {"a", "b"}  # read as schema 2
    with service.client("default") as default:
        r = default.delete("/v1/users/alice")
        assert r.status_code == 200, r.text
    for name in ("result.json", "out"):
        stored = msgspec.json.decode((jobs / f"{audit}.{name}").read_bytes())
        assert (stored["schema_version"], stored["withheld_groups"]) == (2, 1), name
    assert groups_of(jobs, audit) == {"b"}
