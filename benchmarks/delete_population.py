"""What a DELETE pays in the admin area's population snapshots as they pile up (one per PAL or EM job, each a
copy of every stored comparison, kept until the job's retention ends): `Admin.forget_in_population` over N
snapshots of R rows each, under the runtime's population lock, by key (a DELETE answered here: each file's
bytes are read and searched for the name, `pluralign.files.may_hold`) and by hash (another replica's deletion
record: every row of every file decoded and its user hashed once, `service.admin.services._drop_rows`).

    python -m benchmarks.delete_population                          # 1, 10, 40 snapshots of 20,000 rows, 3 repeats
    python -m benchmarks.delete_population --snapshots 1 10 40 100 --rows 50000 --json

Each snapshot has its users file (`comparisons-<ms>.jsonl.users`, `service.admin.services.snapshot_users_path`),
as the service writes it since privacy40; `--no-users-files` leaves them out (an earlier release's snapshots, or
the code before privacy40, which had none: its figures are the same path as this flag's first DELETE).

Prints, per snapshot count, the median seconds of one DELETE of a user in no snapshot and of one in every
snapshot (each file rewritten; the files are put back between repeats), by key and by hash, and the MB read.
Admin's other parts (the runtime, the trigger) are not built: `forget_in_population` runs on an Admin holding
the runner, its folders, the audit members index and a lock; the jobs' embedding cache is a temp folder's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from pluralign.data.io import write_jsonl
from pluralign.data.record import Preference
from pluralign.store.deletions import Forget, new_deletion
from service.admin.audit_members import AuditMembersIndex
from service.admin.services import AUDIT_MEMBERS, AUDIT_MEMBERS_INDEX, Admin
from training.jobs.runner import LocalJobRunner, RunnerConfig


def snapshot(path: Path, rows: int, users: int, stamp: float) -> None:
    """A population snapshot in the service's format (`Admin.population_snapshot`): users `tenant/user`."""
    records = [Preference(user_id=f"acme/user-{i % users}", prompt=f"Question {i} about something ordinary?",
                          chosen=f"A chosen answer number {i}, a sentence or two long.", rejected=f"A rejected answer {i}.",
                          created_at=stamp)
               for i in range(rows)]
    write_jsonl(records, path)


def admin_over(folder: Path) -> Admin:
    admin = Admin.__new__(Admin)  # no runtime: only what forget_in_population reads
    admin.folder = folder
    admin.runner = LocalJobRunner(RunnerConfig(folder=folder))
    admin.audit_members = AuditMembersIndex(folder / AUDIT_MEMBERS_INDEX, folder / "artifacts", AUDIT_MEMBERS)
    admin._exit_lock = threading.Lock()
    return admin


def timed(admin: Admin, originals: Path, forget: Forget, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        shutil.rmtree(admin.population_folder)
        shutil.copytree(originals, admin.population_folder)
        started = time.perf_counter()
        admin.forget_in_population(forget)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, nargs="+", default=[1, 10, 40])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-users-files", action="store_true",
                        help="snapshots without their users files, as before privacy40 (and as an earlier release left them)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    now = time.time()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PLURALIGN_CACHE_DIR"] = str(Path(tmp) / "cache")  # the jobs' embedding cache a DELETE cleans
        one = Path(tmp) / "one.jsonl"
        snapshot(one, args.rows, args.users, now - 3600)
        for n in args.snapshots:
            originals = Path(tmp) / f"originals-{n}"
            originals.mkdir()
            for i in range(n):
                copy = originals / f"comparisons-{int(now * 1000) - 3_600_000 + i}.jsonl"
                os.link(one, copy)
                if not args.no_users_files:  # as `Admin.population_snapshot` writes them since privacy40
                    from service.admin.services import _write_snapshot_users

                    _write_snapshot_users(copy, {f"acme/user-{u}" for u in range(min(args.users, args.rows))})
            admin = admin_over(Path(tmp) / f"jobs-{n}")
            admin.population_folder.mkdir(parents=True)
            absent, present = "acme/nobody", "acme/user-7"
            row = {"snapshots": n, "rows_each": args.rows, "mb_read": round(n * one.stat().st_size / 2**20, 1)}
            for name, who in (("absent", absent), ("present", present)):
                tenant, _, user = who.partition("/")
                row[f"by_key_{name}_s"] = timed(admin, originals, Forget.key(who), args.repeats)
                by_hash = Forget.of([new_deletion(tenant, user, now, 1, began_at=now)])
                row[f"by_hash_{name}_s"] = timed(admin, originals, by_hash, args.repeats)
            admin.audit_members.close()
            results.append(row)
            print(json.dumps(row) if args.json else
                  f"{n:>4} snapshots ({row['mb_read']} MB): user absent by key {row['by_key_absent_s']} s, by hash "
                  f"{row['by_hash_absent_s']} s; user present by key {row['by_key_present_s']} s, by hash {row['by_hash_present_s']} s",
                  flush=True)


if __name__ == "__main__":
    main()
