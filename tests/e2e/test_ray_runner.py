"""The job runner on Ray: a local Ray started by the test (one CPU, loopback), real worker processes.

Slow-marked (`make test-scaleout`): starting Ray takes ~10-20 s here."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import msgspec
import pytest

from tests.e2e.job_kinds import TEST_KINDS, wait_rounds, work
from training.jobs.runner import RunnerConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, namespace="pluralign", log_to_driver=False,
             _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def make_runner(folder: Path):
    from training.jobs.ray_runner import RayJobRunner

    runner = RayJobRunner(RunnerConfig(folder=folder, poll_seconds=0.1), kinds=TEST_KINDS)
    runner.start()
    return runner


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def disk_full_once(monkeypatch, state: str) -> list[str]:
    """The job store's first write of a record in `state` refused as a full disk would (ENOSPC naming the job's file);
    every other write as it is. The list returned holds the id of the job whose record was refused, once it was."""
    import errno

    from training.jobs.store import JobStore

    put = JobStore.put
    refused: list[str] = []

    def full_disk_once(store, job):
        if job.state == state and not refused:
            refused.append(job.id)
            raise OSError(errno.ENOSPC, "No space left on device", str(store.path(job.id)))
        return put(store, job)

    monkeypatch.setattr(JobStore, "put", full_disk_once)
    return refused


def test_a_job_runs_as_a_ray_actor_with_progress_log_and_result(ray_cluster, tmp_path):
    runner = make_runner(tmp_path / "jobs")
    try:
        job = runner.submit("work", {"seconds": 2.0})
        seen = []
        wait_for(lambda: seen.append(runner.get(job.id).progress) or runner.get(job.id).state not in ("queued", "running"), 120, "never finished")
        done = runner.get(job.id)
        assert done.state == "succeeded", done
        assert done.attempts == 1 and done.metrics["heldout_accuracy"] == 0.5
        assert "training done" in done.log_tail
        # the send's line opens its log (the record's 30-line tail no longer reaches it: the test worker's script, on it, grew to 33 lines)
        assert runner.store.path(job.id, "log").read_text().startswith("on Ray (cpus=1")
        assert any(0 < p < 1 for p in seen)  # progress reached the record while it ran
        # the actor is gone once the job is final (detached actors live until killed)
        wait_for(lambda: not _actor_alive(ray_cluster, job.id), 30, "the actor outlived its job")
    finally:
        runner.stop()


def _actor_alive(ray, job_id: str) -> bool:
    from training.jobs.ray_runner import NAMESPACE, actor_name

    try:
        ray.get_actor(actor_name(job_id), namespace=NAMESPACE)
        return True
    except ValueError:
        return False


def test_cancel_a_running_job_on_ray(ray_cluster, tmp_path):
    runner = make_runner(tmp_path / "jobs")
    try:
        job = runner.submit("work", {"seconds": 60})
        wait_for(lambda: runner.get(job.id).progress > 0, 120, "never reported progress")
        runner.cancel(job.id)
        cancelled = runner.wait(job.id, timeout=30)
        assert cancelled.state == "cancelled" and cancelled.finished_at - cancelled.started_at < 60
    finally:
        runner.stop()


def test_a_restarted_runner_attaches_to_the_running_job_instead_of_running_it_twice(ray_cluster, tmp_path):
    marker = tmp_path / "marker"
    runner = make_runner(tmp_path / "jobs")
    job = runner.submit("work", {"seconds": 6.0, "marker": str(marker)})
    wait_for(lambda: marker.exists() and runner.get(job.id).progress > 0, 120, "never started")
    runner.stop()  # the service goes away; the actor keeps the worker running
    again = make_runner(tmp_path / "jobs")
    try:
        done = again.wait(job.id, timeout=120)
        assert done.state == "succeeded" and done.attempts == 1
        assert marker.read_text() == "started\n"  # one run of the worker, not two
    finally:
        again.stop()


def test_a_job_submitted_over_http_runs_on_ray(ray_cluster, tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """POST /admin/jobs on a service whose runner is Ray (`job_runner="ray"`): an audit of its store."""
    from service.admin.controllers import ADMIN_HANDLERS
    from tests.service.tiny import start_service

    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS, job_runner="ray")
    with server, svc.client("acme") as tenant, svc.client("admin") as admin:
        for i in range(6):
            body = {"type": "comparison", "user": f"u{i % 3}", "prompt": f"Q{i}?", "chosen": "yes", "rejected": "no",
                    "attributes": {"segment": "a" if i % 2 else "b"}}
            assert tenant.post("/v1/feedback", json=body).status_code == 201
        r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "min_group_size": 1}})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        wait_for(lambda: admin.get(f"/admin/jobs/{job_id}").json()["state"] not in ("queued", "running"), 240, "the audit never ended")
        job = admin.get(f"/admin/jobs/{job_id}").json()
        assert job["state"] == "succeeded", job
        assert any(line.startswith("on Ray (") for line in job["log_tail"])
        assert job["metrics"]["comparisons"] == 6


def _workers_of(job_id: str) -> list[int]:
    """Pids of this machine's processes whose environment names the job (`PLURALIGN_JOB_ID`)."""
    from training.jobs.runner import JOB_ENV

    def names_it(pid: str) -> bool:
        try:
            return f"{JOB_ENV}={job_id}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False

    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and names_it(p.name)]


def test_an_actor_whose_running_record_cannot_be_written_is_stopped_with_its_worker(ray_cluster, tmp_path, monkeypatch):
    """left30. Before: when the record that says the job runs could not be written (a full disk) after its
    actor had been started, the job was failed "could not start" while the detached actor and its worker
    ran on (a 10-minute worker here: until its end, holding a CPU Ray then counts as free). Now the actor's
    worker is killed and the actor too, as the local runner kills a worker it could not record."""
    disk_full_once(monkeypatch, "running")
    marker = tmp_path / "marker"
    runner = make_runner(tmp_path / "jobs")
    job = runner.submit("work", {"seconds": 600.0, "marker": str(marker)})
    try:
        wait_for(lambda: runner.get(job.id).state == "failed", 120, "the job was never failed")
        assert runner.get(job.id).error == f"could not start: No space left on device: {tmp_path / 'jobs' / job.id}.job.json"
        wait_for(lambda: not _actor_alive(ray_cluster, job.id), 60, "its actor was left running")
        wait_for(lambda: not _workers_of(job.id), 60, "its worker was left running")
        assert runner.get(job.id).state == "failed"  # and stays so: nothing of it is polled
    finally:
        runner.stop()
        for pid in _workers_of(job.id):  # (what the runner left, before the fix)
            os.kill(pid, signal.SIGKILL)


def test_a_start_removes_the_temp_files_writes_cut_short_left_but_where_a_job_it_attaches_to_writes(ray_cluster, tmp_path):
    """jobs40. The local runner's start removes the temp files of whole-file writes a killed service cut short
    (session 39); the Ray runner's did not: `.promotions.json.<random>` (naming `adapter/<tenant>/<user>`), a
    record's (its params) and those in artifact folders stayed. Now it removes them too, but in the artifact
    folder of a job whose actor it attaches to: that worker runs on and may be writing there."""
    folder = tmp_path / "jobs"
    runner = make_runner(folder)
    job = runner.submit("work", {"seconds": 8.0})
    wait_for(lambda: runner.get(job.id).progress > 0, 120, "never started")
    runner.stop()  # the service goes away; the actor keeps the worker running
    left = [folder / ".promotions.json.abcd1234", folder / f".{job.id}.job.json.k2j4h5g6",
            folder / "artifacts" / "1a0-ended" / ".adapter_model.safetensors.a1b2c3d4"]
    writing = folder / "artifacts" / job.id / ".checkpoint.pt.z9y8x7w6"
    for path in [*left, writing]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    again = make_runner(folder)
    try:
        assert [p.name for p in left if p.exists()] == []
        assert writing.exists()
        assert again.wait(job.id, timeout=120).state == "succeeded"
    finally:
        again.stop()


def test_a_cancelled_worker_that_swallows_the_sigterm_is_killed_after_the_grace_on_ray_too(ray_cluster, tmp_path):
    """jobs40: as tests/e2e/test_jobs40_cancel.py for the local runner (the CLI's SIGTERM exception swallowed by torch's
    C import of numpy at a worker's start, and the worker trained on). Before, the job stayed running."""
    from training.jobs.ray_runner import RayJobRunner

    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, cancel_grace_s=1.0), kinds=TEST_KINDS)
    runner.start()
    try:
        job = runner.submit("work", {"swallow_sigterm": True, "seconds": 60})
        wait_for(lambda: "importing" in runner.get(job.id).log_tail, 120, "never started")
        runner.cancel(job.id)
        cancelled = runner.wait(job.id, timeout=30)
        assert cancelled.state == "cancelled" and cancelled.finished_at - cancelled.started_at < 60
        assert "still running 1 s after the cancel's SIGTERM: killed (SIGKILL)" in cancelled.log_tail
        assert "imported; training on" in cancelled.log_tail  # it did swallow it
    finally:
        runner.stop()


def test_a_job_cancelled_before_its_runner_stopped_is_still_killed_after_the_grace_by_the_next_one(ray_cluster, tmp_path):
    """reviewj40: the cancel's SIGKILL after cancel_grace_s was owed in the memory of the runner that sent the SIGTERM
    only; a runner stopped inside the grace left the swallowing worker to train on, attached to by the next one."""
    from training.jobs.ray_runner import RayJobRunner

    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, cancel_grace_s=600.0), kinds=TEST_KINDS)
    runner.start()
    try:
        job = runner.submit("work", {"swallow_sigterm": True, "seconds": 60})
        wait_for(lambda: "importing" in runner.get(job.id).log_tail, 120, "never started")
        runner.cancel(job.id)
    finally:
        runner.stop()  # inside the grace: the worker runs on, on Ray
    again = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, cancel_grace_s=1.0), kinds=TEST_KINDS)
    again.start()
    try:
        cancelled = again.wait(job.id, timeout=30)  # the SIGTERM sent again (a SIGKILL 1 s later were it swallowed again)
        assert cancelled.state == "cancelled" and cancelled.attempts == 1 and cancelled.finished_at - cancelled.started_at < 50
    finally:
        again.stop()


def test_a_cancelled_job_whose_actor_dies_inside_the_grace_ends_cancelled_not_queued_again(ray_cluster, tmp_path):
    """reviewj40: a poll that finds the actor of a cancelled job dead (its node lost, or its `kill` outlasting the poll's
    30 s wait) queued the job again, to be trained from the start and recorded cancelled at its end."""
    from training.jobs.ray_runner import NAMESPACE, RayJobRunner, actor_name

    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, cancel_grace_s=600.0), kinds=TEST_KINDS)
    runner.start()
    try:
        job = runner.submit("work", {"swallow_sigterm": True, "seconds": 60})
        wait_for(lambda: "importing" in runner.get(job.id).log_tail, 120, "never started")
        runner.cancel(job.id)
        ray_cluster.kill(ray_cluster.get_actor(actor_name(job.id), namespace=NAMESPACE))  # its node lost
        ended = runner.wait(job.id, timeout=30)
        assert (ended.state, ended.attempts) == ("cancelled", 1), ended
    finally:
        runner.stop()


def test_a_tenant_whose_job_a_restarted_runner_attached_to_has_had_its_turn(ray_cluster, tmp_path):
    """reviewj40: turns live in memory; a runner attaching to a tenant's running job after a restart counted that tenant
    as never having started one, so its next queued job went before another tenant's (queued later) when a worker freed."""
    from training.jobs.ray_runner import RayJobRunner

    config = RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, workers=1)
    runner = RayJobRunner(config, kinds=TEST_KINDS)
    runner.start()
    try:
        a1 = runner.submit("work", {"tenant": "acme", "seconds": 6.0})
        wait_for(lambda: runner.get(a1.id).state == "running", 120, "never started")
    finally:
        runner.stop()  # a1 runs on, on Ray
    a2 = runner.submit("work", {"tenant": "acme"})
    b1 = runner.submit("work", {"tenant": "globex"})
    again = RayJobRunner(config, kinds=TEST_KINDS)
    again.start()
    try:
        for job in (a1, a2, b1):
            again.wait(job.id, timeout=90)
        started = sorted((again.get(j.id).started_at, name) for j, name in ((a2, "a2"), (b1, "b1")))
        assert [name for _, name in started] == ["b1", "a2"]
    finally:
        again.stop()


def test_a_job_ray_could_not_start_takes_no_turn(ray_cluster, tmp_path):
    """jobturn42: a job whose actor could not start its worker on Ray ("could not start on Ray") kept the `started_at` of
    its send to the cluster, so it counted as its tenant's turn though it never ran: globex's g1 went before acme's a1.
    The local runner's job that could not start takes none (no `started_at` recorded); now neither does Ray's."""
    from training.jobs.kinds import JobKind
    from training.jobs.ray_runner import RayJobRunner

    kinds = {**TEST_KINDS, "broken": JobKind("broken", lambda job, out: [str(tmp_path / "no-such-worker")])}
    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, workers=1), kinds=kinds)
    runner.start()
    try:
        g0 = runner.submit("work", {"tenant": "globex"})
        assert runner.wait(g0.id, timeout=120).state == "succeeded"
        a0 = runner.submit("broken", {"tenant": "acme"})
        failed = runner.wait(a0.id, timeout=120)
        assert failed.state == "failed" and failed.error.startswith("could not start on Ray: "), failed
        assert failed.started_at is None  # it never ran
    finally:
        runner.stop()
    g1 = runner.submit("work", {"tenant": "globex"})
    a1 = runner.submit("work", {"tenant": "acme"})
    runner.start()  # both queued before either starts
    try:
        done = {name: runner.wait(job.id, timeout=120) for name, job in (("g1", g1), ("a1", a1))}
    finally:
        runner.stop()
    assert sorted(done, key=lambda name: done[name].started_at) == ["a1", "g1"]


def test_a_job_that_waited_for_ray_to_place_it_records_when_it_began(ray_cluster, tmp_path):
    """jobturn42: `started_at` was when the job was sent to the cluster; b, sent beside a on a one-CPU cluster, waited
    there for a's CPU, and its record said it began before a ended (an audit checked against it withheld the groups of
    users who came while it waited, `Admin.keep_audit_members`). Now it is stamped once Ray placed the actor, before
    its worker is started: after a's worker ended, and before b's worker began."""
    from training.jobs.ray_runner import RayJobRunner

    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, workers=2), kinds=TEST_KINDS)
    a = runner.submit("work", {"seconds": 2.0})
    b = runner.submit("work", {"marker": str(tmp_path / "b-began")})
    runner.start()
    try:
        a_done, b_done = runner.wait(a.id, timeout=120), runner.wait(b.id, timeout=120)
    finally:
        runner.stop()
    assert (a_done.state, b_done.state) == ("succeeded", "succeeded")
    assert b_done.started_at > (tmp_path / "jobs" / f"{a.id}.out").stat().st_mtime  # a's result line, its worker's last
    assert b_done.started_at <= (tmp_path / "b-began").stat().st_mtime  # a safe bound: b's worker read nothing before it


def test_a_job_cancelled_while_ray_has_not_placed_it_ends_cancelled_without_running(ray_cluster, tmp_path):
    """jobturn42: its worker is started only once Ray placed its actor, so a cancel before that ends the job at once,
    its actor removed: b waits for a's one CPU, is cancelled, and ends while a still runs; its worker never ran."""
    from training.jobs.ray_runner import RayJobRunner

    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, workers=2), kinds=TEST_KINDS)
    a = runner.submit("work", {"seconds": 8.0})
    b = runner.submit("work", {"marker": str(tmp_path / "b-began")})
    runner.start()
    try:
        wait_for(lambda: runner.get(a.id).progress > 0 and runner.get(b.id).state == "running", 120, "never sent")
        runner.cancel(b.id)
        cancelled = runner.wait(b.id, timeout=30)
        assert runner.get(a.id).state == "running"  # b ended without waiting for a's CPU
        assert (cancelled.state, cancelled.started_at) == ("cancelled", None)
        wait_for(lambda: not _actor_alive(ray_cluster, b.id), 30, "its actor was left")
        assert runner.wait(a.id, timeout=120).state == "succeeded"
        assert not (tmp_path / "b-began").exists()  # its worker never ran
    finally:
        runner.stop()


def test_a_running_job_purged_on_ray_is_stopped_and_forgotten(ray_cluster, tmp_path):
    """jobturn42: `purge` (a user's DELETE, retention) was the local runner's, which kills `running.process`: on Ray it
    raised AttributeError ('_Attached' object has no attribute 'process') with the job no longer polled, its record
    left running and its worker running on. Now its worker and actor are stopped and every file of it goes."""
    marker = tmp_path / "marker"
    runner = make_runner(tmp_path / "jobs")
    try:
        job = runner.submit("work", {"seconds": 60.0, "tenant": "acme", "user": "ann", "marker": str(marker)})
        wait_for(lambda: marker.exists() and runner.get(job.id).progress > 0, 120, "never started")
        assert runner.purge(job.id).id == job.id
        assert runner.get(job.id) is None and not _workers_of(job.id)
        assert not list((tmp_path / "jobs").glob(f"*{job.id}*")) and not (tmp_path / "jobs" / "artifacts" / job.id).exists()
        wait_for(lambda: not _actor_alive(ray_cluster, job.id), 30, "its actor was left")
    finally:
        runner.stop()
        for pid in _workers_of(job.id):  # (what the runner left, before the fix)
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("released_before", ["no pid method", "pid not answered"])
def test_a_job_running_on_the_release_befores_actor_is_attached_to_after_an_upgrade(ray_cluster, tmp_path, released_before):
    """reviewj42: the release before session 42 started a job's worker with its actor, whose class has no `pid` (the
    probe a runner attaching after a restart sends). A service upgraded while such a job ran on Ray either failed to
    start (AttributeError from `_recover`: the actor's handle names no `pid`) or, where Ray sent the call to the actor,
    failed the job "could not start on Ray" and removed its actor while its worker (its own session) ran on, unwatched.
    Now the upgraded runner attaches to it as to any running job: one run of the worker, finished and recorded."""
    from training.jobs.ray_runner import NAMESPACE, JobProcess, RayJobRunner, actor_name

    if released_before == "no pid method":
        class Released41(JobProcess):  # (by value: Ray ships it to the actor) the handle names no `pid`
            pid = None
    else:
        class Released41(JobProcess):  # the handle names `pid`, as the upgraded driver's class does; the actor has none
            def pid(self):
                raise AttributeError("'JobProcess' object has no attribute 'pid'")

    config = RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1)
    marker = tmp_path / "marker"
    before = RayJobRunner(config, kinds=TEST_KINDS)  # its records, as the release before wrote them (never started)
    job = before.submit("work", {"seconds": 4.0, "marker": str(marker)})
    _, artifact, argv = before._worker_of(job)
    actor = ray_cluster.remote(Released41).options(name=actor_name(job.id), namespace=NAMESPACE, lifetime="detached",
                                                   num_cpus=1, max_restarts=0).remote()
    actor.start.remote(argv, before._worker_env(job, 1), str(config.cwd), str(before.store.path(job.id, "out")),
                       str(before.store.path(job.id, "log")), config.nice)  # started with its actor, as that release did
    before.store.put(msgspec.structs.replace(job, state="running", attempts=1, started_at=time.time(), artifact=str(artifact)))
    again = None
    try:
        wait_for(marker.exists, 120, "never started")
        again = RayJobRunner(config, kinds=TEST_KINDS)  # the upgraded service's
        again.start()
        done = again.wait(job.id, timeout=120)
        assert (done.state, done.attempts) == ("succeeded", 1), done
        assert marker.read_text() == "started\n"  # one run of the worker
        wait_for(lambda: not _actor_alive(ray_cluster, job.id), 30, "its actor was left")
    finally:
        if again is not None:
            again.stop()
        for pid in _workers_of(job.id):  # (what the runner left, before the fix)
            os.kill(pid, signal.SIGKILL)
        if _actor_alive(ray_cluster, job.id):
            ray_cluster.kill(actor)


def test_a_job_ray_had_not_placed_when_the_service_restarted_is_neither_lost_nor_left_waiting(ray_cluster, tmp_path):
    """reviewj42: a restarted runner waits 30 s for the actor of each job left running to answer; one Ray had not placed
    (no node with a free GPU here) did not, and its job was queued again while the actor kept its name: the job's
    next launch failed "could not start" (the name taken), and the actor stayed, to hold the GPU it waited for, idle,
    once placed. Now the actor, which runs no worker before it is placed, is removed and the job queued again: sent
    anew, it waits for its node, and a cancel ends it with nothing left on Ray. The 30 s are waited once for all the
    actors, not once each (two here: the runner's start took 30 s more before)."""
    from training.jobs.kinds import JobKind
    from training.jobs.ray_runner import RayJobRunner

    kinds = {**TEST_KINDS, "gpu": JobKind("gpu", work, gpus=1.0)}  # this cluster has no GPU: never placed
    config = RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, workers=2)
    runner = RayJobRunner(config, kinds=kinds)
    runner.start()
    try:
        jobs = [runner.submit("gpu", {"tenant": tenant}) for tenant in ("acme", "globex")]
        wait_for(lambda: all(runner.get(job.id).state == "running" for job in jobs), 120, "never sent")
    finally:
        runner.stop()  # their actors wait for a GPU
    again = RayJobRunner(config, kinds=kinds)  # waits for their actors' answers (30 s), as for any job left running
    again.start()
    try:
        wait_for(lambda: all(again.get(job.id).attempts == 2 for job in jobs), 30, "never sent again")
        wait_rounds(again, 3)  # polls since: none failed them (a sleep of 1 s: maybe none, on a busy machine)
        for job in jobs:
            waiting = again.get(job.id)
            assert waiting.state == "running" and waiting.error is None, waiting  # sent anew, waiting for a node
            assert any("queued again" in line for line in waiting.log_tail), waiting.log_tail
            assert again.cancel(job.id).cancel_requested
            assert again.wait(job.id, timeout=30).state == "cancelled"
        wait_for(lambda: not any(_actor_alive(ray_cluster, job.id) for job in jobs), 30, "an actor was left")
    finally:
        again.stop()


def test_a_record_a_full_disk_refused_is_written_once_there_is_room_on_ray_too(ray_cluster, tmp_path, monkeypatch):
    """reviewj42: the local runner writes a record a full disk refused (`_record` holds it in memory) at its next polls;
    the Ray runner's own `_poll` never did, so a job's final record stayed in memory only, its file saying `running`:
    the next start found its actor gone and ran the job again (and the restamp at placement, jobturn42, was lost too)."""
    from training.jobs.store import JobStore

    refused = disk_full_once(monkeypatch, "succeeded")
    folder = tmp_path / "jobs"
    runner = make_runner(folder)
    try:
        job = runner.submit("work", {})
        assert runner.wait(job.id, timeout=120).state == "succeeded"  # held in memory
        assert refused == [job.id]
        wait_for(lambda: JobStore(folder).get(job.id).state == "succeeded", 30, "its record on disk still says running")
    finally:
        runner.stop()


def test_a_failed_check_s_result_left_by_an_earlier_release_goes_at_the_start_on_ray_too(ray_cluster, tmp_path):
    """reviewad43: auditfail42's pass at the start (`_remove_unkept_results`) is called by the Ray runner's own
    `_recover` as well, which no test ran: left out there, an audit's report of users deleted since stayed."""
    from tests.unit.test_auditfail42_unkept_results import assert_unkept_results_removed, leave_unkept_results

    folder = tmp_path / "jobs"
    leave_unkept_results(folder)
    runner = make_runner(folder)
    try:
        assert_unkept_results_removed(runner, folder)
    finally:
        runner.stop()


def test_a_job_ray_cannot_place_gives_its_worker_back_and_waits_queued_saying_for_what(ray_cluster, tmp_path):
    """jobs43: a job sent to Ray held one of the runner's `workers` until Ray placed it: acme's job asking for a GPU no
    node has (or every GPU busy) kept globex's CPU-only job queued behind it for good, with one worker. Now, placed
    nowhere in `place_wait_s`, it is queued again, its actor removed and its worker free, its record as before the send
    (no turn taken, no attempt), its log tail saying what it waits for; it is sent again later, and ends when cancelled."""
    from training.jobs.kinds import JobKind
    from training.jobs.ray_runner import WAITING, RayJobRunner

    kinds = {**TEST_KINDS, "gpu": JobKind("gpu", work, gpus=1.0)}  # this cluster has no GPU: never placed
    exited: list[str] = []
    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, workers=1), kinds=kinds, place_wait_s=4.0,
                          on_exit=exited.append)  # a CPU job's actor starts in 1-2 s here, loaded
    gpu = runner.submit("gpu", {"tenant": "acme"})
    runner.start()
    try:
        wait_for(lambda: runner.get(gpu.id).state == "running", 60, "never sent")
        cpu = runner.submit("work", {"tenant": "globex"})
        done = runner.wait(cpu.id, timeout=60)  # before: still queued, the one worker held by the GPU job
        assert done.state == "succeeded", done
        seen: list = []
        wait_for(lambda: seen.append(runner.get(gpu.id)) or seen[-1].state == "queued", 30, "never given back")
        waiting = seen[-1]
        assert (waiting.attempts, waiting.started_at, waiting.artifact, waiting.error) == (0, None, None, None), waiting
        assert waiting.log_tail[-1].startswith(WAITING + "Ray had not started it in 4 s (no node had what it asks for free")
        assert "GPU 1 (the cluster has 0, 0 free)" in waiting.log_tail[-1], waiting.log_tail
        assert runner.store.turn("acme") == 0 < runner.store.turn("globex")  # it took no turn while it waited
        wait_for(lambda: runner.get(gpu.id).state == "running", 60, "never sent again")  # 12 s after its give-back
        runner.cancel(gpu.id)  # sent (waiting to be placed) or given back again meanwhile: it ends at once
        assert runner.wait(gpu.id, timeout=30).state == "cancelled"
        assert gpu.id in exited  # told though no worker ran (a DELETE's note for it goes)
        wait_for(lambda: not _actor_alive(ray_cluster, gpu.id), 30, "its actor was left")
    finally:
        runner.stop()


def test_a_tenants_many_jobs_ray_cannot_place_take_turns_with_other_tenants_jobs(ray_cluster, tmp_path):
    """reviewjo43: a job given back (`_give_back`) had its record, and so its tenant's turn, put back to before its send,
    and the tenant's next queued job went first again: acme's four jobs asking for a GPU no node has were sent one after
    the other, each holding the one worker `place_wait_s`, the first sent again as the fourth was given back, and
    globex's CPU job, queued after them, was never sent. Now a tenant whose job was given back ranks, while the runner
    runs, as if the send had been its turn: globex's job goes next."""
    from training.jobs.kinds import JobKind
    from training.jobs.ray_runner import PLACE_RETRY, RayJobRunner

    kinds = {**TEST_KINDS, "gpu": JobKind("gpu", work, gpus=1.0)}  # this cluster has no GPU: never placed
    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, workers=1), kinds=kinds, place_wait_s=4.0)
    gpus = [runner.submit("gpu", {"tenant": "acme", "i": i}) for i in range(PLACE_RETRY + 1)]  # each sent while the others wait
    cpu = runner.submit("work", {"tenant": "globex"})
    runner.start()
    try:
        done = runner.wait(cpu.id, timeout=60)  # before: still queued, acme's jobs sent in turn for good
        assert done.state == "succeeded", done
    finally:
        for job in gpus:
            runner.cancel(job.id)
        for job in gpus:
            assert runner.wait(job.id, timeout=30).state == "cancelled"
        runner.stop()



def test_queued_jobs_start_on_ray_in_the_local_runners_order_audits_one_start_ahead(ray_cluster, tmp_path):
    """review breakB62: the Ray runner inherits `_turn` (turns per tenant, an audit ahead of its tenant's training for one
    start in a row), but its start is stamped again once Ray placed the actor (a second count in the store's turns):
    the order of tests/e2e/test_jobs40_turns.py holds on Ray too."""
    from training.jobs.kinds import JobKind
    from training.jobs.ray_runner import RayJobRunner

    kinds = {**TEST_KINDS, "audit": JobKind("audit", work, priority=0)}
    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, workers=1), kinds=kinds)
    arrivals = [("a_train", "work", "acme"), ("a_audit1", "audit", "acme"), ("a_audit2", "audit", "acme"),
                ("a_audit3", "audit", "acme"), ("g_train1", "work", "globex"), ("g_train2", "work", "globex")]
    jobs = {name: runner.submit(kind, {"tenant": tenant}) for name, kind, tenant in arrivals}
    runner.start()  # all queued before the first is sent
    try:
        done = {name: runner.wait(job.id, timeout=120) for name, job in jobs.items()}
    finally:
        runner.stop()
    assert all(j.state == "succeeded" for j in done.values()), done
    assert sorted(done, key=lambda name: done[name].started_at) == ["a_audit1", "g_train1", "a_train", "g_train2", "a_audit2", "a_audit3"]

def test_a_job_whose_actor_always_starts_slower_than_the_place_wait_runs_at_a_later_send(ray_cluster, tmp_path, caplog):
    """reviewjo43 left it: a job whose actor takes longer to start than `place_wait_s` was given back at each send
    (Ray placed it, its process started, its first call unanswered yet) and sent again with the same wait, for good:
    it never ran. Now Ray's actor table (a pid while it is created) or the cluster's free CPU (its actor held it) tells
    it apart from one Ray placed nowhere, and its next send waits twice as long: here 1 s, then 2 s, then 4 s."""
    import logging

    from training.jobs.ray_runner import JobProcess, RayJobRunner

    class SlowToStart(JobProcess):  # an actor whose start takes 3 s (a node pulling an image, a loaded machine)
        def __init__(self) -> None:
            time.sleep(3.0)
            super().__init__()

    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, workers=1), kinds=TEST_KINDS, place_wait_s=1.0)
    runner._actor_class = ray_cluster.remote(SlowToStart)
    job = runner.submit("work", {"tenant": "acme"})
    with caplog.at_level(logging.INFO, logger="training.jobs.ray_runner"):
        runner.start()
        try:
            done = runner.wait(job.id, timeout=90)  # before: given back every second, for good
        finally:
            runner.stop()
    assert (done.state, done.attempts) == ("succeeded", 1), done
    notes = [r.getMessage() for r in caplog.records if "waiting for resources" in r.getMessage()]
    assert notes and "(Ray placed it, its actor slow to start)" in notes[0] and "waiting 2 s to be placed" in notes[0], notes


def test_a_job_given_back_is_sent_again_once_what_it_waits_for_frees_up_not_after_its_whole_hold(ray_cluster, tmp_path):
    """reviewjo43 left it: a job given back waited out PLACE_RETRY times `place_wait_s` however soon what it asked for
    freed up: b, waiting for a's one CPU here, was sent again 15 s after its give-back though a ended 3-4 s after it. Now a
    job given back when the cluster had not what it asks for free is sent again (a worker free, its turn come) once it
    has: b's worker begins well before its hold is out, however loaded the machine (before, never before it)."""
    from training.jobs.ray_runner import PLACE_RETRY, WAITING, RayJobRunner

    place_wait_s = 5.0
    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1, workers=2), kinds=TEST_KINDS,
                          place_wait_s=place_wait_s)
    a = runner.submit("work", {"tenant": "acme", "seconds": 8.0})
    runner.start()
    try:
        wait_for(lambda: runner.get(a.id).progress > 0, 120, "a never ran")  # a holds the cluster's one CPU
        b = runner.submit("work", {"tenant": "globex"})
        wait_for(lambda: runner.get(b.id).log_tail[-1:] != [] and runner.get(b.id).log_tail[-1].startswith(WAITING), 60,
                 "b never given back")
        gave_back_at = time.time()
        assert runner.get(a.id).state == "running"  # b was given back while a held the CPU
        assert "no node had what it asks for free" in runner.get(b.id).log_tail[-1]  # its wait stays 5 s
        a_done, b_done = runner.wait(a.id, timeout=120), runner.wait(b.id, timeout=120)
    finally:
        runner.stop()
    assert (a_done.state, b_done.state) == ("succeeded", "succeeded"), (a_done, b_done)
    assert b_done.started_at < gave_back_at + PLACE_RETRY * place_wait_s  # before: 15 s after its give-back at the earliest


def _first_give_back(runner, job_id: str) -> str:
    """The log tail's line of `job_id`'s first give-back (`WAITING`), waited for."""
    from training.jobs.ray_runner import WAITING

    def note():
        return next((line for line in runner.get(job_id).log_tail if line.startswith(WAITING)), None)

    wait_for(lambda: note() is not None, 60, "never given back")
    return note()


def test_without_rays_actor_table_a_job_placed_nowhere_keeps_its_wait_and_a_slow_start_still_runs(ray_cluster, tmp_path, monkeypatch):
    """reviewry44: `ray._private.state.actors` is private; where another Ray moved it (raises) or changed its row (no
    `Pid`), the cluster's free resources still tell: a job Ray placed nowhere (a GPU this cluster lacks) keeps
    `place_wait_s`, as before ray44, and a slow-starting actor still runs at a later send."""
    from ray._private import state

    from training.jobs.kinds import JobKind
    from training.jobs.ray_runner import JobProcess, RayJobRunner

    class SlowToStart(JobProcess):
        def __init__(self) -> None:
            time.sleep(3.0)
            super().__init__()

    for broken in (lambda **_: (_ for _ in ()).throw(AttributeError("moved")), lambda **_: {"State": "PENDING_CREATION"}):
        monkeypatch.setattr(state, "actors", broken)
        kinds = {**TEST_KINDS, "gpu": JobKind("gpu", work, gpus=1.0)}  # this cluster has no GPU: never placed
        runner = RayJobRunner(RunnerConfig(folder=tmp_path / f"jobs{id(broken)}", poll_seconds=0.1, workers=1), kinds=kinds,
                              place_wait_s=1.0)
        gpu = runner.submit("gpu", {"tenant": "acme"})
        runner.start()
        try:
            note = _first_give_back(runner, gpu.id)
            runner.cancel(gpu.id)
            runner._actor_class = ray_cluster.remote(SlowToStart)
            slow = runner.wait(runner.submit("work", {"tenant": "globex"}).id, timeout=90)
        finally:
            runner.stop()
        assert "(no node had what it asks for free)" in note and "waiting 1 s to be placed" in note, note
        assert (slow.state, slow.attempts) == ("succeeded", 1), slow


def test_a_ray_worker_that_writes_its_last_line_just_before_it_exits_has_it_in_its_error(ray_cluster, tmp_path):
    """reviewry44: as the local runner's (tests/unit/test_reviewry44_last_log_line.py): the log was read before the actor
    was asked whether the worker had exited, so a traceback's last line written in between was not in the error."""
    from training.jobs.ray_runner import RayJobRunner

    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.1), kinds=TEST_KINDS)
    job = runner.submit("work", {"crash": True})
    read_log = runner._read_log

    def read_then_exit(job_id: str):  # the worker writes what is left and exits between the runner's read and its poll
        read = read_log(job_id)
        wait_for(lambda: ray_cluster.get(runner._running[job_id].actor.poll.remote()) is not None, 60, "never exited")
        return read

    runner._read_log = read_then_exit
    runner.start()
    try:
        failed = runner.wait(job.id, timeout=90)
    finally:
        runner.stop()
    assert failed.state == "failed" and failed.error == "exit code 1: RuntimeError: the worker fell over", failed.error
