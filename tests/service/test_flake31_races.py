"""Races between a step that reads and a background one that commits in between, each forced by a
hook at the one moment it can happen (no sleeps, nothing timed)."""

from __future__ import annotations

from pluralign.store import Store
from tests.service.test_store import DIM, pairs


def test_a_history_loaded_while_a_feedback_commit_lands_holds_each_row_once(tmp_path):
    """A chat loads the user's history in the background (`Store.warm`) while the ingest worker
    commits their new feedback. A load that read the table after the commit and was kept in the
    cache before the commit's rows were added to it (`HistoryCache.extend`) got them twice: the
    user's preferences page showed the row twice, its total and their comparison count (what a
    refit and onboarding go by) one too many, for as long as the history stayed cached."""
    store = Store(str(tmp_path), "enc", DIM)
    store.add_preferences(*pairs("t", "ann", ["q0", "q1"]))
    after_write, loaded = store._after_write, []

    def load_between_commit_and_cache(name: str) -> None:
        after_write(name)
        if name == "preferences" and not loaded:  # the commit is in the table, the cache not yet told
            store.warm("t", "ann")  # what a chat of the user does, on the store's own loader thread
            store.wait_warm()
            loaded.append(True)

    store._after_write = load_between_commit_and_cache
    store.add_preferences(*pairs("t", "ann", ["q2"], 1))
    assert loaded
    page, total = store.preferences_for("t", "ann")
    assert (total, [p.prompt for p in page]) == (3, ["q0", "q1", "q2"])
    assert store.count_comparisons("t", "ann") == 3 and store.comparisons("t", "ann")[0].shape == (3, DIM)
