"""Races between a step that reads and a background one that commits in between, each forced by a
hook at the one moment it can happen (no sleeps, nothing timed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec

from pluralign.store import Store, UserRecord
from pluralign.store.tables import owner_filter
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


def test_feedback_committed_while_a_sweep_deletes_a_users_older_rows_stays(tmp_path):
    """Another replica's DELETE applied here (`service.deletions.apply_deletions`): the user's rows
    received before it go (`Store.delete_feedback_before`), and when nothing else of theirs is left,
    their users row too. That was a count of their rows, then a whole `delete_user` in a later
    maintenance turn (with replicas, after waiting for the store's lease): feedback the user sent
    after coming back, which the ingest worker committed in between, was deleted with it (an
    acknowledged row, sent after the DELETE, lost)."""
    store = Store(str(tmp_path), "enc", DIM)
    rows, *vectors = pairs("t", "ann", ["old0", "old1"])
    store.add_preferences([msgspec.structs.replace(r, received_at=1000.0) for r in rows], *vectors)
    store.put_user(UserRecord(tenant="t", user_id="ann", created_at=1000.0, updated_at=1000.0))
    back, *back_vectors = pairs("t", "ann", ["back"], 1)
    table, landed = store.tables["preferences"], []
    count_rows = table.count_rows

    def count_then_commit_lands(where=None):  # the ingest worker's commit of what the user sent since, just then
        n = count_rows(where)
        if where == owner_filter("t", "ann") and not landed:  # the count of what else of theirs is left
            store.add_preferences([msgspec.structs.replace(back[0], received_at=3000.0)], *back_vectors)
            landed.append(True)
        return n

    table.count_rows = count_then_commit_lands
    assert store.delete_feedback_before("t", "ann", 2000.0) == 2
    assert landed
    assert [p.prompt for p in store.preferences_for("t", "ann")[0]] == ["back"]
    again = Store(str(tmp_path), "enc", DIM)
    assert again.count_preferences("t", "ann") == 1 and again.get_user("t", "ann") is None  # their refit writes a new one


class _OnVersion:
    """A query of the preferences table as LanceDB runs one: on the version it began on (`dataset`, a
    snapshot from before a purge), its data files read after the purge removed them."""

    def __init__(self, dataset):
        self.dataset, self.filter, self.columns = dataset, None, None

    def where(self, where, prefilter=False):
        self.filter = where
        return self

    def select(self, columns):
        self.columns = columns
        return self

    def limit(self, _):
        return self

    def to_arrow(self):
        return self.dataset.to_table(filter=self.filter, columns=self.columns)


def test_a_read_that_began_before_a_delete_removed_old_versions_is_read_again(tmp_path):
    """One process alone on its store: a DELETE removes the table's old versions at once, with the
    files only they name (`_drop_old_versions`), beside this process's other requests, whose reads
    take no lock. A read of another user that began on the version before (a chat loading that
    user's history) met "Not found" for a data file and was not read again (only with replicas was
    it): a 503 naming the table as damaged, and a damaged table in /health. Seen running reads in
    two threads beside 100 DELETEs: 2 of 566 reads failed."""
    store = Store(str(tmp_path), "enc", DIM)
    store.add_preferences(*pairs("t", "gone", ["g0", "g1"]))
    store.add_preferences(*pairs("t", "kept", ["k0", "k1"], 1))
    began = store.preferences.to_lance()  # the version a read of kept's rows began on
    store.delete_user("t", "gone")  # its purge rewrote the fragments and removed that version's files
    table, search, first = store.tables["preferences"], store.tables["preferences"].search, []

    def search_began_before(*args, **kwargs):
        if not first:
            first.append(True)
            return _OnVersion(began)
        return search(*args, **kwargs)

    table.search = search_began_before
    page, total = store.preferences_for("t", "kept")
    assert first and (total, [p.prompt for p in page]) == (2, ["k0", "k1"])
    assert store.problems.recent() == []


def test_a_delete_while_another_jobs_artifact_folder_is_removed_answers_200(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """A DELETE rewrites every PAL/EM artifact folder it listed without the user's weights. A job's
    folder removed after the listing, while its files were read (the job purged by a replica's deletion
    sweep, or its result refused by its check: neither under the population lock), was a file that
    could not be read: the DELETE answered 500 "could not be rewritten", naming a folder that no longer
    exists, though nothing of the user was left anywhere."""
    from pluralign.reward import training_users
    from service.admin.controllers import ADMIN_HANDLERS
    from service.users.journal import JOURNAL_FOLDER
    from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
    from tests.service.tiny import start_service

    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER)
        svc.runtime.wait_for_background()
        artifact = server.server.config.app.state.admin.folder / "artifacts" / "job-purged-meanwhile"
        shutil.copytree(tiny_pal_dir, artifact)
        kind, removed = training_users.artifact_kind, []

        def removed_once_looked_at(folder):
            found = kind(folder)
            if Path(folder) == artifact and not removed:
                shutil.rmtree(artifact)  # its job purged just then
                removed.append(True)
            return found

        monkeypatch.setattr(training_users, "artifact_kind", removed_once_looked_at)
        r = acme.delete(f"/v1/users/{GONE}")
        assert removed and r.status_code == 200, r.text
        assert not any((data / JOURNAL_FOLDER).iterdir())  # finished: nothing left for a later pass
