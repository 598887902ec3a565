"""A DELETE stopped part way in a single process (no replicas, no lease), after the user's rows were
deleted and before the purge that removes the files still holding them: the purge is finished when
the store opens again (the next start), or by the same process's next maintenance turn, so no file
keeps the deleted user's text. Before, nothing remembered the purge left to do: the text stayed in
old table versions for good, and the DELETE sent again found no row and purged nothing (a 404)."""

from __future__ import annotations

import msgspec
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
