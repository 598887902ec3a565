"""How long `JobStore.remove` takes for a tenant's many finished jobs, removed oldest first as retention does.

    python benchmarks/job_store_removes.py --jobs 20000                 # the bookkeeping only (no file)
    python benchmarks/job_store_removes.py --jobs 5000 --files          # with each job's files on disk
    python benchmarks/job_store_removes.py --jobs 5000 --files --against main   # and REV's store, in turn

Without `--files` the record writes and every file operation are left out (their cost is the disk's): the seconds
are the store's bookkeeping under its lock. With `--files` each job has its record, log, output and result on disk
in one folder (the records written without fsync, to build the folder quickly) and `remove` runs as the service runs
it: what it costs beside the folder's size. `--against REV` times `training/jobs/store.py` of git revision REV (the
rest of the tree is this one's) on a folder built the same way, after this tree's. Prints one line per store.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from unittest import mock

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import training.jobs.store as job_store  # noqa: E402
from training.jobs.record import Job  # noqa: E402


def store_of(rev: str, folder: str) -> ModuleType:
    """`training/jobs/store.py` as git revision `rev` has it, imported as a module of its own."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:training/jobs/store.py"], check=True, capture_output=True).stdout
    path = Path(folder) / f"store_{rev.replace('/', '_')}.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_removes(module: ModuleType, folder: Path, jobs: int, files: bool) -> float:
    """Seconds `jobs` removes took, oldest first, on a store of `module` over `folder`."""
    quick = (lambda path, data: Path(path).write_bytes(data)) if files else (lambda path, data: None)
    patches = [mock.patch.object(module, "write_atomic", quick)]
    if not files:
        patches.append(mock.patch.object(module.JobStore, "files", lambda store, job_id: []))
    for patch in patches:
        patch.start()
    try:
        store = module.JobStore(folder)
        now = time.time()
        for i in range(jobs):
            job = store.add(Job(id=f"j{i:07d}", kind="work", params={"tenant": "acme", "user": f"u{i % 100}"}, created_at=now + i))
            store.put(msgspec.structs.replace(job, state="succeeded", attempts=1, started_at=now + i, finished_at=now + i))
            if files:
                for suffix in ("log", "out", "result.json"):
                    store.path(job.id, suffix).write_bytes(b"{}\n")
        began = time.perf_counter()
        for i in range(jobs):
            store.remove(f"j{i:07d}")
        return time.perf_counter() - began
    finally:
        for patch in patches:
            patch.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--files", action="store_true", help="each job's record, log, output and result on disk")
    parser.add_argument("--against", metavar="REV", help="also time git revision REV's store (e.g. main), after this tree's")
    args = parser.parse_args()
    what = "with their 4 files each on disk" if args.files else "bookkeeping only"
    with tempfile.TemporaryDirectory(prefix="job-store-removes-") as scratch:
        stores = [("this tree", job_store)] + ([(args.against, store_of(args.against, scratch))] if args.against else [])
        for name, module in stores:
            folder = Path(scratch) / name.replace("/", "_").replace(" ", "_")
            seconds = time_removes(module, folder, args.jobs, args.files)
            print(f"{name}: {args.jobs} jobs of one tenant removed oldest first ({what}): {seconds:.2f} s", flush=True)


if __name__ == "__main__":
    main()
