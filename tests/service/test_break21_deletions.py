"""Other replicas' DELETEs applied to a replica's own files (`service.deletions`), when that replica
restarts or its record of what it applied is damaged: every record still reaches it, and applying a
record again takes nothing a user sent after their DELETE."""

from __future__ import annotations

import threading
import time

import msgspec
import pytest

from pluralign.reward.em import EMMixture
from pluralign.store.deletions import Applied, new_deletion
from service.admin.controllers import ADMIN_HANDLERS
from service.deletions import APPLIED_FILE
from tests.service.test_break20_delete import GONE, KEPT, MARKER, files_holding, give_comparisons, run_job
from tests.service.test_deletions_replicas import wait_until
from tests.service.tiny import start_replicas, start_service

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py

BACK = "Numbat-pickle-63w1"  # what the deleted user sends once they come back


def snapshot_rows(path) -> dict[str, int]:
    """user_id -> rows in a population snapshot."""
    users: dict[str, int] = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            user = msgspec.json.decode(line)["user_id"]
            users[user] = users.get(user, 0) + 1
    return users


def test_a_damaged_applied_file_does_not_stop_the_sweep(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    folder_b = tmp_path / "b"
    folder_b.mkdir()
    (folder_b / APPLIED_FILE).write_bytes(b'{"watermark": 17647')  # a disk that lost the file's end
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200,
                                         deletion_sweep_s=0.2)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        give_comparisons(acme_b, GONE, "tea", MARKER)  # replica b's feedback log holds them
        give_comparisons(acme_b, "ann", "coffee")
        b.runtime.wait_for_background()
        assert files_holding(folder_b, MARKER, GONE)
        assert not wait_until(lambda: acme_a.get(f"/v1/users/{GONE}").status_code != 200)
        r = acme_a.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        assert wait_until(lambda: files_holding(folder_b, MARKER, GONE)) == []
        def still_damaged() -> bool:  # noted once the files are clean: read it once the sweep has written it
            try:
                return not msgspec.json.decode((folder_b / APPLIED_FILE).read_bytes())["watermark"] > 0
            except msgspec.DecodeError:
                return True

        assert not wait_until(still_damaged)  # written whole again
        assert acme_b.get("/v1/users/ann").status_code == 200


@pytest.mark.slow  # ~12 s: kept out of the default suite for its time (make test-all runs it)
def test_a_restarted_replica_applying_records_again_keeps_what_a_returning_user_sent(tmp_path, tiny_generator_dir,
                                                                                     tiny_pal_dir, minilm):
    """Replica b restarts without its deletions-applied.json (a new volume, a restore from backup): it
    applies every record again, which must take only what the user sent before their DELETE."""
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=0.2)
    folder_b = tmp_path / "b"
    with first, a.client("acme") as acme_a:
        with second, b.client("acme") as acme_b, b.client("globex") as globex_b, b.client("admin") as admin_b:
            give_comparisons(acme_b, GONE, "tea", MARKER)
            give_comparisons(acme_b, "ann", "coffee")
            give_comparisons(globex_b, "bea", "tea", KEPT)
            b.runtime.wait_for_background()
            assert not wait_until(lambda: acme_a.get(f"/v1/users/{GONE}").status_code != 200)
            r = acme_a.delete(f"/v1/users/{GONE}")
            assert r.status_code == 200, r.text
            assert wait_until(lambda: files_holding(folder_b, MARKER)) == []
            (record,) = b.runtime.store.deletions_since(0)
            time.sleep(max(0.0, record.deleted_at + 0.2 - time.time()))  # past store_sync_ms: nothing stale is read
            give_comparisons(acme_b, GONE, "coffee", BACK)  # the user comes back
            em = run_job(admin_b, "em", {"k": 2, "restarts": 1})  # with replicas kept, not served (session 47): its artifact
            assert f"acme/{GONE}" in EMMixture.load(folder_b / "jobs" / "artifacts" / em["id"], minilm.encoder_id).users
        (folder_b / APPLIED_FILE).unlink()
        second, b = start_service(folder_b, tiny_generator_dir, tiny_pal_dir, minilm, ADMIN_HANDLERS,
                                  store_uri=str(tmp_path / "shared-lancedb"), replicas=2, replica_index=1,
                                  store_sync_ms=200, deletion_sweep_s=0.2)
        with second:
            assert not wait_until(lambda: not (folder_b / APPLIED_FILE).is_file())  # the sweep ran
            (snapshot,) = (folder_b / "jobs" / "data" / "population").glob("comparisons-*.jsonl")
            assert snapshot_rows(snapshot) == {f"acme/{GONE}": 8, "acme/ann": 8, "globex/bea": 8}
            assert BACK.encode() in snapshot.read_bytes() and MARKER.encode() not in snapshot.read_bytes()
            mixture = EMMixture.load(folder_b / "jobs" / "artifacts" / em["id"], minilm.encoder_id)
            assert f"acme/{GONE}" in mixture.users


def test_a_replica_whose_clock_runs_ahead_does_not_hide_later_deletes(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """A replica with a clock an hour ahead (a VM resumed before NTP caught up) answers one DELETE: the
    others apply it, and still apply every DELETE after it that replicas with a right clock record."""
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200,
                                         deletion_sweep_s=0.2)
    folder_b = tmp_path / "b"
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        give_comparisons(acme_b, GONE, "tea", MARKER)
        give_comparisons(acme_b, "ann", "coffee")
        b.runtime.wait_for_background()
        assert not wait_until(lambda: acme_a.get(f"/v1/users/{GONE}").status_code != 200)
        ahead = new_deletion("globex", "someone", time.time() + 3600, 2)  # what the third replica records
        a.runtime.store.record_deletion(ahead)
        assert not wait_until(lambda: ahead.deletion_id not in Applied.load(folder_b / APPLIED_FILE).ids)
        assert files_holding(folder_b, MARKER, GONE)
        r = acme_a.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        assert wait_until(lambda: files_holding(folder_b, MARKER, GONE)) == []


def test_a_chat_generating_on_one_replica_while_another_deletes_its_user_stores_nothing(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """The DELETE is answered by replica a while replica b generates a chat planned from the user's
    history: b stores no interaction of theirs in the shared store afterwards."""
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200,
                                         deletion_sweep_s=0.2)
    entered, release = threading.Event(), threading.Event()
    for name in ("generate", "generate_styled"):
        real = getattr(b.runtime.generator, name)

        def held(*args, _real=real, **kwargs):
            entered.set()
            assert release.wait(60)
            return _real(*args, **kwargs)

        monkeypatch.setattr(b.runtime.generator, name, held)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        give_comparisons(acme_b, GONE, "tea", MARKER, n=2)
        b.runtime.wait_for_background()
        assert not wait_until(lambda: acme_a.get(f"/v1/users/{GONE}").status_code != 200)
        out = {}
        chat = threading.Thread(target=lambda: out.setdefault("r", acme_b.post("/v1/chat/completions", json={
            "model": "pluralign", "user": GONE, "n": 2, "messages": [{"role": "user", "content": f"Tea? {MARKER}"}]})))
        chat.start()
        assert entered.wait(60)  # replica b has read the user's history and is generating
        r = acme_a.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        time.sleep(0.4)  # past store_sync_ms: replica b can see the DELETE's record
        release.set()
        chat.join(60)
        assert out["r"].status_code == 200, out["r"].text  # the answer still goes out
        b.runtime.wait_for_background()
        time.sleep(0.4)
        assert a.runtime.store.count_interactions("acme", GONE) == 0
        assert acme_a.get(f"/v1/users/{GONE}").status_code == 404


def test_feedback_one_replica_moves_after_another_answered_the_delete_leaves_the_store(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """Replica b acknowledged the user's feedback before replica a answered their DELETE, and moved it
    into the shared store after (its embedding backlog), before its sweep's next pass: that pass takes
    those rows out of the store again."""
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200,
                                         deletion_sweep_s=3600)  # b's sweep: a pass at start, then when called
    entered, release = threading.Event(), threading.Event()
    real = b.runtime.ingest._move_entries

    def held(entries, *args, **kwargs):  # (the worker's: its vectors, embedded at nice 19, since session 48)
        entered.set()
        assert release.wait(60)
        return real(entries, *args, **kwargs)

    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        give_comparisons(acme_a, GONE, "tea", n=2)
        a.runtime.wait_for_background()
        monkeypatch.setattr(b.runtime.ingest, "_move_entries", held)
        give_comparisons(acme_b, GONE, "coffee", MARKER, n=2)  # acknowledged by b; its move is slow
        assert entered.wait(30)
        r = acme_a.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        release.set()
        b.runtime.wait_for_background()  # b moved them into the store, after the DELETE
        assert b.runtime.deletion_sweep.run_once() == 1  # b's next pass
        time.sleep(0.4)  # past store_sync_ms
        assert a.runtime.store.count_comparisons("acme", GONE) == 0
        assert acme_a.get(f"/v1/users/{GONE}").status_code == 404
        assert files_holding(tmp_path / "shared-lancedb", MARKER) == []
        give_comparisons(acme_b, "ann", "coffee", n=2)  # everyone else's feedback is moved as before
        b.runtime.wait_for_background()
        assert not wait_until(lambda: a.runtime.store.count_comparisons("acme", "ann") != 2)
