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
