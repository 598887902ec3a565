"""Session 44: pref_id claims (`pluralign.store.claims`) and the notes of stored rows' claims (`pluralign.store.ingest`),
on a real folder store and a real feedback log: a lock file made again mid-DELETE, notes on disk before the log forgets
their rows, a note that cannot be written, and the start's sweep of what earlier releases left."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
import pytest

from pluralign.store import claims as claims_module
from pluralign.store.claims import FolderClaims, claim_of
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import STORED_CLAIMS, Ingestor
from tests.service.test_claims42_cas import USER, claim
from tests.service.test_feedback_log import HashEncoder
from tests.stores import claimed_store, claims_left_by_an_earlier_release
from tests.unit.test_edges35_durable_notes import fsyncs_of

FOLDER = claims_module._folder("t", "u")


def test_a_change_that_makes_the_lock_file_again_mid_delete_leaves_no_folder(tmp_path, monkeypatch):
    """A DELETE's claims step (`forget_user`) unlinks the user's `.lock` (held) and then removes the folder. A change of
    a claim in between (another replica's mover removing a claim it listed a moment ago, which the DELETE removed)
    opened the lock file with O_CREAT: made it again, and the folder's removal failed (not empty). The folder and its
    `.lock` stayed for good. Here the change runs exactly between the unlink and the removal of the folder."""
    delete, mover = FolderClaims(tmp_path), FolderClaims(tmp_path)
    assert delete.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})
    name = f"{claims_module._folder('acme', USER)}/{claims_module.key_hash('p-1')}"
    version = mover._get(name)[1]  # the mover read the claim before the DELETE removed it
    folder = tmp_path / claims_module.FOLDER / claims_module._folder("acme", USER)
    rmdir, outcome = Path.rmdir, []

    def between_unlink_and_rmdir(path):
        if path == folder and not outcome:
            outcome.append(None)
            assert not (folder / claims_module.LOCK_FILE).exists()  # the DELETE unlinked it
            outcome.append(mover._remove_if(name, version))  # the mover's removal, too late: nothing to remove
        return rmdir(path)

    monkeypatch.setattr(Path, "rmdir", between_unlink_and_rmdir)
    assert delete.forget_user("acme", USER) == 1
    assert outcome == [None, False]
    assert not folder.exists(), sorted(p.name for p in folder.iterdir())  # before: ['.lock']


@pytest.fixture
def claimed(tmp_path):
    """A store with claims, two rows of user u an import claimed (their claims made), and the log's folder."""
    return claimed_store(tmp_path)


def test_a_note_is_on_disk_before_the_log_forgets_its_rows(claimed, monkeypatch):
    """A move notes its rows' claims (`stored-claims/<note>.json`) before the log forgets the rows, so that a stop in
    between leaves the note for the next start. The note was written and closed, never fsynced, nor its folder: a power
    loss (not a kill) after the log's forgetting reached the disk could lose the note, and the claims stayed for good.
    Now the note's bytes and its name (its folder, and the folder's own name when made) are fsynced before the log
    forgets the rows, as the feedback log's own files are (`pluralign.files`)."""
    store, rows, folder = claimed
    seen = fsyncs_of(monkeypatch)
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())
    done, at_done = ingest.log.done, []

    def noted_done(entries):
        if entries:
            at_done.append(list(seen))
        return done(entries)

    ingest.log.done = noted_done
    store.claims.drop_named = lambda folders: (_ for _ in ()).throw(OSError("killed before the claims' removal"))
    try:
        with ingest.paused():
            ingest.submit(rows, received_at=100.0)
        ingest.flush()  # (or the worker, once not paused)
        assert not ingest.log.pending and store.count_preferences("t", "u") == 2
    finally:
        del store.claims.drop_named
        ingest.close()
    notes = folder / STORED_CLAIMS
    [note] = [str(p) for p in notes.iterdir()]
    [fsynced] = at_done
    assert note in fsynced and str(notes) in fsynced and str(folder) in fsynced, fsynced  # before: none of them


def test_a_delete_s_rewrite_of_a_note_is_on_disk_and_a_cut_short_one_goes_at_the_next_start(claimed, monkeypatch):
    """A DELETE rewrites the notes without the user (`Ingestor.forget_user`): the rewrite was renamed over the note
    unsynced, and the folder too, so a power loss could bring back the note naming the deleted user. Now the rewrite is
    an atomic write (`pluralign.files.write_atomic`: its bytes, then the folder, fsynced), and the notes' folder is
    fsynced once a DELETE went through it (a note it removed stays removed). A rewrite a kill cut short leaves its
    temporary file (".<note>.<random>"), which the next start removes."""
    store, rows, folder = claimed
    other = msgspec.structs.replace(rows[0], user_id="v", pref_id="t-v-1")
    assert store.claims.claim("t", "v", {other.pref_id: claim_of(other, stamped=False)})[0]
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())
    store.claims.drop_named = lambda folders: (_ for _ in ()).throw(OSError("the store refused the removal"))
    try:
        with ingest.paused():
            ingest.submit(rows, received_at=100.0)
            ingest.submit([other], received_at=100.0)
        ingest.flush()  # (or the worker, once not paused)
        assert not ingest.log.pending and store.count_preferences("t", "u") == 2
        notes = folder / STORED_CLAIMS
        [note] = list(notes.iterdir())
        seen = fsyncs_of(monkeypatch)
        ingest.forget_user("t", "u")
        assert [p.name for p in notes.iterdir()] == [note.name] and FOLDER not in note.read_text()  # v's claim kept
        assert any(s.startswith(str(notes / f".{note.name}.")) for s in seen) and str(notes) in seen, seen  # before: []
    finally:
        del store.claims.drop_named
        ingest.close()
    (notes / f".{note.name}.cut").write_bytes(note.read_bytes()[:20])  # a rewrite killed before its rename
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())  # the next start
    try:
        ingest.claims_settled()
        assert list(notes.iterdir()) == []
        assert store.claims._names(claims_module._folder("t", "v")) == []  # (u's: the DELETE's claims step, not here)
    finally:
        ingest.close()


def test_a_move_s_claims_go_while_the_start_s_sweep_is_still_running(claimed):
    """The first start on a store sweeps the claims earlier releases left of stored rows (`sweep_stored`: each claimed
    user's rows read). It ran first on the drops' thread, the one every reader's move hands its claims' removal to:
    with many claimed users every such removal waited behind the whole sweep. Here the sweep is held at its start (the
    table's users listed); a reader's move's claims go meanwhile (before: only once the sweep was let go)."""
    store, rows, folder = claimed
    claims_left_by_an_earlier_release(store, ["old"])
    release, listed, dropped = threading.Event(), threading.Event(), threading.Event()
    owners, drop = store.preference_owners, store.claims.drop_named

    def held_owners():
        listed.set()
        release.wait(10)
        return owners()

    def noted_drop(folders):
        gone = drop(folders)
        dropped.set()
        return gone

    store.preference_owners, store.claims.drop_named = held_owners, noted_drop
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())
    try:
        assert listed.wait(10)
        with ingest.paused():
            ingest.submit(rows, received_at=100.0)
            assert ingest.flush_user("t", "u") == 2
        assert dropped.wait(10) and not release.is_set()  # before: after the sweep, let go after 10 s
        assert store.claims._names(FOLDER) == []
        release.set()
        ingest.claims_settled()
        assert store.claims._names(claims_module._folder("t", "old")) == []  # swept
    finally:
        release.set()
        del store.preference_owners, store.claims.drop_named
        ingest.close()


def test_the_start_s_sweep_leaves_the_histories_cache_as_it_was(claimed):
    """The sweep read each claimed user's rows through their cached history (`preferences_for`): every claimed user's
    history, vectors and all, loaded into the bounded cache, evicting the histories of the users being served. Now it
    reads the rows it compares (text and labels) from the table, and the cache is as it was."""
    store, _, folder = claimed
    claims_left_by_an_earlier_release(store, ["old1", "old2", "old3"])
    store.history("t", "old1")  # one user being served
    cached, misses = [key for _, key, _ in store.histories._cached.items()], store.histories.misses
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())
    try:
        ingest.claims_settled()
        assert all(store.claims._names(claims_module._folder("t", user)) == [] for user in ("old1", "old2", "old3"))
        assert [key for _, key, _ in store.histories._cached.items()] == cached and store.histories.misses == misses  # before: 2 loaded, 2 missed
    finally:
        ingest.close()


def test_claims_whose_note_could_not_be_written_do_not_outlive_a_stop(claimed):
    """Review 43 let a move go on when its note cannot be written (a full disk): its claims were handed to the drops'
    thread without a note, so a stop before that thread got to them (closed: removals not begun are cancelled, as a kill
    ends them) left them for good, though the docstring said such a claim goes at the next start. Now, with no note, the
    claims go before the log forgets the rows: a stop before then leaves the rows in the log (the next start moves or
    drops them again), after then nothing. Here the drops' thread is busy until the Ingestor is closed."""
    store, rows, folder = claimed
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())
    (folder / STORED_CLAIMS).write_bytes(b"")  # its folder cannot be made: every note's write fails (as on a full disk)
    busy = threading.Event()
    try:
        ingest.claims_settled()
        ingest._dropping.submit(busy.wait, 10)  # the drops' thread is busy (another move's removals)
        with ingest.paused():
            ingest.submit(rows, received_at=100.0)
            assert ingest.flush_user("t", "u") == 2
    finally:
        ingest.close()  # the removals not begun are cancelled
        busy.set()
    assert store.count_preferences("t", "u") == 2
    assert store.claims._names(FOLDER) == []  # before: 2, left for good once the log's segment holding the rows went
