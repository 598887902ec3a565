"""How long `JobStore.remove`'s bookkeeping takes for a tenant's many finished jobs, removed oldest first as retention
does (file writes and deletes left out: their cost is the disk's, measured apart).

    python benchmarks/job_store_removes.py --jobs 20000

Prints one line: the jobs, and the seconds all their removes took under the store's lock.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from unittest import mock

import msgspec

import training.jobs.store as job_store
from training.jobs.record import Job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, mock.patch.object(job_store, "write_atomic", lambda path, data: None), \
            mock.patch.object(job_store.JobStore, "files", lambda store, job_id: []):
        store = job_store.JobStore(folder)
        now = time.time()
        for i in range(args.jobs):
            job = store.add(Job(id=f"j{i:07d}", kind="work", params={"tenant": "acme", "user": f"u{i % 100}"}, created_at=now + i))
            store.put(msgspec.structs.replace(job, state="succeeded", attempts=1, started_at=now + i, finished_at=now + i))
        began = time.perf_counter()
        for i in range(args.jobs):
            store.remove(f"j{i:07d}")
        print(f"{args.jobs} jobs of one tenant removed oldest first: {time.perf_counter() - began:.2f} s")


if __name__ == "__main__":
    main()
