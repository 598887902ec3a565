"""Review of session 51 (feedback51): `pluralign tenants remove` of a tenant whose only trace is a job naming it.
Each test failed before its fix."""

from __future__ import annotations

import json

from tests.unit.test_break37_cli import last_line, usage_error


def test_tenants_remove_of_a_tenant_whose_only_trace_is_a_job_naming_it_begins_the_removal(tmp_path, capsys):
    """A job record naming the tenant in the service's jobs folder (an audit of it an admin queued; its keys revoked,
    its users deleted one by one) is something of it the removal purges: `tenants remove` begins it (exit 0), as the
    route does. Before, it was refused as a typo (exit 2, "nothing to remove"), and the job stayed. A job naming
    another tenant, or a damaged record, does not count."""
    from service.auth import KeyRing
    from training.cli import main
    from training.jobs.record import Job
    from training.jobs.store import JobStore

    data = tmp_path / "data"
    KeyRing(data / "api_keys.json").issue("acme")
    jobs = JobStore(data / "jobs")
    jobs.add(Job(id="j1", kind="audit", params={"group_by": "segment", "tenant": "initech"}, created_at=1.0))
    jobs.add(Job(id="j2", kind="audit", params={"group_by": "segment", "tenant": "globex"}, created_at=2.0))
    (data / "jobs" / "j3.job.json").write_text("{not json")
    code, out, err = usage_error(capsys, "tenants", "remove", "--tenant", "initeck", "--data-dir", str(data))
    assert code == 2 and "nothing to remove" in last_line(err), (code, out, err)
    assert main(["tenants", "remove", "--tenant", "initech", "--data-dir", str(data)]) == 0
    removal = json.loads(capsys.readouterr().out)
    assert (removal["tenant"], removal["state"]) == ("initech", "running"), removal
