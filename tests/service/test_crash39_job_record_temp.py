"""A service SIGKILLed while it rewrote a job's record (`training.jobs.store.JobStore.put`: a temp file
beside `<id>.job.json`, then renamed; a running job's record is rewritten at each change of its progress)
leaves the temp file, `.<id>.job.json.<random>`, holding the job's params: the user it is for.

Before: the user's DELETE purged the job (`JobStore.remove`: its record, log, output and result) and
answered 200, and the temp file stayed for good, naming the deleted user. Now the job's removal takes
the temp files of its files too.

The temp file is made by a real SIGKILL of a real process at that point (a child writing the record
through `JobStore`); the DELETE is the real route of the real app."""

from __future__ import annotations

import subprocess
import sys
import time

from service.admin.controllers import ADMIN_HANDLERS
from tests.conftest import REPO
from tests.files import files_holding
from tests.service.conftest import serve  # noqa: F401

USER = "crash39-record-temp"

CHILD = r"""
import os, signal, sys, time, pathlib
import msgspec
from training.jobs.record import Job
from training.jobs.store import JobStore

store = JobStore(pathlib.Path(sys.argv[1]))
job = store.add(Job(id="19c0ffee039-cccccccc", kind="adapter", params={"tenant": "acme", "user": sys.argv[2]}, created_at=time.time()))
job = store.put(msgspec.structs.replace(job, state="failed", error="stopped", finished_at=time.time()))  # ended: the restart runs nothing
replace = os.replace

def killed(src, dst, *args, **kwargs):
    if str(dst).endswith(".job.json"):  # the record's temp file is written and fsynced: killed before its rename
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst, *args, **kwargs)

os.replace = killed
store.put(msgspec.structs.replace(job, log_tail=["one more line"]))
print("not killed", flush=True)
"""


def test_a_job_record_killed_mid_rewrite_leaves_no_trace_of_the_user_after_their_delete(serve, tmp_path):  # noqa: F811
    data = tmp_path / "data"  # the service's (`serve`), started after the kill, as a restart would be
    run = subprocess.run([sys.executable, "-c", CHILD, str(data / "jobs"), USER], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == -9, (run.returncode, run.stdout, run.stderr[-2000:])
    left = files_holding(data / "jobs", USER)
    assert any(f.startswith(".19c0ffee039-cccccccc.job.json.") for f in left), left  # the temp file, beside the record
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        r = acme.post("/v1/feedback", json={"type": "comparison", "user": USER, "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."})
        assert r.status_code == 201, r.text
        d = acme.delete(f"/v1/users/{USER}")
        assert d.status_code == 200, d.text
        deadline = time.monotonic() + 10
        while (left := files_holding(data, USER)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == []
