"""The job runner with real worker processes: restart, crash, cancel, promotion, automatic triggers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.job_kinds import TEST_KINDS, wait_rounds
from training.jobs.record import decode_job
from training.jobs.runner import LocalJobRunner, RunnerConfig
from training.jobs.triggers import AdapterTrigger

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner(tmp_path):
    r = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)
    r.start()
    yield r
    r.stop()


def test_a_job_runs_in_a_worker_and_records_progress_metrics_and_log(runner):
    job = runner.submit("work", {"seconds": 0.2})
    done = runner.wait(job.id, timeout=30)
    assert done.state == "succeeded" and done.progress == 1.0 and done.attempts == 1
    assert done.metrics == {"heldout_accuracy": 0.5, "steps": 4.0}
    assert "training done" in done.log_tail
    assert Path(done.result_path).is_file()
    # the record on disk is the record in memory
    assert decode_job((runner.config.folder / f"{job.id}.job.json").read_bytes()) == done


def test_a_crashing_job_is_recorded_failed_and_the_runner_keeps_going(runner):
    crash = runner.submit("work", {"crash": True})
    after = runner.submit("work", {})
    failed = runner.wait(crash.id, timeout=30)
    assert failed.state == "failed"
    assert "RuntimeError: the worker fell over" in failed.error
    assert runner.wait(after.id, timeout=30).state == "succeeded"


def test_cancel_a_queued_and_a_running_job(runner):
    slow = runner.submit("work", {"seconds": 30})
    queued = runner.submit("work", {})
    assert runner.cancel(queued.id).state == "cancelled"
    deadline = time.monotonic() + 20
    while runner.get(slow.id).state != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.cancel(slow.id)
    cancelled = runner.wait(slow.id, timeout=10)
    assert cancelled.state == "cancelled" and cancelled.finished_at - cancelled.started_at < 10


def test_a_worse_adapter_is_kept_but_not_served(runner):
    first = runner.wait(runner.submit("adapter", {"user": "alice", "accuracy": 0.80}).id)
    assert first.promoted is True
    worse = runner.wait(runner.submit("adapter", {"user": "alice", "accuracy": 0.70}).id)
    assert worse.state == "succeeded" and worse.promoted is False
    assert worse.metrics["heldout_accuracy"] == 0.70 and worse.metrics["replaced_heldout_accuracy"] == 0.80
    assert Path(worse.artifact).is_dir()  # kept
    assert runner.promotions.served("adapter/default/alice").job_id == first.id  # not served
    equal = runner.wait(runner.submit("adapter", {"user": "alice", "accuracy": 0.80}).id)
    assert equal.promoted is True and runner.promotions.served("adapter/default/alice").job_id == equal.id
    # another user's adapter is judged on its own
    bob = runner.wait(runner.submit("adapter", {"user": "bob", "accuracy": 0.6}).id)
    assert bob.promoted is True


def test_an_adapter_job_is_queued_after_every_n_new_comparisons(runner):
    trigger = AdapterTrigger(runner, every=3)
    assert trigger.on_feedback("acme", "carol", 2) is None
    job = trigger.on_feedback("acme", "carol", 3)
    assert job is not None and job.params == {"tenant": "acme", "user": "carol", "comparisons": 3}
    assert trigger.on_feedback("acme", "carol", 4) is None  # one is already queued or running
    assert trigger.on_feedback("globex", "carol", 3) is not None  # another tenant's carol is another user
    runner.wait(job.id)
    assert trigger.on_feedback("acme", "carol", 5) is None
    assert trigger.on_feedback("acme", "carol", 6).params["comparisons"] == 6


CRASHING_SERVICE = """
import os, sys, time
from pathlib import Path
from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.runner import LocalJobRunner, RunnerConfig
runner = LocalJobRunner(RunnerConfig(folder=Path(sys.argv[1]), poll_seconds=0.05), TEST_KINDS)
runner.start()
job = runner.submit("work", {"seconds": 2.0, "marker": sys.argv[2]})
queued = runner.submit("work", {})
while runner.get(job.id).state != "running":
    time.sleep(0.02)
time.sleep(0.3)
os._exit(1)  # the service dies with a job running and one queued
"""


def test_queued_and_running_jobs_survive_a_restart(tmp_path):
    folder, marker = tmp_path / "jobs", tmp_path / "started.txt"
    subprocess.run([sys.executable, "-c", CRASHING_SERVICE, str(folder), str(marker)], cwd=REPO, check=False, timeout=60)
    runner = LocalJobRunner(RunnerConfig(folder=folder, poll_seconds=0.05), TEST_KINDS)
    jobs = runner.list()
    assert sorted(j.state for j in jobs) == ["queued", "queued"]  # the running one was queued again
    runner.start()
    try:
        done = [runner.wait(j.id, timeout=60) for j in jobs]
    finally:
        runner.stop()
    assert [j.state for j in done] == ["succeeded", "succeeded"]
    rerun = next(j for j in done if j.params.get("marker"))
    assert rerun.attempts == 2
    assert marker.read_text().count("started") == 2


def test_queued_audits_start_before_queued_training(tmp_path):
    from tests.e2e.job_kinds import work
    from training.jobs.kinds import JobKind

    kinds = {**TEST_KINDS, "audit": JobKind("audit", work, priority=0)}
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), kinds)
    training = [runner.submit("work", {}) for _ in range(3)]
    audit = runner.submit("audit", {})
    runner.start()
    try:
        finished = [runner.wait(j.id) for j in [*training, audit]]
    finally:
        runner.stop()
    assert min(finished, key=lambda j: j.started_at).id == audit.id


def test_a_job_interrupted_max_attempts_times_is_failed_not_relaunched(tmp_path):
    """A job whose every attempt was cut by a restart (say it takes the machine down) is not re-run forever."""
    from training.jobs.record import Job
    from training.jobs.store import JobStore

    store = JobStore(tmp_path / "jobs")
    store.add(Job(id="tired", kind="work", state="running", attempts=3, created_at=1.0))
    store.add(Job(id="fresh", kind="work", state="running", attempts=1, created_at=2.0))
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", max_attempts=3), TEST_KINDS)
    tired, fresh = runner.get("tired"), runner.get("fresh")
    assert tired.state == "failed" and "gave up after 3 attempts" in tired.error
    assert fresh.state == "queued"


def test_purge_kills_a_running_job_and_leaves_no_file(tmp_path):
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)
    runner.start()
    try:
        job = runner.submit("work", {"seconds": 30})
        deadline = time.monotonic() + 30
        while runner.get(job.id).state != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = runner.get(job.id).pid
        runner.purge(job.id)
        wait_rounds(runner)  # the dispatcher's next rounds must not write it back (a sleep of 0.5 s: maybe none ran)
        assert runner.get(job.id) is None
        assert not any(job.id in p.name for p in (tmp_path / "jobs").rglob("*")), list((tmp_path / "jobs").rglob("*"))
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    finally:
        runner.stop()
    again = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs"), TEST_KINDS)
    assert again.get(job.id) is None


def test_purged_jobs_leave_nothing_in_the_runners_memory_and_a_late_write_does_not_bring_one_back(tmp_path):
    """Retention and DELETEs purge jobs for as long as the service runs (an adapter job every
    `adapter_every` comparisons of each user): the job store kept every purged id for ever, to drop a
    late write of one. Now a write of a job the store no longer holds is dropped without remembering
    it: purging 200 jobs leaves the store holding what a fresh one holds, and the dispatcher's late
    write of a purged job (its record read before the purge) still neither shows it nor writes its file."""
    import msgspec

    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)  # not started: all stay queued
    held = lambda store: {name: len(value) for name, value in vars(store).items() if isinstance(value, dict | set | list)}  # noqa: E731
    fresh = held(runner.store)
    jobs = [runner.submit("work", {"seconds": 0}) for _ in range(200)]
    stale = runner.get(jobs[0].id)
    for job in jobs:
        runner.purge(job.id)
    assert held(runner.store) == fresh
    runner.store.put(msgspec.structs.replace(stale, state="running"))  # a write that read the record before the purge
    assert runner.get(stale.id) is None and runner.list() == []
    assert list((tmp_path / "jobs").glob("*.job.json")) == []


def test_on_exit_runs_before_a_finished_jobs_final_record(tmp_path):
    """Whoever sees a job ended sees what `on_exit` did (the service removes a deleted user's vectors
    there). Before: the final record came first, so a reader could see `succeeded` (or `failed`) while
    `on_exit` had not run yet."""
    seen: dict[str, str] = {}
    r = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS,
                       on_exit=lambda job_id: seen.setdefault(job_id, r.store.get(job_id).state))
    r.start()
    try:
        ok, crash = r.submit("work", {}), r.submit("work", {"crash": True})
        assert r.wait(ok.id, timeout=30).state == "succeeded" and r.wait(crash.id, timeout=30).state == "failed"
        assert seen == {ok.id: "running", crash.id: "running"}
    finally:
        r.stop()
