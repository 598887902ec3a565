"""Deletion records that say when their DELETE began (`Deletion.began_at`) as well as when they were
written (`deleted_at`): what a user sent after the DELETE began survives the record however late it is
written, and a record written late still reaches every replica. Two replicas on one store in this
process (as tests/service/test_left27_reimport.py), real LanceDB in a temp dir."""

from __future__ import annotations

import time

import msgspec
import pytest

import pluralign.store.deletions as deletions_module
from pluralign.store.deletions import Applied
from service.admin.controllers import ADMIN_HANDLERS
from service.deletions import APPLIED_FILE
from service.users import services
from service.users.journal import JOURNAL_FOLDER
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_delete_journal import wait_until
from tests.service.test_delete_stopped import Stopped
from tests.service.tiny import start_replicas

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a DELETE's wait for readers (store_sync_ms set): tests/service/conftest.py

SYNC_MS = 200  # how stale a replica's reads of the store may be
BACK = "Numbat-pickle-63w1"  # what the deleted user sends once they came back


def prompts(client, user: str) -> list[str]:
    page = client.get(f"/v1/users/{user}/preferences", params={"limit": 100})
    return [] if page.status_code == 404 else sorted(row["prompt"] for row in page.json()["data"])  # 404: nothing held


def stop_before_the_rows_go(monkeypatch, rt, tenant: str, user: str) -> float:
    """Replica `rt` begins the user's DELETE and dies before any row of theirs left the store (its
    journal entry written, no deletion record yet). Returns when the DELETE began."""
    def stopped(*args, **kwargs):
        raise Stopped

    with monkeypatch.context() as patch:
        patch.setattr(rt.store, "delete_user", stopped)
        try:
            services.delete(rt, tenant, user)
        except Stopped:
            pass
    entry = rt.delete_journal.unfinished(tenant, user)
    assert entry is not None
    return entry.started_at


def finish_from_journal(rt, folder) -> None:
    """What replica `rt`'s next start runs: its journal's pass finishes the stopped DELETE."""
    assert services.UnfinishedDeletes(rt, 3600).run_once() == 1
    assert wait_until(lambda: not any((folder / JOURNAL_FOLDER).iterdir())), "the DELETE was not finished"


# a file without ids (an earlier release's export: slow, ~1.6 CPU-s; fast: a record applied while an import waits in the
# log, tests/service/test_replica40_pending_again.py[swept-in-the-log] and test_deletions_replicas.py's
# test_feedback_acknowledged_after_the_delete_stays_pending), an export with its ids
@pytest.mark.parametrize("ids", [pytest.param(False, marks=pytest.mark.slow), True])
def test_an_import_still_in_another_replicas_log_survives_the_stopped_delete_being_finished(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch, ids):
    """Replica a dies in the user's DELETE before their rows left the store; the user imports their
    earlier export through replica b, whose embedding backlog still holds it (its feedback log) when a
    starts again and finishes the DELETE. a cannot see the import, so it deletes as for a user who did
    not come back, and its record reaches b. Before: the record said only when it was written, after
    the import came, so b's sweep dropped the import from its log: the user's GET found nothing."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=SYNC_MS,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        give_comparisons(acme_a, GONE, "tea", MARKER, n=3)
        exported = acme_a.get(f"/v1/users/{GONE}/export", params={"format": "preferences"})
        assert exported.status_code == 200 and len(exported.content.splitlines()) == 3, exported.text
        imported = sorted(msgspec.json.decode(line)["prompt"] for line in exported.content.splitlines())
        body = exported.content if ids else b"".join(  # a file without ids: an earlier release's export
            msgspec.json.encode({k: v for k, v in msgspec.json.decode(line).items() if k != "pref_id"}) + b"\n"
            for line in exported.content.splitlines())
        began = stop_before_the_rows_go(monkeypatch, a.runtime, "acme", GONE)
        # the import reaches b past the slack a record allows for stale reads and clocks (`store_sync_ms`): a row
        # received within it of the DELETE's start is taken with what came before (docs/api.md)
        time.sleep(max(0.0, began + SYNC_MS / 1000 + 0.05 - time.time()))

        with b.runtime.ingest.paused():  # b's embedding backlog: the import stays in its feedback log
            r = acme_b.post(f"/v1/users/{GONE}/import", content=body)
            assert r.status_code == 201, r.text
            # without ids the rows are new (in b's log); with them b finds them still stored and received again (in the table)
            assert sum(len(e.rows) for e in b.runtime.ingest.log.pending_for("acme", GONE)) == (0 if ids else 3)
            assert len(r.json()["already_stored"]) == (3 if ids else 0), r.json()
            finish_from_journal(a.runtime, tmp_path / "a")  # a started again
            record = wait_until(lambda: b.runtime.store.deletions_since(0))
            assert len(record) == 1 and record[0].deleted_at > began, record
            assert b.runtime.deletion_sweep.run_once() == 1  # b applies a's record while the import waits
        # b's worker moves the import on
        for client in (acme_b, acme_a):
            assert wait_until(lambda client=client: prompts(client, GONE) == imported), prompts(client, GONE)
            assert client.get(f"/v1/users/{GONE}").json()["counts"]["preferences"] == 3


def test_a_record_of_a_delete_finished_late_reaches_a_replica_whose_watermark_moved_on(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """Replica a dies in the user's DELETE; the user comes back; a finishes the DELETE later (only what
    was received before it began goes) and records it. Meanwhile replica b applied a later record of
    another user, so its watermark passed the DELETE's start by more than the slack a record allows
    (SLACK_S, 10 minutes, shortened here so the test need not wait). Before: the record was dated when
    the DELETE began, b never applied it, and the feedback b held from before the DELETE (its feedback
    log) came back into the user's data."""
    monkeypatch.setattr(deletions_module, "SLACK_S", 0.2)
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=SYNC_MS,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        with b.runtime.ingest.paused():  # b's backlog holds what the user sent it before the DELETE
            give_comparisons(acme_b, GONE, "tea", MARKER, n=3)
            began = stop_before_the_rows_go(monkeypatch, a.runtime, "acme", GONE)
            # they come back, through a, past the slack for stale reads and clocks (as in the test above), and
            # past the shortened SLACK_S
            time.sleep(max(0.0, began + max(SYNC_MS / 1000, deletions_module.SLACK_S) + 0.05 - time.time()))
            give_comparisons(acme_a, GONE, "coffee", BACK, n=1)
            came_back = prompts(acme_a, GONE)
            assert len(came_back) == 1 and BACK in came_back[0]

            give_comparisons(acme_a, "ann", "coffee", n=1)
            assert acme_a.delete("/v1/users/ann").status_code == 200
            assert wait_until(lambda: len(b.runtime.store.deletions_since(0)) == 1)
            assert b.runtime.deletion_sweep.run_once() == 1
            assert Applied.load(tmp_path / "b" / APPLIED_FILE).since() > began  # b's watermark moved on

            finish_from_journal(a.runtime, tmp_path / "a")  # a started again: the user came back
            assert wait_until(lambda: len(b.runtime.store.deletions_since(0)) == 2)
            applied = b.runtime.deletion_sweep.run_once()
        # b's worker moves on: nothing of what b held from before the DELETE is the user's again
        for client in (acme_b, acme_a):
            assert wait_until(lambda client=client: prompts(client, GONE) == came_back), prompts(client, GONE)
        assert applied == 1, "b passed over the record of the finished DELETE"


def test_deletion_records_of_an_older_table_read_as_begun_when_written_and_a_later_column_is_passed_over(tmp_path):
    """A `deletions` table written before records kept `began_at` gains the column (null) when opened:
    its records read, and a record without it counts as begun when it was written (the old meaning). A
    record with it forgets rows received before it began, and things made before it was written. A
    column a later version adds is passed over by this one's reads (a replica of the older version
    could not read a table holding a column it did not know, and stopped applying records)."""
    import lancedb
    import pyarrow as pa

    from pluralign.store import Store
    from pluralign.store.deletions import Forget, deletion_schema, new_deletion

    new = deletion_schema()
    old = pa.schema([f for f in new if f.name != "began_at"], metadata=new.metadata)
    later = pa.schema([*old, pa.field("reason", pa.string(), nullable=True)], metadata=new.metadata)
    row = {"deletion_id": "old", "tenant": "t", "user_hash": new_deletion("t", "ann", 0.0, 0).user_hash, "deleted_at": 1000.0,
           "replica": 0, "schema_version": 1, "reason": "a later version's"}
    lancedb.connect(str(tmp_path)).create_table("deletions", pa.Table.from_pylist([row], schema=later))

    store = Store(str(tmp_path), "enc", 8)
    (found,) = store.deletions_since(0)
    assert (found.deletion_id, found.began_at, found.began()) == ("old", None, 1000.0)
    store.record_deletion(new_deletion("t", "bob", 3000.0, 1, began_at=2000.0))
    by_id = {d.deletion_id: d for d in Store(str(tmp_path), "enc", 8).deletions_since(0)}
    (recorded,) = [d for i, d in by_id.items() if i != "old"]
    assert (recorded.began_at, recorded.deleted_at) == (2000.0, 3000.0)

    forget = Forget.of(by_id.values())
    assert forget.until_of("t/ann") == 1000.0 and forget.until_of("t/bob") == 2000.0  # rows: received before it began
    assert forget.made_at(2500.0)("t/bob") and not forget.made_at(3000.0)("t/bob")  # made before it was written
    assert not forget.made_at(1000.0)("t/ann") and forget.made_at(999.0)("t/ann")


def test_an_adapter_registered_after_the_delete_began_stays_when_it_is_finished(tmp_path, tmp_path_factory, tiny_generator_dir,
                                                                                 tiny_pal_dir, minilm, monkeypatch):
    """The service dies in the user's DELETE; the user comes back, and an adapter trained for them
    elsewhere, before the DELETE, is registered (`register_adapter`). Finishing the DELETE keeps what
    came after it began. Before: the adapter went, judged by when it was trained (its `created_at`),
    and the user's chats were served by the fallback."""
    from pluralign.policy.adapters import adapter_name
    from tests.service.test_service_adapters import chat, random_adapter
    from tests.service.tiny import fspo_service

    trained = random_adapter(tiny_generator_dir, tmp_path / "trained", tiny_generator_dir.name, "user", 3)
    # the test finishes the DELETE's journal entry by hand (`finish_from_journal`): no pass of the service's own before
    with fspo_service(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600) as svc, svc.client() as c:
        give_comparisons(c, GONE, "tea", MARKER, n=2)
        stop_before_the_rows_go(monkeypatch, svc.runtime, "acme", GONE)
        give_comparisons(c, GONE, "coffee", BACK, n=1)  # they come back
        services.register_adapter(svc.runtime, "acme", GONE, trained)
        assert chat(c, GONE).json()["pluralign"]["adapter"] == adapter_name("acme", GONE)
        finish_from_journal(svc.runtime, svc.data_dir)  # the service started again
        assert [BACK in p for p in prompts(c, GONE)] == [True]
        assert chat(c, GONE).json()["pluralign"]["adapter"] == adapter_name("acme", GONE)
