"""What a user's DELETE costs as stored audits pile up: `DELETE /v1/users/{id}` latency over HTTP,
with N succeeded audit jobs in the service's jobs folder (each a record, a report and a members file
of 50 hashed users, as `Admin.keep_audit_members` leaves them), none of which holds the users deleted.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/delete_audits.py                    # 10 and 500 audits
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/delete_audits.py --against 4d30da5  # and that tree's, side by side
    OMP_NUM_THREADS=1 python benchmarks/delete_audits.py --admin-only --against 4d30da5      # the admin area's part alone

Each size runs in a child process of its own: the service (uvicorn on 127.0.0.1, the test suite's tiny
generator and PAL, the real MiniLM) starts on a data folder holding the audits, `--users` users each
send one comparison (moved into the table), then each is deleted in turn; prints the median and max ms of those DELETEs.
`--against REV` runs the same children on `git archive REV` (unpacked in a temporary folder) after
this tree's, size by size, and prints their ratio. `--admin-only` times, instead of the whole DELETE, the admin
area's part of it alone in the child (`Admin.forget_in_population`: population snapshots, PAL/EM artifacts, audits;
none here but the audits), on an Admin holding only its job runner and folders (as benchmarks/job_forget.py), 21 times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # for benchmarks.trees: after the code a child is given (its PYTHONPATH, BENCHMARK_TREE)

from benchmarks.trees import child_result, unpack_revision  # noqa: E402


def seed_audits(jobs: Path, audits: int) -> None:
    """`audits` succeeded audit jobs in the jobs folder `jobs`, as a service run with this tree leaves them."""
    import msgspec

    from pluralign.fairness.report import AuditReport, GroupMetrics, report_encoder
    from pluralign.store.deletions import key_hash
    from service.admin.services import AUDIT_MEMBERS
    from training.jobs.record import Job, job_encoder

    jobs.mkdir(parents=True, exist_ok=True)
    for i in range(audits):
        job_id = f"{i:011x}-{uuid.uuid4().hex[:8]}"
        result = jobs / f"{job_id}.result.json"
        group = GroupMetrics(group="g0", users=50, comparisons=400, personalized_accuracy=0.7, base_accuracy=0.6,
                             personalized_ece=None, base_ece=None)
        report = AuditReport(group_by="segment", created_at=1e9 + i, encoder_id="minilm", personalized_model="pal",
                             base_model="bt", users=50, comparisons=400, groups=[group])
        result.write_bytes(report_encoder.encode(report))
        (jobs / f"{job_id}.out").write_bytes(report_encoder.encode(report) + b"\n")
        job = Job(id=job_id, kind="audit", params={"group_by": "segment"}, state="succeeded", created_at=1e9 + i,
                  result_path=str(result))
        (jobs / f"{job_id}.job.json").write_bytes(job_encoder.encode(job))
        members = {"g0": sorted(key_hash(f"acme/member-{i}-{k}") for k in range(50))}
        (jobs / "artifacts" / job_id).mkdir(parents=True)
        (jobs / "artifacts" / job_id / AUDIT_MEMBERS).write_bytes(msgspec.json.encode(members))


def child(audits: int, users: int) -> dict:
    """Start a service over `audits` stored audits; the DELETE latencies of `users` users (ms)."""
    from pluralign.embed.encoders import SentenceEncoder
    from service.admin.controllers import ADMIN_HANDLERS
    from tests.service.tiny import save_tiny_generator, start_service, train_tiny_pal

    with tempfile.TemporaryDirectory(prefix="delete-audits-") as tmp:
        tmp = Path(tmp)
        encoder = SentenceEncoder()
        generator = save_tiny_generator(tmp / "generator")
        (tmp / "pal").mkdir()
        pal = train_tiny_pal(tmp / "pal", encoder)
        seed_audits(tmp / "data" / "jobs", audits)
        server, svc = start_service(tmp / "data", generator, pal, encoder, admin_handlers=ADMIN_HANDLERS, adapter_every=10**9,
                                    deletion_sweep_s=3600)
        times = []
        with server, svc.client("acme") as c:
            for i in range(users):
                r = c.post("/v1/feedback", json={"type": "comparison", "user": f"leaver-{i}", "prompt": f"Question {i}?",
                                                 "chosen": f"A kind answer {i}.", "rejected": f"A curt answer {i}."})
                assert r.status_code == 201, r.text
            for i in range(users):  # each user's row moved into the table (a GET moves the user's own): each DELETE deletes one there
                assert c.get(f"/v1/users/leaver-{i}/preferences").json()["total"] == 1
            c.delete("/v1/users/warm-up")
            for i in range(users):
                started = time.perf_counter()
                r = c.delete(f"/v1/users/leaver-{i}")
                times.append((time.perf_counter() - started) * 1000)
                assert r.status_code == 200, r.text
    return {"audits": audits, "median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}


def admin_only(audits: int, repeats: int = 21) -> dict:
    """The median and max ms of `Admin.forget_in_population` for a user in no audit, over `audits` stored audits."""
    import service.admin.services as admin_services
    from pluralign.store.deletions import Forget
    from service.admin.services import Admin
    from training.jobs.runner import LocalJobRunner, RunnerConfig

    with tempfile.TemporaryDirectory(prefix="delete-audits-") as tmp:
        folder = Path(tmp) / "jobs"
        seed_audits(folder, audits)
        admin = Admin.__new__(Admin)  # no runtime: only what forget_in_population reads
        admin.folder = folder
        admin.runner = LocalJobRunner(RunnerConfig(folder=folder))
        if hasattr(admin_services, "AUDIT_MEMBERS_INDEX"):  # this tree's index (absent before it)
            admin.audit_members = admin_services.AuditMembersIndex(folder / admin_services.AUDIT_MEMBERS_INDEX, folder / "artifacts",
                                                                   admin_services.AUDIT_MEMBERS)
        forget, times = Forget.key("acme/nobody"), []
        for _ in range(repeats):
            started = time.perf_counter()
            admin.forget_in_population(forget)
            times.append((time.perf_counter() - started) * 1000)
    return {"audits": audits, "median_ms": round(statistics.median(times), 3), "max_ms": round(max(times), 3)}


def run_child(tree: Path, audits: int, users: int, admin: bool = False) -> dict:
    return child_result(__file__, tree, ["--child", str(audits), "--users", str(users), *(["--admin-only"] if admin else [])],
                        {"PLURALIGN_SHARED_DATA": str(ROOT.parent / "shared" / "data")}, f" with {audits} audits")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10,500", help="stored audits, one service per size")
    p.add_argument("--users", type=int, default=15, help="users deleted in turn, per service")
    p.add_argument("--against", metavar="REV", help="also run git revision REV's tree, size by size after this one")
    p.add_argument("--admin-only", action="store_true", help="time Admin.forget_in_population alone, not DELETE over HTTP")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        sys.path.insert(0, os.environ.get("BENCHMARK_TREE", str(ROOT)))
        print(json.dumps(admin_only(args.child) if args.admin_only else child(args.child, args.users)))
        return
    what = "Admin.forget_in_population ms, median (max) of 21" if args.admin_only else f"DELETE /v1/users/{{id}} ms, median (max) of {args.users}"
    print(f"{what}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="delete-audits-tree-") as folder:
        if args.against:
            unpack_revision(args.against, folder)
        for size in (int(s) for s in args.sizes.split(",")):
            ours = run_child(ROOT, size, args.users, args.admin_only)
            line = f"{size:5} audits  this tree {ours['median_ms']:8.2f} ({ours['max_ms']:.2f})"
            if args.against:
                theirs = run_child(Path(folder), size, args.users, args.admin_only)
                line += (f"  {args.against} {theirs['median_ms']:8.2f} ({theirs['max_ms']:.2f})"
                         f"  {theirs['median_ms'] / ours['median_ms']:.1f}x")
            print(line, flush=True)


if __name__ == "__main__":
    main()
