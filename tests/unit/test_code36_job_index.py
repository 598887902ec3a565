"""The job store's index by user (`JobStore.of_user`, `users`), which a DELETE reads instead of every
job record: it holds the same jobs a walk over all records finds, as jobs are added, their states
written, purged, and the folder opened again (a later release's records included)."""

from __future__ import annotations

import json

import msgspec

from training.jobs.record import Job, user_key
from training.jobs.store import JobStore


def walked(store: JobStore, key: str) -> set[str]:
    """The ids of the jobs for `key` found the way forget_jobs found them before: every record read."""
    return {j.id for j in [*store.all(), *store.later()] if user_key(j.params) == key}


def test_the_index_by_user_follows_adds_writes_removes_and_a_reopening(tmp_path):
    store = JobStore(tmp_path)
    jobs = [Job(id=f"j{i}", kind="adapter", params={"tenant": "acme", "user": f"u{i % 3}"}, created_at=float(i)) for i in range(9)]
    jobs.append(Job(id="plain", kind="adapter", params={"user": "u0"}, created_at=9.0))  # the tenant `default`
    jobs.append(Job(id="audit", kind="audit", params={"group_by": "segment"}, created_at=10.0))  # for no one user
    for job in jobs:
        store.add(job)
    (tmp_path / "later.job.json").write_text(json.dumps({"schema_version": 99, "id": "later", "kind": "adapter",
                                                          "params": {"tenant": "acme", "user": "u1"}, "created_at": 11.0}))
    store.put(msgspec.structs.replace(jobs[0], state="running"))
    store.remove("j3")
    keys = {"acme/u0", "acme/u1", "acme/u2", "default/u0"}
    assert set(store.users()) == keys
    assert {j.id for j in store.of_user("acme/u0")} == walked(store, "acme/u0") == {"j0", "j6"}
    assert store.of_user("acme/u0")[0].state == "running" or store.of_user("acme/u0")[1].state == "running"
    reopened = JobStore(tmp_path)
    assert set(reopened.users()) == keys
    for key in keys:
        assert {j.id for j in reopened.of_user(key)} == walked(reopened, key)
    assert {j.id for j in reopened.of_user("acme/u1")} == {"j1", "j4", "j7", "later"}
    for job_id in ("j2", "j5", "j8"):
        reopened.remove(job_id)
    reopened.remove("later")
    assert "acme/u2" not in reopened.users() and reopened.of_user("acme/u2") == []
    assert {j.id for j in reopened.of_user("acme/u1")} == {"j1", "j4", "j7"}
