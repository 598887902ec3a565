"""Review of session locks52 on Ray: the job runner puts a promoted job into service (`on_promote`) on a thread of its
own, without its lock (`LocalJobRunner._promotions_of`), and `RayJobRunner` inherits it. What that keeps on Ray (a local
Ray of one CPU, real workers in actors), as tests/e2e/test_locks52_promotion.py shows it for local workers: another job
is placed, runs and ends while a promotion waits, and a cancel of the promoting job waits for it and finds it ended.

Slow-marked (`make test-scaleout`): starting Ray takes ~10-20 s here."""

from __future__ import annotations

import pytest

from tests.e2e.test_jobs53_population_order import KINDS as POPULATION_KINDS
from tests.e2e.test_jobs53_population_order import check_the_population_job_that_ended_last_is_served
from tests.e2e.test_locks52_promotion import (
    KINDS,
    HeldPromotions,
    check_a_promotion_waiting_holds_up_no_other_job_and_a_cancel_of_its_job_waits_for_it,
)
from tests.e2e.test_ray_runner import ray_cluster  # noqa: F401 (the module's Ray, started once)
from training.jobs.runner import RunnerConfig

pytestmark = pytest.mark.slow


def ray_runner(tmp_path, on_promote: HeldPromotions):
    from training.jobs.ray_runner import RayJobRunner

    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), kinds=KINDS, on_promote=on_promote)
    on_promote.runner = runner
    runner.start()
    return runner


def test_on_ray_a_promotion_waiting_holds_up_no_other_job_and_a_cancel_of_its_job_waits_for_it(ray_cluster, tmp_path):  # noqa: F811
    promotions = HeldPromotions({"first"})
    check_a_promotion_waiting_holds_up_no_other_job_and_a_cancel_of_its_job_waits_for_it(ray_runner(tmp_path, promotions), promotions, 120)



def test_on_ray_the_population_job_whose_worker_ended_last_is_the_one_served(ray_cluster, tmp_path):  # noqa: F811
    """Session jobs53 on Ray (tests/e2e/test_jobs53_population_order.py for local workers): a `pal` and an `em` job's
    promotions go one at a time in the order their workers ended, so the `em` job, ended last, is swapped in last."""
    from training.jobs.ray_runner import RayJobRunner

    promotions = HeldPromotions({"pal"})
    runner = RayJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=2), kinds=POPULATION_KINDS,
                          on_promote=promotions)
    promotions.runner = runner
    runner.start()
    check_the_population_job_that_ended_last_is_served(runner, promotions, 120)
