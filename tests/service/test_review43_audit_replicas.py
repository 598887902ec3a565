"""A running audit is shared with an identical audit request only where this service moves every comparison into the
table itself: with replicas another one moves its own feedback in, and this one is not told (review of admin43)."""

from __future__ import annotations

import time

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import start_replicas
from training.jobs.record import Job


@pytest.mark.slow  # two services started (~10 s): make test-all runs it
def test_a_poll_on_one_replica_after_feedback_another_replica_moved_queues_an_audit_that_reads_it(tmp_path, tiny_generator_dir,
                                                                                                 tiny_pal_dir, minilm):
    """Before: replica a gave its audit running since before replica b moved acme's feedback into the shared table (a
    knew only of its own moves): the report the poll waited for never held that feedback, and polling again gave the
    same audit until it ended."""
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                         deletion_sweep_s=3600)
    with first, second, a.client("admin") as admin_a, b.client("acme") as acme_b:
        params = {"group_by": "segment", "tenant": "acme", "min_group_size": 1, "min_comparisons": 1}
        now = time.time()
        state = first.server.config.app.state.admin
        running = Job(id="audit-running-on-replica-a", kind="audit", params=params | {"store": a.runtime.settings.lancedb_uri},
                      state="running", created_at=now, started_at=now)
        state.runner.store.add(running)
        try:
            body = {"type": "comparison", "user": "ann", "prompt": "Tea?", "chosen": "Tea.", "rejected": "Water.",
                    "attributes": {"segment": "east"}}
            assert acme_b.post("/v1/feedback", json=body).status_code == 201
            b.runtime.ingest.flush()  # in the shared table, after a's audit started
            polled = admin_a.get("/admin/audits/fairness", params=params | {"wait": 0})
            assert polled.status_code == 202, polled.text
            assert polled.json()["job"]["id"] != running.id, "replica a's audit started before b moved the feedback in"
        finally:
            state.runner.purge(running.id)
