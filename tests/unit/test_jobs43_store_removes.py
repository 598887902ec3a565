"""`JobStore.remove` (retention's purge of each expired job, a DELETE's of each of a user's jobs) reads no folder: it
looked for the temp files a killed rewrite left (`.<id>.job.json.<random>`) with a glob of the whole jobs folder at
every call, so retention's removes grew with the square of the jobs kept (5,000 removes: 32 s measured by a reviewer;
`benchmarks/job_store_removes.py --files`). The temp files are found once, when the folder is opened, and each still
goes with its job."""

from __future__ import annotations

import os
import time

import msgspec

from training.jobs.record import Job
from training.jobs.store import JobStore


def test_removes_read_no_folder_and_still_take_the_temp_files_a_killed_rewrite_left(tmp_path, monkeypatch):
    store = JobStore(tmp_path)
    for i in range(20):
        job = store.add(Job(id=f"j{i:03d}", kind="adapter", params={"tenant": "acme", "user": f"u{i}"}, created_at=float(i)))
        store.put(msgspec.structs.replace(job, state="succeeded", started_at=float(i), finished_at=time.time()))
        store.path(job.id, "log").write_text("training done\n")
    left = [tmp_path / ".j003.job.json.k2j4h5g6", tmp_path / ".j004.result.json.a1b2c3d4"]  # as a killed service leaves them
    for path in left:
        path.write_text('{"params": {"user": "u3"}}')
    kept = tmp_path / ".j0031.job.json.z9y8x7w6"  # another job's (an id j003 is the start of)
    kept.write_text("{}")
    store = JobStore(tmp_path)  # opened again, as at a start
    reads = []
    for name in ("scandir", "listdir"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda path=".", real=real, name=name: reads.append((name, str(path))) or real(path))
    for i in range(20):
        assert store.remove(f"j{i:03d}") is not None
    monkeypatch.undo()
    assert reads == []  # before: one glob (os.scandir) of the jobs folder per remove
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]
    # the record last (session crash53): a removal cut short by a kill leaves it, naming the job for the removal made again
    assert store.files("j0031") == [store.path("j0031", s) for s in ("log", "out", "result.json")] + [kept, store.path("j0031")]
