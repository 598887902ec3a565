"""Review of jobs56: docs/api.md says a deletion record takes what another replica made up to PLURALIGN_STORE_SYNC_MS
after the user's rows left the store (its reads may lag that much). An adapter job's snapshot is read from the store
first, and only then named (`<user>-<ms>.jsonl`) and queued (`created_at`): both stamps came after the read. A read that
takes a while (a user with many rows, a slow disk) began before the DELETE's store step and ended after its record's
window: the snapshot and the job, holding the deleted rows, were stamped as made after the DELETE, and the other
replica's sweep kept both (the job, once trained, holds them in its adapter). Now a snapshot is named when its read
began, and a job is taken as made then (`made_from`)."""

from __future__ import annotations

import threading
import time

import pytest

from service.users import services
from tests.files import files_holding
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_delete_journal import wait_until
from tests.service.test_reviewjobs53_made_until import two_replicas

# two in-process replicas, a DELETE beside a slow snapshot read (~4 s call, ~6 s setup): `make test-scaleout`
pytestmark = [pytest.mark.usefixtures("short_read_margin"), pytest.mark.slow]


def test_an_adapter_snapshot_read_before_another_replicas_delete_goes_with_it_however_late_it_is_queued(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    with two_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch) as (first, a, second, b, acme_b):
        give_comparisons(acme_b, GONE, "tea", MARKER, n=2)
        assert wait_until(lambda: a.runtime.store.count_preferences("acme", GONE) == 2)
        read, reading, deleted = b.runtime.store.preferences_for, threading.Event(), []

        def slow_read(tenant, user, *args, **kwargs):
            found = read(tenant, user, *args, **kwargs)  # the version the read began on: their rows still there
            if user == GONE:
                reading.set()
                assert wait_until(lambda: deleted, timeout=30)
                time.sleep(max(0.0, deleted[0] + 0.5 - time.time()))  # past the record's window (store_sync_ms 200)
            return found

        monkeypatch.setattr(b.runtime.store, "preferences_for", slow_read)
        admin_b, queued = second.server.config.app.state.admin, []

        def queue_job():
            try:
                queued.append(admin_b.submit("adapter", {"tenant": "acme", "user": GONE})[0])
            except Exception as exc:  # noqa: BLE001 - what the submit raised is what this test looks at
                queued.append(exc)

        queue = threading.Thread(target=queue_job)
        queue.start()
        assert reading.wait(30)
        services.delete(a.runtime, "acme", GONE)  # through a, answered while b's read goes on
        deleted.append(time.time())
        queue.join(30)
        (record,) = wait_until(lambda: b.runtime.store.deletions_since(0))
        # queued after the record's window, its snapshot read before the rows left: refused (b's sweep had applied the
        # record before there was a job to purge), or queued and purged by b's sweep
        (outcome,) = queued
        if isinstance(outcome, Exception):
            assert "params.user" in str(getattr(outcome, "extra", "")) + repr(outcome) and "deleted" in repr(outcome), outcome
        else:
            assert wait_until(lambda: admin_b.runner.get(outcome.id) is None, timeout=10), (record, outcome)
        assert not [j for j in admin_b.runner.store.of_user(f"acme/{GONE}")], record
        assert wait_until(lambda: files_holding(tmp_path / "b", MARKER) == [], timeout=10), files_holding(tmp_path / "b", MARKER)
