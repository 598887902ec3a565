"""A DELETE stopped part way on one replica, the user's data imported again through another, then the
stopped DELETE finished (the first replica's journal) and its deletion record applied (the other's
sweep). Imported rows keep the times they were first made, from before the DELETE; whether the user
came back after the DELETE began is told by when their rows reached the service (`received_at`), not
by the times the rows carry. Two replicas on one store in this process, real LanceDB in a temp dir."""

from __future__ import annotations

import time

import msgspec
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from service.users import services
from service.users.journal import JOURNAL_FOLDER
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_break21_deletions import snapshot_rows
from tests.service.test_delete_journal import wait_until
from tests.service.test_delete_stopped import Stopped
from tests.service.tiny import start_replicas, start_service

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py
SYNC_MS = 200  # how stale a replica's reads of the store may be


def preference_lines(response) -> list[dict]:
    return [line for line in map(msgspec.json.decode, response.content.splitlines()) if line["type"] == "preference"]


def test_a_reimport_through_another_replica_survives_the_stopped_delete_being_finished(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """Replica a is stopped in the user's DELETE after their rows left the store (and its deletion record
    was written); the user's app imports their earlier export through replica b. Then b's sweep applies
    a's record, and a, started again, finishes the DELETE from its journal. Before: b's sweep deleted the
    imported rows (they carry times from before the DELETE), and so did a's finishing DELETE, which did
    not see the user as come back: the user's GET found nothing of what they imported after the DELETE."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    # b's sweep is run here by hand, after the import (its passes at start ran before the DELETE)
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=SYNC_MS,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        give_comparisons(acme_a, GONE, "tea", MARKER, n=3)
        assert acme_a.get(f"/v1/users/{GONE}/preferences").json().get("total") == 3
        exported = acme_a.get(f"/v1/users/{GONE}/export", params={"format": "preferences"})
        assert exported.status_code == 200 and len(exported.content.splitlines()) == 3, exported.text

        def stopped(tenant, user):  # replica a dies here: after the rows and the record, before the adapter step
            raise Stopped

        delete_adapter = a.runtime.adapters.registry.delete
        monkeypatch.setattr(a.runtime.adapters.registry, "delete", stopped)
        try:
            services.delete(a.runtime, "acme", GONE)
        except Stopped:
            pass
        monkeypatch.setattr(a.runtime.adapters.registry, "delete", delete_adapter)
        assert a.runtime.store.count_preferences("acme", GONE) == 0 and len(list((tmp_path / "a" / JOURNAL_FOLDER).iterdir())) == 1
        (record,) = b.runtime.store.deletions_since(0)
        # the import reaches b past the slack a record allows for stale reads and clocks (`store_sync_ms`): a row
        # received within it of the DELETE may still be taken from population files (docs/api.md)
        time.sleep(max(0.0, record.deleted_at + SYNC_MS / 1000 + 0.05 - time.time()))

        r = acme_b.post(f"/v1/users/{GONE}/import", content=exported.content)  # the user's app, through replica b
        assert r.status_code == 201, r.text
        assert acme_b.get(f"/v1/users/{GONE}/preferences").json()["total"] == 3  # moved into the store by b
        assert wait_until(lambda: acme_a.get(f"/v1/users/{GONE}/preferences").json().get("total") == 3)  # a reads it too
        # each replica's population snapshot (what its next PAL or EM job trains on) holds the imported rows
        snapshots = [server.server.config.app.state.admin.population_snapshot() for server in (first, second)]
        assert [snapshot_rows(path).get(f"acme/{GONE}") for path in snapshots] == [3, 3]

        assert b.runtime.deletion_sweep.run_once() == 1  # b applies a's record after the import
        assert acme_b.get(f"/v1/users/{GONE}/preferences").json()["total"] == 3, "b's sweep took the import"

        first.__exit__(None, None, None)  # replica a stops; it starts again on its own folder
        again, a = start_service(tmp_path / "a", tiny_generator_dir, tiny_pal_dir, minilm, ADMIN_HANDLERS, deletion_sweep_s=3600,
                                 store_uri=str(tmp_path / "shared-lancedb"), replicas=2, replica_index=0, store_sync_ms=SYNC_MS)
        with again, a.client("acme") as acme_a:  # its start finishes the DELETE its journal holds
            assert wait_until(lambda: not any((tmp_path / "a" / JOURNAL_FOLDER).iterdir())), "a's DELETE was not finished"
            for client in (acme_a, acme_b):
                assert wait_until(lambda client=client: client.get(f"/v1/users/{GONE}/preferences").json().get("total") == 3), \
                    client.get(f"/v1/users/{GONE}/preferences").json()
                lines = preference_lines(client.get(f"/v1/users/{GONE}/export"))
                assert sorted(line["prompt"] for line in lines) == sorted(msgspec.json.decode(x)["prompt"] for x in exported.content.splitlines())
                assert all(line["created_at"] < record.deleted_at < line["received_at"] for line in lines), lines  # their times kept
                assert client.get(f"/v1/users/{GONE}").json()["counts"]["preferences"] == 3
            assert [snapshot_rows(path).get(f"acme/{GONE}") for path in snapshots] == [3, 3], "a snapshot lost the import"

def test_imported_rows_pending_in_a_log_survive_a_delete_record_from_before_they_came(tmp_path):
    """Another replica's DELETE at time T drops this replica's pending records of the user received
    before T; an import received after T (its rows carrying older times) stays pending, also once the
    log is opened again (a restart). Before: the rows' own times put the import before T: dropped."""
    from pluralign.store.feedback_log import FeedbackLog
    from tests.service.test_feedback_log import feedback

    log = FeedbackLog(tmp_path)
    log.append(feedback("ann", 0))  # sent before the DELETE
    deleted_at = time.time()
    imported = [msgspec.structs.replace(r, created_at=1_700_000_000.0, received_at=deleted_at + 1) for r in feedback("ann", 1)]
    log.append(imported)
    log.close()
    log = FeedbackLog(tmp_path)  # replayed from its files
    assert log.forget_user("t", "ann", before=deleted_at) == 1
    # the import as sent, received when the log wrote it (after the DELETE began: `FeedbackLog`'s stamp)
    pending = [r for e in log.pending.values() for r in e.rows]
    assert [msgspec.structs.replace(r, received_at=None) for r in pending] == [msgspec.structs.replace(r, received_at=None) for r in imported]
    assert all(deleted_at < r.received_at for r in pending), pending
    log.close()


def test_rows_of_a_table_from_before_received_at_read_and_go_by_their_own_time(tmp_path):
    """A preferences table written before rows kept `received_at` gains the column (null) when opened;
    its rows read, and a DELETE's time is compared with their `created_at`, while a row imported since
    goes by when it was received."""
    import lancedb
    import numpy as np
    import pyarrow as pa

    from pluralign.store import Store, StoredPreference
    from pluralign.store.schemas import preference_schema

    dim = 8
    new = preference_schema("enc", dim)
    old = pa.schema([f for f in new if f.name != "received_at"], metadata=new.metadata)
    vec = [[0.5] * dim]
    rows = [{"tenant": "t", "user_id": "ann", "pref_id": f"old{i}", "prompt": f"q{i}", "chosen": "yes", "rejected": "no",
             "tie": False, "margin": None, "kind": "comparison", "source": None, "created_at": 1000.0 + i, "attributes": "{}",
             "prompt_vec": vec[0], "chosen_vec": vec[0], "rejected_vec": vec[0], "schema_version": 1} for i in range(2)]
    lancedb.connect(str(tmp_path)).create_table("preferences", pa.Table.from_pylist(rows, schema=old))

    store = Store(str(tmp_path), "enc", dim)
    assert [(p.received_at, p.received()) for p in store.preferences_for("t", "ann")[0]] == [(None, 1000.0), (None, 1001.0)]
    imported = StoredPreference(tenant="t", user_id="ann", pref_id="imp", prompt="q9", chosen="yes", rejected="no",
                                kind="comparison", created_at=900.0, received_at=3000.0)
    store.add_preferences([imported], *(np.full((1, dim), 0.5, np.float32),) * 3)
    assert store.delete_feedback_before("t", "ann", 2000.0) == 2  # the old rows, by created_at; not the import
    assert store.preferences_for("t", "ann")[0] == [imported]
    assert Store(str(tmp_path), "enc", dim).preferences_for("t", "ann")[0] == [imported]
