"""retract56: a row taken back is kept by the population snapshot (and the PAL model trained on it) of a job queued
before its retraction, as docs/api.md says ("Not rewritten at once ... until the next population job"), and the next
population job's snapshot no longer holds it: that job trains without it. A real service over HTTP, real LanceDB in a
temp dir, two real tiny PAL jobs. Slow (two PAL jobs, ~12-16 s each): `make test-artifacts`."""

from __future__ import annotations

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import give_comparisons, run_job

MARK = "misclick-retract56"
PAL = {"k": 2, "epochs": 2, "latent_dim": 8, "hidden": 16}


def snapshots(data) -> dict:
    """Each population snapshot in the data folder -> whether it holds the misclick."""
    return {p.name: MARK.encode() in p.read_bytes() for p in sorted(data.rglob("population/comparisons-*.jsonl"))}


@pytest.mark.slow
def test_the_next_population_job_trains_without_a_row_taken_back(serve):
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        give_comparisons(acme, "ann", "tea", n=6)  # PAL leaves out a user of fewer than 5
        give_comparisons(acme, "bob", "coffee", n=6)
        give_comparisons(acme, "cy", "tea", n=6)
        r = acme.post("/v1/feedback", json={"type": "comparison", "user": "ann", "prompt": f"A drink at noon? {MARK}",
                                            "chosen": f"Some coffee. {MARK}", "rejected": "Some tea."})
        assert r.status_code == 201, r.text
        oops = r.json()["stored"][0]
        run_job(admin, "pal", PAL)
        before = snapshots(data)
        assert list(before.values()) == [True]  # the job queued before the retraction trained on it

        r = acme.delete(f"/v1/users/ann/preferences/{oops}")
        assert r.status_code == 200, r.text
        assert snapshots(data) == before  # kept until the next population job (docs/api.md)

        run_job(admin, "pal", PAL)
        after = snapshots(data)
        new = [name for name in after if name not in before]
        assert len(new) == 1 and after[new[0]] is False, after  # the next job's snapshot: without it
