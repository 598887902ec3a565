"""Review of jobs56: a DELETE killed after its store's step and before its journal's note of it (`rows_left_at`) is
finished from the journal later; for a user who came back, its record's `made_until` (what was made before it may
hold their old rows) came from the store's kept versions of the preferences table (`Store.received_before_left_at`).
But any other purge of that table meanwhile (another user's DELETE through another replica) removes the versions from
before it once every replica reads past it: the first kept version is then that purge's, committed long after the
rows left. The record then named what the returning user's owner replica made in between (their newer adapter job, of
what they sent since) as made from their old rows: that replica's sweep purged it, though docs/api.md says it 'stays
theirs everywhere: the adapter job of what they sent since, queued by another replica, is promoted and served'."""

from __future__ import annotations

import time

import pytest

from service.users import services
from service.users.journal import JOURNAL_FOLDER
from tests.files import files_holding
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_delete_journal import LATER, wait_until
from tests.service.test_delete_stopped import Stopped
from tests.service.test_reviewjobs53_made_until import two_replicas
from tests.service.tiny import wait_passes

# two in-process replicas, a DELETE stopped and finished, another user's DELETE between: `make test-scaleout`
pytestmark = [pytest.mark.usefixtures("short_read_margin"), pytest.mark.slow]


def test_a_returning_users_job_stays_when_another_purge_dropped_the_versions_before_the_delete_is_finished(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    with two_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch) as (first, a, second, b, acme_b):
        give_comparisons(acme_b, GONE, "tea", MARKER, n=2)
        give_comparisons(acme_b, "ann", "coffee", n=2)
        assert wait_until(lambda: a.runtime.store.count_preferences("acme", GONE) == 2)
        purge = a.runtime.store._purge_tables
        left = []

        def killed_in_the_purge(names):
            left.append(time.time())  # their old rows had left the store's newest versions by now
            raise Stopped  # killed in the purge that follows (every fragment with a deletion rewritten: it may take long)

        monkeypatch.setattr(a.runtime.store, "_purge_tables", killed_in_the_purge)
        with pytest.raises(Stopped):
            services.delete(a.runtime, "acme", GONE)
        monkeypatch.setattr(a.runtime.store, "_purge_tables", purge)
        assert a.runtime.store.count_preferences("acme", GONE) == 0
        time.sleep(0.5)  # past the replicas' staleness (store_sync_ms 200): the DELETE could have answered
        give_comparisons(acme_b, GONE, "coffee", LATER, n=1)  # they came back, after their rows had gone
        assert wait_until(lambda: b.runtime.store.count_preferences("acme", GONE) == 1)
        admin_b = second.server.config.app.state.admin
        since = admin_b.submit("adapter", {"tenant": "acme", "user": GONE})[0]  # of what they sent since: theirs
        assert since.created_at > left[0] + 0.4
        assert wait_until(lambda: files_holding(tmp_path / "b", LATER))
        # another user's DELETE through b: its purge of the preferences table, whose old versions go once every replica
        # reads past it (store_sync_ms and the read margin later, after its turn)
        services.delete(b.runtime, "acme", "ann")
        assert wait_until(lambda: not b.runtime.store._owed and not +b.runtime.store._dropping, timeout=30)
        first.server.config.app.state.unfinished_deletes.run_once()  # a finishes the DELETE: only what came before it goes
        assert wait_until(lambda: not any((tmp_path / "a" / JOURNAL_FOLDER).iterdir()))
        (record,) = wait_until(lambda: b.runtime.store.deletions_since(0) and
                               [d for d in b.runtime.store.deletions_since(0) if d.made_until is not None])
        wait_passes(b.runtime.deletion_sweep)  # a pass of b's sweep begun once b read the record has run: it applied it
        # what b made after the rows had gone (the adapter job of what the user sent since) is theirs and stays
        assert admin_b.runner.get(since.id) is not None and files_holding(tmp_path / "b", LATER), (record, since.created_at)
        assert record.began() <= record.made() <= left[0], (record, left[0])  # noted before the purge began
