"""The Ray job runner as `pluralign serve` builds it with `PLURALIGN_JOB_RUNNER=ray` and no `PLURALIGN_RAY_ADDRESS`:
the runner starts the local Ray itself (ops42).

Slow-marked (`make test-scaleout`): starting Ray takes ~10-20 s here."""

from __future__ import annotations

import re
import signal
import time

import psutil
import pytest

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.runner import JOB_ENV, RunnerConfig

pytestmark = pytest.mark.slow


def _sigterm_of_the_service(*_) -> None:  # stands for uvicorn's handler, which a graceful stop needs
    raise AssertionError("not called")


@pytest.fixture(scope="module")
def own_ray(tmp_path_factory):
    """(runner, SIGTERM handler after its start): a runner whose construction started the local Ray."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    from training.jobs.ray_runner import RayJobRunner

    before = signal.signal(signal.SIGTERM, _sigterm_of_the_service)
    runner = None
    try:
        runner = RayJobRunner(RunnerConfig(folder=tmp_path_factory.mktemp("ops42-ray") / "jobs", poll_seconds=0.1),
                              address=None, kinds=TEST_KINDS)
        handler = signal.getsignal(signal.SIGTERM)
        runner.start()
        yield runner, handler
    finally:
        if runner is not None:
            runner.stop()
        ray.shutdown()
        signal.signal(signal.SIGTERM, before)


def test_starting_a_local_ray_leaves_the_services_sigterm_handler_in_place(own_ray):
    """Before: `ray.init` put its own handler (`sys.exit(15)`) in place of uvicorn's, so a SIGTERM to `pluralign serve`
    with the Ray runner ended it with a traceback and status 134 instead of the graceful stop's 0."""
    _, handler = own_ray
    assert handler is _sigterm_of_the_service


def _workers(job_id: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(JOB_ENV) == job_id:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_worker_whose_actor_died_stops_with_it(own_ray):
    """An actor's process gone at once (SIGKILL: the OOM killer, its node lost, the local Ray of a service that ended)
    ends its worker. Before, the worker (in a session of its own) trained on, orphaned, while the runner queued the job
    again: two workers on one job, writing one artifact folder. The runner sees the actor gone and runs the job again,
    a second attempt in a new actor, as deploy/README.md's "A lost Ray node" says (breakD62: that part had no test)."""
    runner, _ = own_ray
    job = runner.submit("work", {"seconds": 120})
    try:
        _wait_for(lambda: runner.get(job.id).progress > 0, 120, "never reported progress")
        [worker] = _workers(job.id)
        runner._may_start = lambda job: False  # queued again, it stays queued until its record is read
        worker.parent().kill()  # the actor's process
        try:
            worker.wait(timeout=20)
        except psutil.TimeoutExpired:
            worker.kill()
            pytest.fail("the worker of a killed actor ran on")
        # and records why (left63: deploy/README.md said so, untested), in its log tail and, once it runs again, as the
        # first line of the next attempt's log (before, that log began with its own line: the why was gone)
        _wait_for(lambda: runner.get(job.id).state == "queued", 120, "not queued again")
        why = runner.get(job.id).log_tail[-1]
        assert re.fullmatch(r"its Ray actor (died \(\w+\)|is gone \(attempt 1\)); queued again", why), runner.get(job.id).log_tail
        del runner._may_start
        _wait_for(lambda: runner.get(job.id).attempts == 2 and runner.get(job.id).state == "running", 120, "not run again")
        _wait_for(lambda: [w.pid for w in _workers(job.id)] not in ([], [worker.pid]), 120, "no worker of the second attempt")
        first, second = runner.store.path(job.id, "log").read_text().splitlines()[:2]
        assert first == why and second.startswith("on Ray (") and ", attempt 2: $" in second, (first, second)
    finally:
        runner.__dict__.pop("_may_start", None)
        runner.cancel(job.id)
        runner.wait(job.id, timeout=60)
