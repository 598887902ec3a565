"""Two replicas that each hold an unfinished DELETE of the same user in their journals (the client sent
it again to the second once the first stopped answering; both processes then died) finish them at the
same moment, as two replicas restarted at once do. Two replicas on one store in this process (real
LanceDB in a temp dir); each DELETE stopped before its rows left the store, each journal's pass run on
its own thread at once."""

from __future__ import annotations

import threading
import time

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from service.users import services
from service.users.journal import JOURNAL_FOLDER
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_delete_journal import wait_until
from tests.service.test_left27b_began import BACK, stop_before_the_rows_go
from tests.service.tiny import start_replicas

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py

SYNC_MS = 200
LATE = "Bilby-sorbet-27c4"  # sent after both DELETEs began: the user's again


def table_prompts(rt) -> list[str]:
    rt.store.refresh("preferences")
    return sorted(r["prompt"] for r in rt.store.tables["preferences"].search().where(f"user_id = '{GONE}'")
                  .select(["prompt"]).limit(None).to_arrow().to_pylist())


def test_two_replicas_finish_their_unfinished_deletes_of_one_user_at_once(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                         monkeypatch):
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=SYNC_MS,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        give_comparisons(acme_a, GONE, "tea", MARKER, n=2)
        give_comparisons(acme_b, GONE, "tea", MARKER + "-b", n=2)
        for svc in (a, b):
            svc.runtime.ingest.flush()
        began_a = stop_before_the_rows_go(monkeypatch, a.runtime, "acme", GONE)
        time.sleep(3 * SYNC_MS / 1000)  # past the records' slack for clocks
        give_comparisons(acme_a, GONE, "coffee", BACK, n=1)  # after a's DELETE began, before b's: b's takes it
        for svc in (a, b):
            svc.runtime.ingest.flush()
        time.sleep(3 * SYNC_MS / 1000)
        began_b = stop_before_the_rows_go(monkeypatch, b.runtime, "acme", GONE)
        assert began_b > began_a
        time.sleep(3 * SYNC_MS / 1000)
        give_comparisons(acme_b, GONE, "coffee", LATE, n=1)  # after both began: theirs
        for svc in (a, b):
            svc.runtime.ingest.flush()
        assert len(table_prompts(a.runtime)) == 6

        errors: list[BaseException] = []

        def restart(svc) -> None:  # what each replica's next start runs
            try:
                assert services.UnfinishedDeletes(svc.runtime, 3600).run_once() == 1
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)

        threads = [threading.Thread(target=restart, args=(svc,)) for svc in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for name in ("a", "b"):
            assert wait_until(lambda name=name: not any((tmp_path / name / JOURNAL_FOLDER).iterdir())), f"{name}'s DELETE unfinished"
        records = a.runtime.store.deletions_since(0)
        assert 1 <= len(records) <= 2 and {r.began_at for r in records} <= {began_a, began_b}, records
        for svc in (a, b):
            assert wait_until(lambda svc=svc: svc.runtime.deletion_sweep.run_once() >= 0)
        prompts = table_prompts(a.runtime)
        assert len(prompts) == 1 and LATE in prompts[0], prompts
        for client in (acme_a, acme_b):
            page = client.get(f"/v1/users/{GONE}/preferences")
            assert page.status_code == 200 and [row["prompt"] for row in page.json()["data"]] == prompts, page.text
