"""review retract56, with replicas: replica a's look for rows taken back right after a commit fails once (the store did
not answer: `OwedRetractions.check`), so every row of the batch is owed, on disk, and looked at again. The batch was an
import: hundreds of rows. Each owed row was then its own task: the tenant's DELETE slots taken (8) and a thread of its
own for each of the rest, each with two store reads, and each row's release rewrote and fsynced the owed file, whole:
one failed read cost hundreds of threads and file writes, and the tenant's DELETEs were 429 meanwhile. Now the owed
rows of a batch are looked at again together (one read), those not taken back released at once (one write), and only
those a retraction names are taken back, one by one.

Two real services over HTTP on one LanceDB store. Slow-marked (two service starts): `make test-scaleout`."""

from __future__ import annotations

import threading
import time

import pytest

from service.owed_retractions import OWED_RETRACTIONS_FILE
from tests.service.test_backlog49 import import_body
from tests.service.test_retract54 import MISCLICK, give_rule
from tests.service.test_retract56_replicas import wait_for
from tests.service.test_retractrep55_replicas import exported
from tests.service.test_reviewretractrep55_replicas import keyed_misclick

pytestmark = pytest.mark.usefixtures("short_read_margin")

ROWS = 120


@pytest.mark.slow
def test_a_big_batch_owed_whole_is_looked_at_again_at_once_not_row_by_row(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    from pluralign.store.failures import StoreUnavailable
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, deletion_sweep_s=3600.0,
                                         ingest_batch=256)
    with first, a.client("acme") as acme_a, second, b.client("acme") as acme_b:
        other = give_rule(acme_a, "ola", 1)[0]
        owed = a.runtime.owed_retractions
        looked, failed, writes, threads = a.runtime.store.retracted, [], [], [0]
        write = owed._write

        def counted_write():
            writes.append(len(owed._keys))
            threads[0] = max(threads[0], sum(t.name == "retract-arrived" for t in threading.enumerate()))
            write()

        def unanswered_once(rows):  # the look right after the commit of the batch holding the row taken back
            if not failed and any(r.pref_id == late for r in rows):
                failed.append(len(rows))
                raise StoreUnavailable("retractions", "the store", "read", "unreadable", "connection reset")
            return looked(rows)

        with a.runtime.ingest.paused():
            r = acme_a.post("/v1/users/ria/import", content=import_body("ria", ROWS))
            assert r.status_code == 201, r.text
            late = keyed_misclick(acme_a, "ria", "late")
            assert acme_b.delete(f"/v1/users/ria/preferences/{late}").status_code == 202
            monkeypatch.setattr(a.runtime.ingest, "_not_retracted", lambda entries: entries)  # its look came first
            monkeypatch.setattr(a.runtime.store, "retracted", unanswered_once)
            monkeypatch.setattr(owed, "_write", counted_write)
        a.runtime.ingest.flush()
        started = time.monotonic()
        assert failed and failed[0] > ROWS  # the whole batch was owed
        # another user of the tenant takes a stored row back meanwhile: its DELETE is not refused for the owed rows
        r = acme_a.delete(f"/v1/users/ola/preferences/{other}")
        assert r.status_code == 200, r.text
        wait_for(lambda: not (a.runtime.settings.data_path / OWED_RETRACTIONS_FILE).exists(), 60, "still owed")
        took = time.monotonic() - started
        export = exported(acme_a, "ria")  # every row of the user: the import's stay, the one taken back went
        assert MISCLICK not in export and sum('"pref_id"' in line for line in export.splitlines()) == ROWS
        # one write owing the batch, one releasing each request's rows not taken back (the moved rows' hooks run per
        # request: ola's, the import's, the misclick's), one for the row taken back; before, one a row
        assert len(writes) <= 4, f"the owed file written {len(writes)} times (in {took:.1f} s; {threads[0]} threads at once)"
        assert threads[0] <= 1, threads[0]
