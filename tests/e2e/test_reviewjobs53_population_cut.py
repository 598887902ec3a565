"""Review of jobs53: a cut `pal` or `em` promotion that does not finish at the next start puts back the population model
promoted last (`LocalJobRunner._named_last`). It chose by `promoted_at` in promotions.json; but the entry a cut
promotion's key names again (`_served_before`) carries the job's `finished_at` (its worker's end, before its promotion)
as `promoted_at`, so a `pal` job promoted after an `em` job, whose worker's end the runner noted before that `em`
promotion began (both workers seen ended at one poll, `em` first), counted as promoted before it: the `em` model was
put back over the `pal` one served. Now the entries are ordered by their jobs' ends (`finished_at`), the order their
promotions are made in (`_queue_promotion`).

Real worker processes (test_jobs53_population_order's small kinds, the `pal` worker a moment slower) and a child runner
SIGKILLed once promotions.json names the cut job, as there."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from tests.e2e.test_jobs53_population_order import cut_then_refused
from tests.e2e.test_train39_promotion_cut import TRAIN, put_into_service
from training.jobs import kinds as real
from training.jobs.runner import LocalJobRunner, RunnerConfig

SLOW_TRAIN = "import time, json, sys; time.sleep(json.loads(sys.argv[1]).get('sleep', 0))\n" + TRAIN


def slow_train(job, out):
    return [sys.executable, "-c", SLOW_TRAIN, json.dumps(job.params), str(out)]


KINDS = {name: dataclasses.replace(real.KINDS[name], command=slow_train, typed=False) for name in ("pal", "em")}


@pytest.mark.slow  # ~4 s (a poll of 1.5 s, a child runner killed, a restart): `make test-artifacts`
def test_a_cut_pal_promotion_that_fails_when_finished_puts_back_the_pal_model_promoted_after_an_em_one_that_ended_first(tmp_path):
    folder, served = tmp_path / "jobs", tmp_path / "served"
    # a poll of 1.5 s: both workers (em's quick, pal's 0.3 s slower) are seen ended at one poll, em's first
    runner = LocalJobRunner(RunnerConfig(folder=folder, poll_seconds=1.5, workers=2), KINDS, on_promote=put_into_service(served))
    runner.start()
    try:
        em = runner.submit("em", {"model": "em", "accuracy": 0.6})
        pal = runner.submit("pal", {"model": "first", "accuracy": 0.6, "sleep": 0.3})
        done = [runner.wait(job.id, timeout=60) for job in (em, pal)]
    finally:
        runner.stop()
    assert [job.promoted for job in done] == [True, True] and (served / "model.txt").read_text() == "first"
    em_done, pal_done = done
    # the case: the pal job's end was noted before the em job's promotion (its promoted_at) began
    assert pal_done.finished_at < runner.promotions.served("em").promoted_at < runner.promotions.served("pal").promoted_at, done
    cut_then_refused(folder, served)
    assert (served / "model.txt").read_text() == "first", "the em model promoted before the pal one was put back over it"
