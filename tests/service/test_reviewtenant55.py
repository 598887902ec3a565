"""Review of session tenant55 (an audit's flush of one tenant's backlog giving the other tenants turns).

A flush of every tenant (`Ingestor.flush()`: `Runtime.wait_for_background`, the population snapshot, an audit of every
tenant) returned, since tenant55, as soon as no row was pending, before the `on_moved` hooks of the worker's batch under
way had run: `wait_for_background` ("every refit queued so far has run") then waited for a refit queue that did not
hold those users' refits yet."""

from __future__ import annotations

import threading
import time

from tests.service.test_feedback_log import HashEncoder, feedback
from tests.stores import ingesting, wait_for


def test_a_flush_of_every_tenant_returns_once_the_hooks_of_the_workers_batch_under_way_ran(tmp_path):
    """The worker commits a batch and runs its `on_moved` hook (held here, as a slow hook would be): a flush of every
    tenant called meanwhile finds nothing pending, and must still return only after that hook, as it did before
    tenant55 (the worker holds its lock over the commit and the hooks). Before the fix it returned at once."""
    entered, release, hooked = threading.Event(), threading.Event(), []

    def on_moved(rows):
        entered.set()
        release.wait(30)
        hooked.extend(rows)

    with ingesting(tmp_path, HashEncoder(), on_moved=on_moved) as (_, ingest):
        ingest.submit(feedback("ann", 0, tenant="acme"))
        wait_for(entered.is_set)
        assert ingest.pending_rows() == 0  # committed and out of the log: only its hook still runs
        done: list[float] = []
        flushing = threading.Thread(target=lambda: (ingest.flush(), done.append(time.monotonic())), daemon=True)
        flushing.start()
        flushing.join(0.5)
        returned_early = bool(done)
        released = time.monotonic()
        release.set()
        flushing.join(10)
        assert not returned_early, "flush() returned while the worker's batch's hook was still running"
        assert done and done[0] >= released and len(hooked) == 1
