"""Session jobs53: a `pal` job and an `em` job both put the one population model into service (`Runtime.swap_rewards`),
under promotion keys of their own (`pal`, `em`: each compared with what its key served). Since locks52 each key's
promotions ran on a thread of their own, so the two kinds' swaps raced: the model served was whichever swap came
last, not the one of the job that ended last. Now the promotions of every kind that puts the same thing into service
(`JobKind.served_model`) go one at a time, in the order their workers ended, as those of one key do: the model served
is the one of the population job whose worker ended last (of those promoted), as before locks52 (docs/admin.md).

Real worker processes of a small job kind (test_train39_promotion_cut's: a few lines of Python writing a model file)
under the real `pal` and `em` kinds' promotion keys and `served_model`. The race is made to go the wrong way every
time: the `pal` job's swap is held (as its copy into place may take a while) until the `em` job, ended after it, is
either put into service (the race lost) or waits behind it. The Ray runner's test (which inherits this) is in
tests/e2e/test_reviewlocks52_ray_promotion.py."""

from __future__ import annotations

import dataclasses
import time

from tests.e2e.test_locks52_promotion import HeldPromotions
from tests.e2e.test_train39_promotion_cut import train
from training.jobs import kinds as real
from training.jobs.runner import LocalJobRunner, RunnerConfig

# the real kinds' promotion keys and what they put into service, with a worker that writes its model at once
KINDS = {name: dataclasses.replace(real.KINDS[name], command=train, typed=False) for name in ("pal", "em")}


def check_the_population_job_that_ended_last_is_served(runner, promotions: HeldPromotions, wait_s: float) -> None:
    """On a started `runner` (two workers) whose `promotions` hold "pal": a `pal` job ends and its swap is held; an `em`
    job ends after it; once the `em` job's promotion is done (the race lost) or waits behind the `pal` job's, the held
    swap goes on. The model served last must be the `em` job's, and each key names its own job."""
    try:
        pal = runner.submit("pal", {"model": "pal", "accuracy": 0.6})
        assert promotions.entered.wait(wait_s), "the pal job's promotion never began"
        em = runner.submit("em", {"model": "em", "accuracy": 0.7})

        def em_served_or_waiting_behind_pal() -> bool:
            with runner._lock:
                behind = any([due.job.id for due in queue][:2] == [pal.id, em.id] for queue in runner._due.values())
            return behind or "em" in promotions.served

        deadline = time.monotonic() + wait_s
        while not em_served_or_waiting_behind_pal():
            assert time.monotonic() < deadline, f"the em job neither served nor waiting: {runner.get(em.id)}"
            time.sleep(0.02)
        promotions.go.set()
        done = [runner.wait(job.id, timeout=wait_s) for job in (pal, em)]
    finally:
        promotions.go.set()
        runner.stop()
    assert [(job.state, job.promoted) for job in done] == [("succeeded", True)] * 2, done
    assert promotions.served == ["pal", "em"], f"swapped in last: {promotions.served[-1]}, not the job that ended last"
    assert runner.promotions.served("pal").job_id == pal.id and runner.promotions.served("em").job_id == em.id


def test_the_population_job_whose_worker_ended_last_is_the_one_served(tmp_path):
    promotions = HeldPromotions({"pal"})
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=2), KINDS, on_promote=promotions)
    promotions.runner = runner
    runner.start()
    check_the_population_job_that_ended_last_is_served(runner, promotions, 30)


CUT_CHILD = r"""
import os, signal, sys, pathlib
from training.jobs.promotion import Promotions
from training.jobs.runner import LocalJobRunner, RunnerConfig
from tests.e2e.test_jobs53_population_order import KINDS
from tests.e2e.test_train39_promotion_cut import put_into_service

folder, served = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
consider = Promotions.consider

def considered(self, *args, **kwargs):
    out = consider(self, *args, **kwargs)
    print("killed after promotions.json named it", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

Promotions.consider = considered
runner = LocalJobRunner(RunnerConfig(folder=folder, poll_seconds=0.05), KINDS, on_promote=put_into_service(served))
runner.start()
runner.wait(runner.submit("pal", {"model": "second", "accuracy": 0.8}).id, timeout=60)
"""


def test_a_cut_pal_promotion_that_fails_when_finished_puts_back_the_em_model_promoted_after_the_pal_one_before_it(tmp_path):
    """A `pal` job promoted, then an `em` job (served last); a second `pal` job's promotion is cut short by a kill once
    promotions.json named it, and putting it into service fails at the restart. What is put into service again is what
    was served before it: the `em` model, promoted last of the population models. Before, the `pal` key's entry alone
    was looked at (`_serve_named_again`): the first `pal` model was swapped in over the `em` one."""
    from tests.e2e.test_train39_promotion_cut import put_into_service

    folder, served = tmp_path / "jobs", tmp_path / "served"
    runner = LocalJobRunner(RunnerConfig(folder=folder, poll_seconds=0.05), KINDS, on_promote=put_into_service(served))
    runner.start()
    try:
        done = [runner.wait(runner.submit(kind, {"model": model, "accuracy": 0.6}).id, timeout=60)
                for kind, model in (("pal", "first"), ("em", "em"))]
    finally:
        runner.stop()
    assert [job.promoted for job in done] == [True, True] and (served / "model.txt").read_text() == "em"
    cut_then_refused(folder, served)
    assert (served / "model.txt").read_text() == "em", "a pal model promoted before the em one was put back over it"


def cut_then_refused(folder, served):
    """A child runner on `folder` SIGKILLed mid-promotion of the pal job "second" (`CUT_CHILD`), then a runner whose
    promotion of that job fails (no room): the job, succeeded and not promoted; the test reads what `served` holds."""
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.e2e.test_train39_promotion_cut import put_into_service
    from training.jobs.store import JobStore

    run = subprocess.run([sys.executable, "-c", CUT_CHILD, str(folder), str(served)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == -9 and "killed after" in run.stdout, (run.returncode, run.stdout, run.stderr[-2000:])
    cut = next(j for j in JobStore(folder).all() if j.params["model"] == "second")
    put = put_into_service(served)

    def refused(job, key):
        if job.id == cut.id:
            raise OSError(28, "No space left on device", str(served))
        put(job, key)

    again = LocalJobRunner(RunnerConfig(folder=folder, poll_seconds=0.05), KINDS, on_promote=refused)
    again.start()
    try:
        job = again.wait(cut.id, timeout=60)
    finally:
        again.stop()
    assert job.state == "succeeded" and job.promoted is False, job
    return job
