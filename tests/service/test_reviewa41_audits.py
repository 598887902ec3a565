"""What the audit41 change left (review session 41): stored audit reports the service cannot read, and the start's
pass over the audits an earlier release stored."""

from __future__ import annotations

import sqlite3
import time

import msgspec
import pytest

from service.admin.controllers import ADMIN_HANDLERS, _audit_response
from service.admin.services import AUDIT_MEMBERS_INDEX
from tests.service.test_break20_delete_b import logged
from tests.service.test_scale37_delete_audits import stored_audits

SECRET = "tenant-acme-user-ann-said-secret"


def test_a_report_whose_schema_is_no_number_is_a_damaged_file_and_its_content_is_shown_to_no_client(serve):
    """A report file whose `schema_version` holds text (or an object) is damaged, not a later release's: its content
    stays in the log, as a damaged file's decode error does (test_break19c). Before: the dashboard showed, and the
    audit route's 500 `audit_report_unreadable` answered, `audit report schema '<whatever the file held>'`, at any
    length."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    jobs = data / "jobs"
    damaged = stored_audits(jobs, n=1)
    path = jobs / f"{damaged}.result.json"
    path.write_bytes(msgspec.json.encode({**msgspec.json.decode(path.read_bytes()), "schema_version": {"said": SECRET}}))
    with server, svc.client("admin") as admin_http:
        with logged("pluralign.service") as records:
            page = admin_http.get("/admin/dashboard")
        assert page.status_code == 200, page.text
        assert f"audit job {damaged}: its report cannot be read: its file is missing or damaged" in page.text, page.text
        assert SECRET not in page.text
        assert any(SECRET in r for r in records), records  # the operator's log says what the file held
        # an audit was run: its report is the one this release cannot read (before: "No audit has been run yet")
        assert "No audit has been run yet" not in page.text
        assert "No audit this release can read is stored" in page.text, page.text
        admin = server.server.config.app.state.admin
        with pytest.raises(RuntimeError, match=SECRET):  # a 500 `internal_error`, its detail in the log only
            _audit_response(admin, admin.runner.get(damaged))


@pytest.mark.usefixtures("short_read_margin")  # its two DELETEs' wait for readers: tests/service/conftest.py
def test_with_replicas_the_deletion_record_withholds_the_unshown_part_the_user_count_cannot_tell(serve, tmp_path):
    """An audit an earlier release stored (no unshown users listed): s1 (ann, bob) and s2 (cal, dee) shown, GONE alone
    in s3 (suppressed). That release's DELETE of ann withheld s1 (its 2 users left the counts), then its DELETE of GONE
    withheld nothing. At the start the report counts 3 users and the store holds 3 from before it (bob, cal, dee): the
    count cannot tell GONE went. With replicas the deletion record names GONE, deleted since, in no shown group: the
    unshown part goes. (Guards `_unshown_at_start`'s deletion-record test: without it the report kept GONE's
    comparisons in its count.)"""
    from pluralign.fairness.report import AuditReport, decode_report
    from pluralign.store.deletions import key_hash
    from tests.service.test_audit41_suppressed_delete import old_form_audit
    from tests.service.test_break20_delete import GONE
    from tests.service.test_data34_delete_audit import give
    from tests.service.test_privacy40_audit_figures import figures

    settings = dict(admin_handlers=ADMIN_HANDLERS, store_uri=str(tmp_path / "shared-lancedb"), replicas=2, replica_index=0, store_sync_ms=0)
    data, server, svc = serve(**settings)
    jobs = data / "jobs"
    with server, svc.client("acme") as acme:
        for user, segment in ((GONE, "s3"), ("ann", "s1"), ("bob", "s1"), ("cal", "s2"), ("dee", "s2")):
            give(acme, user, segment, n=2)
            assert acme.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved into the table
        uri = svc.runtime.settings.lancedb_uri
        made = time.time()
        s2 = {"s2": sorted(key_hash(f"acme/{u}") for u in ("cal", "dee"))}
        old_form_audit(jobs, uri, "audit-old", AuditReport(  # as that release left it after ann's DELETE
            group_by="segment", created_at=made, encoder_id="minilm", personalized_model="online-logistic", base_model="crossfit-logistic",
            users=3, comparisons=6, min_group_size=2, suppressed_groups=1, withheld_groups=1, overall=None,
            groups=[figures("s2", 2, 0.5)], worst_group="s2", worst_group_accuracy=0.5, gap=0.0), s2)
        time.sleep(0.05)
        for user in ("ann", GONE):  # the index knows no such audit: as before audit41
            assert acme.delete(f"/v1/users/{user}").status_code == 200
    index = sqlite3.connect(jobs / AUDIT_MEMBERS_INDEX)  # as the release before audit41 left it
    index.execute("PRAGMA user_version = 1")
    index.close()
    data, server, svc = serve(**settings)
    with server:
        stored = decode_report((jobs / "audit-old.result.json").read_bytes())
        assert (stored.users, stored.comparisons) == (2, 4), stored  # s2's alone: GONE's 2 comparisons left the count
        assert [g.group for g in stored.groups] == ["s2"] and stored.overall is None


def test_the_start_goes_on_past_a_later_release_s_report_it_cannot_rewrite(serve):
    """`audit-later`: a later release's report (schema 5: one past this release's), its members file listing `zed`, deleted since (the report
    cannot be rewritten here: a later release's). `audit-before`: an earlier release's, GONE alone in a suppressed
    group, deleted since. Before: the start's pass stopped at `audit-later` (its `_prune_audit` raised) and checked no
    audit after it, so `audit-before` kept its overall figures over GONE's comparisons, at every start."""
    from pluralign.fairness.report import AuditReport, decode_report
    from pluralign.store.deletions import key_hash
    from tests.service.test_audit41_suppressed_delete import old_form_audit
    from tests.service.test_break20_delete import GONE
    from tests.service.test_data34_delete_audit import give
    from tests.service.test_privacy40_audit_figures import figures

    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    jobs = data / "jobs"
    with server, svc.client("acme") as acme:
        for user, segment in ((GONE, "s3"), ("ann", "s1"), ("bob", "s1")):
            give(acme, user, segment, n=2)
            assert acme.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved into the table
        uri = svc.runtime.settings.lancedb_uri
        s1 = {"s1": sorted(key_hash(f"acme/{u}") for u in ("ann", "bob"))}
        report = AuditReport(group_by="segment", created_at=time.time(), encoder_id="minilm", personalized_model="online-logistic",
                             base_model="crossfit-logistic", users=3, comparisons=6, min_group_size=2, suppressed_groups=1,
                             overall=figures("all", 3, 0.6), groups=[figures("s1", 2, 0.75)])
        old_form_audit(jobs, uri, "audit-before", report, s1)
        old_form_audit(jobs, uri, "audit-later", msgspec.structs.replace(report, created_at=report.created_at + 1),
                       {**s1, " unshown": [key_hash("acme/zed")]})
        later = jobs / "audit-later.result.json"
        later.write_bytes(msgspec.json.encode({**msgspec.json.decode(later.read_bytes()), "schema_version": 5}))
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200  # the index knows neither audit yet
    index = sqlite3.connect(jobs / AUDIT_MEMBERS_INDEX)  # as the release before audit41 left it
    index.execute("PRAGMA user_version = 1")
    index.close()
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server:
        before = decode_report((jobs / "audit-before.result.json").read_bytes())
        assert before.overall is None and (before.users, before.comparisons) == (2, 4), before
        assert msgspec.json.decode(later.read_bytes())["schema_version"] == 5  # left as the later release wrote it
