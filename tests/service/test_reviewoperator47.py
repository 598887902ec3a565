"""Review of operator47: with replicas a population job is kept, not served, and deploy/README.md tells the operator
to copy its artifact into PLURALIGN_PAL_DIR and restart every replica. That artifact holds a per-user row of every
training user; a DELETE must take the user out of the model served from PLURALIGN_PAL_DIR too."""

from __future__ import annotations

import logging
import shutil

import pytest

from pluralign.reward.pal_checkpoint import load_pal
from service.admin.controllers import ADMIN_HANDLERS
from service.runtime import PROMOTED_PAL
from tests.service.test_break20_delete import GONE, MARKER, files_holding, give_comparisons, run_job
from tests.service.tiny import start_service
from training.jobs.record import Job
from training.jobs.runner import NotServed


@pytest.mark.slow  # ~20 s (a pal job and two starts): kept out of the default suite for its time (make test-all runs it)
def test_a_delete_takes_the_user_out_of_a_population_model_served_from_the_pal_dir(
    tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
):
    """A pal job's artifact copied into PLURALIGN_PAL_DIR and the service restarted without `pal-promoted/` (what
    deploy/README.md says to do with replicas): the user's DELETE rewrites that checkpoint without their row (until
    this review it rewrote only `<data_dir>/pal-promoted`, and the served checkpoint kept the deleted user's weights)."""
    data, pal_dir = tmp_path / "data", tmp_path / "shared-pal"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        give_comparisons(acme, GONE, "tea", MARKER)
        give_comparisons(acme, "ann", "coffee")
        pal = run_job(admin, "pal", {"k": 2, "epochs": 2, "latent_dim": 8, "hidden": 16})
    shutil.copytree(data / "jobs" / "artifacts" / pal["id"], pal_dir)  # the documented procedure, stopped
    shutil.rmtree(data / PROMOTED_PAL)
    server, svc = start_service(data, tiny_generator_dir, pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        assert svc.runtime.rewards.note == f"loaded from {pal_dir}", svc.runtime.rewards.note
        assert sorted(load_pal(pal_dir)[1].users()) == ["acme/ann", f"acme/{GONE}"]
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200
        assert files_holding(pal_dir, MARKER, GONE) == []
        assert sorted(load_pal(pal_dir)[1].users()) == ["acme/ann"]
        assert acme.get("/v1/users/ann").status_code == 200


def test_a_replica_that_serves_its_own_promoted_population_model_says_so_at_start(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """A `pal-promoted/` in a replica's data folder (promoted there by a release before operator47, or while it ran
    alone) is served over PLURALIGN_PAL_DIR at every start, and the other replicas serve another model: the start
    says so in a WARNING naming both folders and what to do (until this review only deploy/README.md did)."""
    from tests.service.test_break20_delete_b import logged

    data = tmp_path / "a"
    shutil.copytree(tiny_pal_dir, data / PROMOTED_PAL)
    with logged("pluralign.service", logging.WARNING) as records:
        server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                    store_uri=str(tmp_path / "shared-lancedb"), replicas=2, replica_index=0, store_sync_ms=200)
        with server:
            assert svc.runtime.rewards.note == f"loaded from {data / PROMOTED_PAL}", svc.runtime.rewards.note  # served, as before
            # and a population job's artifact is not put into service by this replica (the replica count it reads is the
            # service's: the default suite had no test of it, test_deletions_replicas is slow-marked)
            admin, served = svc.server.server.config.app.state.admin, svc.runtime.rewards
            job = Job(id="pal-1", kind="pal", artifact=str(tiny_pal_dir), created_at=0.0)
            with pytest.raises(NotServed, match="PLURALIGN_REPLICAS=2"):
                admin.put_into_service(job, "pal")
            assert svc.runtime.rewards is served
    said = [text for text in records if str(data / PROMOTED_PAL) in text]
    assert said and "PLURALIGN_REPLICAS=2" in said[0] and str(tiny_pal_dir) in said[0], records
