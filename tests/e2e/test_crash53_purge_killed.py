"""A job runner SIGKILLed while it purges a user's finished job (`LocalJobRunner.purge`, what a user's DELETE and a
tenant's removal call for each job of theirs): right after the job's record was unlinked, and right after the job
store forgot it (`JobStore.remove` returned) and before its artifact folder went.

The brief's rule: nothing left behind after a delete. The DELETE cut short by the kill is finished at the next start
from its journal, which purges the jobs the job store still holds for the user (`service.admin.services.Admin.forget_jobs`:
`JobStore.of_user`): a file of the job that outlived its record is named by nothing any more, and stays for good.

Before: the record went first (`JobStore.remove` unlinked `<id>.job.json`, then the log, output and result), and the
artifact folder after the store forgot the job: a kill there left `jobs/artifacts/<id>/` (an adapter's weights and
its meta, naming the user) or the job's log, output and result, for good. Now the artifact folder goes first and the
record last, so a purge cut short leaves the record, which names the job for the purge made again.

Real processes: a child runs a `LocalJobRunner` with a small job kind (a few lines of Python writing a file naming the
user into its artifact folder), runs one job to its end, then purges it, SIGKILLed at the point named (a fault-injection
hook of the test's own); the parent is the restart, purging what the job store holds for the user, as the resumed
DELETE does. A few seconds a point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.files import files_holding
from training.jobs.kinds import JobKind
from training.jobs.runner import LocalJobRunner, RunnerConfig

USER = "zed-q53purge"  # in the params, the artifact's file and the worker's output: no other text holds it
TRAIN = """
import json, pathlib, sys
params, out = json.loads(sys.argv[1]), pathlib.Path(sys.argv[2])
(out / "adapter_meta.json").write_text(json.dumps({"tenant": params["tenant"], "user": params["user"]}))
print(json.dumps({"trained_for": params["user"], "artifact": str(out)}))
"""
KINDS = {"adapter": JobKind("adapter", lambda job, out: [sys.executable, "-c", TRAIN, json.dumps(job.params), str(out)])}

CHILD = r"""
import os, pathlib, signal, sys
from training.jobs.runner import LocalJobRunner, RunnerConfig
from training.jobs.store import JobStore
from tests.e2e.test_crash53_purge_killed import KINDS, USER

folder, point = pathlib.Path(sys.argv[1]), sys.argv[2]
runner = LocalJobRunner(RunnerConfig(folder=folder, poll_seconds=0.05), KINDS)
runner.start()
job = runner.wait(runner.submit("adapter", {"tenant": "acme", "user": USER}).id, timeout=60)
assert job.state == "succeeded" and (folder / "artifacts" / job.id / "adapter_meta.json").is_file(), job
print("job", job.id, flush=True)

unlink, remove = pathlib.Path.unlink, JobStore.remove

def unlinked(self, *args, **kwargs):
    unlink(self, *args, **kwargs)
    if point == "record" and self.name == f"{job.id}.job.json":
        os.kill(os.getpid(), signal.SIGKILL)

def removed(self, job_id):
    out = remove(self, job_id)
    if point == "forgotten":
        os.kill(os.getpid(), signal.SIGKILL)
    return out

pathlib.Path.unlink, JobStore.remove = unlinked, removed
runner.purge(job.id)
print("purged: not killed", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("point", ["record", "forgotten"])
def test_a_purge_killed_part_way_leaves_nothing_of_the_job_once_the_delete_is_made_again(tmp_path, point):
    folder = tmp_path / "jobs"
    run = subprocess.run([sys.executable, "-c", CHILD, str(folder), point], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == -9, (run.returncode, run.stdout, run.stderr[-3000:])
    job_id = run.stdout.split()[1]
    # the restart: the runner on the same folder, then the user's DELETE made again from its journal, which purges what
    # the job store holds for them
    runner = LocalJobRunner(RunnerConfig(folder=folder, poll_seconds=0.05), KINDS)
    runner.start()
    try:
        for job in runner.store.of_user(f"acme/{USER}"):
            runner.purge(job.id)
    finally:
        runner.stop()
    assert files_holding(folder, USER) == []
    assert [str(p.relative_to(folder)) for p in Path(folder).rglob("*") if job_id in p.name] == []
