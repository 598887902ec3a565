"""Review of jobs53: a DELETE finished from the journal for a user who came back, once their old rows had left the
store, records `made_until` (what was made before it may hold those rows). jobs53 set it to when the DELETE began. But
the rows left the store only at its store's step, which may come long after it began (the DELETE waits for the store's
maintenance turn, the feedback log, the embedding caches): what another replica made in between (a population snapshot,
a user's adapter job) read the user's old rows, and was kept by that record: their rows stayed in the other replica's
snapshot (and their fitted weights in what it trains), though the DELETE answered nothing and finished later.
Now `made_until` is when those rows left the store, as the store's kept versions tell (`Store.received_before_left_at`),
never earlier than the DELETE began; what was made after it (the returning user's newer jobs) stays theirs."""

from __future__ import annotations

import contextlib
import time

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from service.users import services
from service.users.journal import JOURNAL_FOLDER
from tests.files import files_holding
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_delete_journal import LATER, wait_until
from tests.service.test_delete_stopped import Stopped
from tests.service.tiny import start_service, wait_passes

# two in-process replicas, a DELETE stopped and finished (~7 s call, ~6 s setup): `make test-scaleout`
pytestmark = [pytest.mark.usefixtures("short_read_margin"), pytest.mark.slow]


@contextlib.contextmanager
def two_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """Replicas a and b of one store (sync 200 ms), in process: a finishes its journal's DELETEs when told (its periodic
    pass: once at start), b's sweep reads records often and b runs no jobs. Yields (a's server, a, b's server, b, an acme
    client of b)."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    common = dict(store_uri=str(tmp_path / "shared-lancedb"), replicas=2, store_sync_ms=200)
    first, a = start_service(tmp_path / "a", tiny_generator_dir, tiny_pal_dir, minilm, ADMIN_HANDLERS, replica_index=0,
                             deletion_sweep_s=3600, **common)
    second, b = start_service(tmp_path / "b", tiny_generator_dir, tiny_pal_dir, minilm, ADMIN_HANDLERS, replica_index=1,
                              deletion_sweep_s=0.2, job_workers=0, **common)
    b.keys["acme"] = b.runtime.keys.issue("acme")
    with first, second, b.client("acme") as acme_b:
        yield first, a, second, b, acme_b


def test_a_snapshot_another_replica_took_before_a_killed_deletes_store_step_loses_the_users_old_rows(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    with two_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch) as (first, a, second, b, acme_b):
        give_comparisons(acme_b, GONE, "tea", MARKER, n=2)
        give_comparisons(acme_b, "ann", "coffee", n=2)
        assert wait_until(lambda: a.runtime.store.count_preferences("acme", GONE) == 2)
        delete_user, queued = a.runtime.store.delete_user, []

        def store_step_late(tenant, user):
            # a's DELETE began a while ago (its steps before this one: the user's jobs stopped, their texts' vectors
            # forgotten from the embedding caches, each of which may take a while): meanwhile b queues
            # the user's adapter job, whose snapshot reads their rows, still stored (what it trains on)
            time.sleep(0.5)  # past the replicas' staleness (store_sync_ms 200)
            queued.append(second.server.config.app.state.admin.submit("adapter", {"tenant": "acme", "user": GONE})[0])
            time.sleep(0.3)
            delete_user(tenant, user)
            raise Stopped  # killed right after the store's step, before its deletion record

        monkeypatch.setattr(a.runtime.store, "delete_user", store_step_late)
        with pytest.raises(Stopped):
            services.delete(a.runtime, "acme", GONE)
        monkeypatch.setattr(a.runtime.store, "delete_user", delete_user)
        assert files_holding(tmp_path / "b", MARKER)  # b's adapter job's snapshot holds their old rows
        give_comparisons(acme_b, GONE, "coffee", LATER, n=1)  # they came back, after their rows had gone
        assert wait_until(lambda: a.runtime.store.count_preferences("acme", GONE) == 1)
        first.server.config.app.state.unfinished_deletes.run_once()  # a finishes the DELETE: only what came before it goes
        assert wait_until(lambda: not any((tmp_path / "a" / JOURNAL_FOLDER).iterdir()))
        (record,) = wait_until(lambda: b.runtime.store.deletions_since(0))
        # an adapter's promotion asks the record as b's sweep does, with b's reads' staleness (store_sync_ms): a job
        # queued less than that after the rows left may have read them (until then it asked without it, and promoted it)
        sync = b.runtime.settings.sync_seconds
        assert b.runtime.recorded_deletion_reaches("acme", GONE, record.made() + sync / 2), record
        assert not b.runtime.recorded_deletion_reaches("acme", GONE, record.made() + sync * 2), record
        admin_b = second.server.config.app.state.admin
        assert wait_until(lambda: admin_b.runner.get(queued[0].id) is None, timeout=15), (record, admin_b.runner.get(queued[0].id))
        assert wait_until(lambda: files_holding(tmp_path / "b", MARKER) == [], timeout=15), (record, files_holding(tmp_path / "b", MARKER))
        # what b made after the rows had gone (the adapter job of what the user sent since) is theirs and stays
        since = admin_b.submit("adapter", {"tenant": "acme", "user": GONE})[0]
        wait_passes(b.runtime.deletion_sweep)  # a pass of b's sweep begun after it was queued has run
        assert admin_b.runner.get(since.id) is not None and files_holding(tmp_path / "b", LATER), record
