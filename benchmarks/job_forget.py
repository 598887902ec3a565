"""What a user's DELETE pays in the admin area's job records: `Admin.forget_jobs` (the jobs that name
the user, and the data snapshots and promotions) and `Admin._forget_in_audits` (the audits whose
members hold the user), over N job records held by a real `LocalJobRunner` (records on disk, read at
start). Most jobs are adapter jobs of N/5 users of one tenant; one in ten is an audit, each with a
members file of 50 hashed users. The user deleted has one adapter job, in no audit's members.

    python -m benchmarks.job_forget                  # 5,000 job records, 20 repeats
    python -m benchmarks.job_forget --jobs 20000 --json

Prints the median ms per DELETE of each method, by key (a DELETE answered here) and by hash (another
replica's deletion record). Admin's other parts (the runtime, the trigger) are not built: the
methods are called on an Admin holding only the runner, its folders and lock.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import msgspec

from pluralign.store.deletions import Forget, key_hash, new_deletion
from service.admin.audit_members import AuditMembersIndex
from service.admin.services import AUDIT_MEMBERS, AUDIT_MEMBERS_INDEX, Admin
from training.jobs.record import Job, job_encoder
from training.jobs.runner import LocalJobRunner, RunnerConfig


def job_records(folder: Path, jobs: int) -> None:
    """`jobs` succeeded job records in `folder` (and the audits' members files)."""
    folder.mkdir(parents=True, exist_ok=True)
    users = max(1, jobs // 5)
    for i in range(jobs):
        job_id = f"{i:011x}-{uuid.uuid4().hex[:8]}"
        if i % 10 == 9:
            job = Job(id=job_id, kind="audit", params={"group_by": "segment"}, state="succeeded", created_at=1e9 + i)
            members = {"g0": sorted(key_hash(f"acme/user-{(i + k) % users}") for k in range(1, 51))}
            (folder / "artifacts" / job_id).mkdir(parents=True)
            (folder / "artifacts" / job_id / AUDIT_MEMBERS).write_bytes(msgspec.json.encode(members))
        else:
            job = Job(id=job_id, kind="adapter", params={"tenant": "acme", "user": f"user-{i % users}"}, state="succeeded",
                      created_at=1e9 + i)
        (folder / f"{job_id}.job.json").write_bytes(job_encoder.encode(job))


def admin_over(folder: Path) -> Admin:
    admin = Admin.__new__(Admin)  # no runtime: only what forget_jobs and _forget_in_audits read
    admin.folder = folder
    admin.runner = LocalJobRunner(RunnerConfig(folder=folder))
    admin.audit_members = AuditMembersIndex(folder / AUDIT_MEMBERS_INDEX, folder / "artifacts", AUDIT_MEMBERS)
    admin._lock = threading.Lock()
    admin._new = {}
    return admin


def median_ms(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "jobs"
        job_records(folder, args.jobs)
        admin = admin_over(folder)
        # a user with no job and in no audit, as most DELETEs are: what is timed is the search alone
        user = "nobody"
        by_key = Forget.key(f"acme/{user}")
        by_hash = Forget.of([new_deletion("acme", user, time.time(), 1)])
        out = {"jobs": args.jobs}
        out["forget_jobs_by_key_ms"] = median_ms(lambda: admin.forget_jobs(by_key), args.repeats)
        out["forget_jobs_by_hash_ms"] = median_ms(lambda: admin.forget_jobs(by_hash), args.repeats)
        out["forget_in_audits_by_key_ms"] = median_ms(lambda: admin._forget_in_audits(by_key), args.repeats)
        out["forget_in_audits_by_hash_ms"] = median_ms(lambda: admin._forget_in_audits(by_hash), args.repeats)
    if args.json:
        print(json.dumps(out))
    else:
        for name, value in out.items():
            print(f"{name:30} {value}")


if __name__ == "__main__":
    main()
