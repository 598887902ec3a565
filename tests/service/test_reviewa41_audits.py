"""What the audit41 change left (review session 41): stored audit reports the service cannot read, and the start's
pass over the audits an earlier release stored."""

from __future__ import annotations

import msgspec
import pytest

from service.admin.controllers import ADMIN_HANDLERS, _audit_response
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
