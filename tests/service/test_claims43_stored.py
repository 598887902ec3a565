"""Session 43: the removal of stored rows' pref_id claims (`pluralign.store.claims`, `pluralign.store.ingest`), on a real
folder store (claims on, as with replicas) and a real feedback log.

A move forgot its rows from the log (`FeedbackLog.done`) and then removed their claims: a process killed between the
two left the claims for good (a file or object an id). Now the move notes them in `stored-claims/` before the log forgets
the rows, and the next start removes what is noted. A reader's move (`flush_user`) waited for the removal too (on S3
~14 ms a row); now the drops' thread does it."""

from __future__ import annotations

import threading

import msgspec
import pytest

from pluralign.store import claims as claims_module
from pluralign.store.claims import claim_of
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import STORED_CLAIMS, Ingestor
from tests.service.test_feedback_log import HashEncoder
from tests.stores import claimed_store, claims_left

FOLDER = claims_module._folder("t", "u")


@pytest.fixture
def claimed(tmp_path):
    """A store with claims, two rows of user u an import claimed (their claims made), and the log's folder."""
    return claimed_store(tmp_path)


def notes(folder) -> list[str]:
    path = folder / STORED_CLAIMS
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def test_claims_a_move_left_go_at_the_next_start(claimed):
    """The mover commits the rows and the log forgets them; their claims' removal then never happens (a kill there, or a
    store that refused it). Before, the claims stayed for good (nothing moves those rows again). Now the move's note
    stays, and the next start removes the claims and the note."""
    store, _, folder = claimed
    with claims_left(claimed, "killed before the claims' removal") as ingest:  # the rows acknowledged, then moved
        assert store.count_preferences("t", "u") == 2 and not ingest.log.pending
    assert len(store.claims._names(FOLDER)) == 2 and len(notes(folder)) == 1
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())  # the next start
    try:
        ingest.claims_settled()
        assert store.claims._names(FOLDER) == []  # before: 2, for good
        assert notes(folder) == []
    finally:
        ingest.close()


def test_a_delete_leaves_nothing_of_the_user_in_the_notes(claimed):
    """A note left (its removal failed) names the user's claims folder by hash; a DELETE of the user (`forget_user`, as
    its steps and other replicas' deletion records call it) rewrites the notes without it: nothing of the user stays in
    this replica's files. Claims received since a DELETE began (its `before`) stay noted."""
    folder = claimed[2]
    with claims_left(claimed) as ingest:
        [note] = notes(folder)
        assert FOLDER in (folder / STORED_CLAIMS / note).read_text()
        ingest.forget_user("t", "u", before=50.0)  # a DELETE begun before they came: the note keeps them
        assert notes(folder) == [note]
        ingest.forget_user("t", "u")
        assert notes(folder) == []


def test_a_reader_s_move_does_not_wait_for_its_rows_claims_removal(claimed):
    """A reader moves the user's pending rows itself (`flush_user`, before a GET of their history). Before, it also
    removed the rows' claims in its own thread: on S3 ~14 ms a row, 7 s for 500 rows, inside the user's request. Now
    the removal runs on the drops' thread, after the read returned. Here the removal is held until the read is back
    (at most 10 s: before, the read waited all of it)."""
    store, rows, folder = claimed
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())
    # the start's sweep (its own thread, at nice 19) must be done first: run late, beside the read below, it found the
    # rows just stored with their claims and removed them itself, through the held drop (CI of 8b2e580: ran was
    # ['claims-sweep', 'claims-drop_0'])
    ingest.claims_settled()
    release, ran = threading.Event(), []
    drop = store.claims.drop_named

    def held_drop(folders):
        release.wait(10)
        ran.append(threading.current_thread().name)
        return drop(folders)

    store.claims.drop_named = held_drop
    try:
        with ingest.paused():  # the worker moves nothing: the reader does
            ingest.submit(rows, received_at=100.0)
            assert ingest.flush_user("t", "u") == 2
            assert ran == []  # before: ['MainThread'], once the read had waited for the removal
            release.set()
            ingest.claims_settled()
        assert ran and ran[0].startswith("claims-drop"), ran
        assert store.claims._names(FOLDER) == [] and notes(folder) == []
    finally:
        release.set()
        del store.claims.drop_named
        ingest.close()


def test_claims_an_earlier_release_left_of_stored_rows_go_at_the_first_start(claimed):
    """An earlier release stored the rows and left their claims (killed before their removal; before session 42 none was
    ever removed): they went only with a row of that id moved again or a DELETE of the user. Now the first start on
    the store removes them (on the drops' thread) and marks the store swept; a claim of a row not stored stays (its
    import may be acknowledged on another replica and not moved yet), and a later start lists nothing again."""
    store, rows, folder = claimed
    vecs = HashEncoder().encode(["x", "y"])
    store.add_preferences(rows, vecs, vecs, vecs)  # stored, their claims left
    waiting = msgspec.structs.replace(rows[0], pref_id="t-u-waiting")
    assert store.claims.claim("t", "u", {waiting.pref_id: claim_of(waiting, stamped=False)})[0] == [waiting.pref_id]
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())
    try:
        ingest.claims_settled()
        assert store.claims._names(FOLDER) == [f"{FOLDER}/{claims_module.key_hash(waiting.pref_id)}"]  # before: all 3
        assert store.claims._get(claims_module.SWEPT) is not None
    finally:
        ingest.close()
    assert store.claims.claim("t", "u", {r.pref_id: claim_of(r, stamped=False) for r in rows})[0]  # left again
    listed: list = []
    store.claims._folders = lambda: listed.append(1) or []
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())
    try:
        ingest.claims_settled()
        assert listed == [] and len(store.claims._names(FOLDER)) == 3  # swept once: no listing at each start
    finally:
        del store.claims._folders
        ingest.close()


def test_a_note_s_rewrite_cut_short_by_a_kill_leaves_nothing_at_the_next_start(claimed):
    """Review of session 43: a DELETE rewrites a note (`forget_user`) under a temporary name (`<note>.tmp`) and renames
    it over the note; a kill between the two left the temporary file for good (only `*.json` notes were read at a
    start): the note's other users' claim hashes in a file nothing removes. Now the next start removes it (the note
    itself is still whole)."""
    store, _, folder = claimed
    with claims_left(claimed):
        [note] = notes(folder)
    cut = folder / STORED_CLAIMS / note.replace(".json", ".tmp")
    cut.write_bytes((folder / STORED_CLAIMS / note).read_bytes()[:20])  # killed while writing the rewrite
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())  # the next start
    try:
        ingest.claims_settled()
        assert notes(folder) == []  # before: [the .tmp]
        assert store.claims._names(FOLDER) == []
    finally:
        ingest.close()


def test_a_note_that_cannot_be_written_does_not_stop_the_move(claimed):
    """Review of session 43: the note is written after the rows' commit; when it could not be (the data folder full or
    failing, the table elsewhere: on S3), the move raised after its commit, the rows stayed in the log, and every
    later move of them failed again (the worker's batches and a reader's GET): the backlog never drained. Now the
    claims are removed without a note, as before session 43 (only a kill in between leaves them)."""
    store, rows, folder = claimed
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())
    (folder / STORED_CLAIMS).write_bytes(b"")  # its folder cannot be made: every note's write fails (as on a full disk)
    try:
        with ingest.paused():
            ingest.submit(rows, received_at=100.0)
            assert ingest.flush_user("t", "u") == 2  # before: FileExistsError, the rows still pending
            ingest.claims_settled()
        assert not ingest.log.pending and store.count_preferences("t", "u") == 2
        assert store.claims._names(FOLDER) == []
    finally:
        ingest.close()
