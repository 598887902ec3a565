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


PROMOTION_KILLED = r"""
import os, signal, sys, pathlib
from training.jobs.promotion import Promotions

replace = os.replace

def killed(src, dst, *args, **kwargs):
    if str(dst).endswith("promotions.json"):  # the file's temp copy is written and fsynced: killed before its rename
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst, *args, **kwargs)

os.replace = killed
folder = pathlib.Path(sys.argv[1])
folder.mkdir(parents=True, exist_ok=True)
Promotions(folder / "promotions.json").consider(f"adapter/acme/{sys.argv[2]}", str(folder / "artifacts" / "x"), 0.9, "19c0ffee039-dddddddd")
print("not killed", flush=True)
"""


def test_a_promotion_killed_mid_write_leaves_no_trace_of_the_user_after_a_restart_and_their_delete(serve, tmp_path):  # noqa: F811
    """The same for promotions.json (`training.jobs.promotion.Promotions`: what is served for each
    `adapter/<tenant>/<user>`): a process killed while writing it left `.promotions.json.<random>` naming
    the user, which nothing removed. Now the local runner's start (`remove_write_leftovers`) removes the
    temp files writes cut short left in the jobs folder and its artifact folders."""
    data = tmp_path / "data"
    run = subprocess.run([sys.executable, "-c", PROMOTION_KILLED, str(data / "jobs"), USER], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == -9, (run.returncode, run.stdout, run.stderr[-2000:])
    assert [f.split(":")[0][:len(".promotions.json.")] for f in files_holding(data / "jobs", USER)] == [".promotions.json."]
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)  # the restart
    with server, svc.client("acme") as acme:
        r = acme.post("/v1/feedback", json={"type": "comparison", "user": USER, "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."})
        assert r.status_code == 201, r.text
        d = acme.delete(f"/v1/users/{USER}")
        assert d.status_code == 200, d.text
        assert files_holding(data, USER) == []
