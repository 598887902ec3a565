"""A DELETE stopped part way in a single process (no replicas, no lease), after the user's rows were
deleted and before the purge that removes the files still holding them: the purge is finished when
the store opens again (the next start), or by the same process's next maintenance turn, so no file
keeps the deleted user's text. Before, nothing remembered the purge left to do: the text stayed in
old table versions for good, and the DELETE sent again found no row and purged nothing (a 404)."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from pluralign.store import Store
from tests.files import files_holding
from tests.service.test_store import DIM, prefs

MARKER = "narwhal-marker-25a"


class Stopped(BaseException):
    """The process stops here (what a SIGKILL does, in-process): nothing after it runs."""


def stored(tmp_path) -> Store:
    store = Store(str(tmp_path), "enc", DIM)
    rows, *vectors = prefs("t", "gone", 3)
    store.add_preferences([msgspec.structs.replace(r, prompt=f"{MARKER} {i}") for i, r in enumerate(rows)], *vectors)
    store.add_preferences(*prefs("t", "kept", 3, start=10))
    return store


def stop_before_the_purge(store: Store, monkeypatch, times: int = 1) -> None:
    """The store's next `times` purges stop before they begin: the rows are deleted, their files kept."""
    purge, left = store._purge_tables, [times]

    def stopped(names):
        if left[0]:
            left[0] -= 1
            raise Stopped
        return purge(names)

    monkeypatch.setattr(store, "_purge_tables", stopped)


def test_a_delete_stopped_before_its_purge_is_finished_when_the_store_opens_again(tmp_path, monkeypatch):
    store = stored(tmp_path)
    stop_before_the_purge(store, monkeypatch)
    with pytest.raises(Stopped):
        store.delete_user("t", "gone")
    assert store.count_preferences("t", "gone") == 0  # her rows went...
    assert files_holding(tmp_path, MARKER)  # ...but the files of the old versions still hold her text

    again = Store(str(tmp_path), "enc", DIM)  # the next start
    assert files_holding(tmp_path, MARKER) == []
    assert again.delete_user("t", "gone") == dict.fromkeys(again.tables, 0)  # the DELETE sent again: a 404
    assert again.count_preferences("t", "kept") == 3
    assert Store(str(tmp_path), "enc", DIM).count_preferences("t", "kept") == 3  # nothing left to finish


def test_a_process_that_only_reads_the_store_leaves_the_purge_to_its_owner(tmp_path, monkeypatch):
    """`pluralign train-adapter --store` opens the store a running service owns: it must not purge beside it."""
    store = stored(tmp_path)
    stop_before_the_purge(store, monkeypatch)
    with pytest.raises(Stopped):
        store.delete_user("t", "gone")
    reader = Store(str(tmp_path), "enc", DIM, finish_purges=False)
    assert reader.purges_left() == {"preferences"} and files_holding(tmp_path, MARKER)
    assert reader.count_preferences("t", "kept") == 3
    Store(str(tmp_path), "enc", DIM)
    assert files_holding(tmp_path, MARKER) == []


def test_a_delete_stopped_before_its_purge_is_finished_by_the_next_turn_of_the_same_process(tmp_path, monkeypatch):
    """A purge that raised (Lance's error, a full disk) leaves its mark: the next DELETE, of anyone,
    or the next compaction finishes it first."""
    store = stored(tmp_path)
    stop_before_the_purge(store, monkeypatch)
    with pytest.raises(Stopped):
        store.delete_user("t", "gone")
    assert files_holding(tmp_path, MARKER)
    assert store.delete_user("t", "gone") == dict.fromkeys(store.tables, 0)  # sent again: no row, yet it finishes
    assert files_holding(tmp_path, MARKER) == []
    assert store.count_preferences("t", "kept") == 3


def test_a_feedback_delete_stopped_before_its_purge_is_finished_by_the_next_compaction(tmp_path, monkeypatch):
    store = stored(tmp_path)
    store.add_preferences(*prefs("t", "gone", 2, start=20))  # newer rows of hers that stay
    cut = max(p.created_at for p in store.preferences_for("t", "gone")[0] if p.prompt.startswith(MARKER))
    stop_before_the_purge(store, monkeypatch)
    with pytest.raises(Stopped):
        store.delete_feedback_before("t", "gone", cut + 1e-6)
    assert files_holding(tmp_path, MARKER)
    store.compact()
    assert files_holding(tmp_path, MARKER) == []
    assert store.count_preferences("t", "gone") == 2 and store.count_preferences("t", "kept") == 3


def test_a_finished_delete_leaves_no_purge_to_do(tmp_path):
    store = stored(tmp_path)
    assert store.delete_user("t", "gone")["preferences"] == 3
    assert files_holding(tmp_path, MARKER) == []
    assert store.purges_left() == set()
    assert Store(str(tmp_path), "enc", DIM).purges_left() == set()


def stop_after_the_rows(rt, user_id: str, monkeypatch) -> None:
    """Run the service's DELETE of acme's `user_id` and stop it (as a kill would) right after the
    store deleted their rows; the store's own delete is put back for what follows."""
    from service.users import services

    delete_user = rt.store.delete_user

    def killed_after_the_rows(tenant, user):
        delete_user(tenant, user)
        raise Stopped

    monkeypatch.setattr(rt.store, "delete_user", killed_after_the_rows)
    with pytest.raises(Stopped):
        services.delete(rt, "acme", user_id)
    monkeypatch.setattr(rt.store, "delete_user", delete_user)


def test_a_delete_stopped_after_the_rows_went_leaves_no_vector_of_their_texts(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """The embedding cache population jobs fill (PLURALIGN_CACHE_DIR) holds vectors of the user's texts,
    keyed by each text's SHA-256. Before, the DELETE forgot them last, naming the texts it had read from
    the rows: stopped after the rows went, the DELETE sent again found no row, so no text, and the
    vectors stayed for good (a 404 leaving `cached(...) == 1`)."""
    import sqlite3

    from pluralign.embed.cache import EmbeddingCache, text_key
    from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
    from tests.service.tiny import start_service

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "embeddings.sqlite"
    theirs = [f"A drink for morning {i}? {MARKER}" for i in range(2)] + [f"Some tea, number {i}. {MARKER}" for i in range(2)]

    def cached(text: str) -> int:
        with sqlite3.connect(cache) as db:
            return db.execute("SELECT COUNT(*) FROM embedding WHERE key = ?", [text_key(text)]).fetchone()[0]

    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm)
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        give_comparisons(acme, "ann", "coffee", n=1)
        assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 2  # moved into the table
        jobs_cache = EmbeddingCache(cache)  # what a population job embedded of everyone's texts
        jobs_cache.put(minilm.encoder_id, [text_key(t) for t in theirs], np.ones((4, 4), np.float32))
        jobs_cache.close()

        stop_after_the_rows(rt, GONE, monkeypatch)
        assert rt.store.count_preferences("acme", GONE) == 0
        r = acme.delete(f"/v1/users/{GONE}")  # sent again: no row of theirs is left
        assert r.status_code == 404, r.text
        assert [cached(t) for t in theirs] == [0, 0, 0, 0]
        assert acme.get("/v1/users/ann/preferences").json()["total"] == 1


def test_a_delete_stopped_after_the_rows_went_is_finished_by_the_delete_sent_again(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """What a killed DELETE had not reached yet outside the tables (here the user's adapter folder) is
    not finished by a restart: the DELETE sent again removes it and answers 200 counting it; the next is a 404."""
    from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
    from tests.service.test_service_adapters import random_adapter
    from tests.service.tiny import start_service

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm)
    rt, registry = svc.runtime, svc.runtime.adapters.registry
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 2
        random_adapter(tiny_generator_dir, registry.folder("acme", GONE), tiny_generator_dir.name, "user", 1)
        meta = registry.meta("acme", GONE)
        (registry.folder("acme", GONE) / "pluralign.json").write_bytes(msgspec.json.encode(msgspec.structs.replace(meta, tenant="acme", user=GONE)))
        files = sum(1 for p in registry.folder("acme", GONE).rglob("*") if p.is_file())
        stop_after_the_rows(rt, GONE, monkeypatch)
        assert registry.folder("acme", GONE).is_dir()  # not reached
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200 and r.json()["deleted"]["adapter_files"] == files, r.text
        assert not registry.folder("acme", GONE).exists()
        assert files_holding(tmp_path / "data", MARKER, f'"user":"{GONE}"') == []
        assert acme.delete(f"/v1/users/{GONE}").status_code == 404
