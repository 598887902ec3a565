"""review left57 and owed58: the keys a damaged `retractions-owed.json` still holds whole are owed again at the start,
taken back as a readable file's, written in its place; and a user's DELETE takes their keys out of the owed file once
their rows are gone, a row stored again under one of their ids and taken back again meanwhile staying owed."""

from __future__ import annotations

import time

import msgspec

from service.owed_retractions import OWED_RETRACTIONS_FILE, OwedRetractions

# cut short mid-key (a crash or a full disk mid-copy): acme's ann and bob and globex's ann whole, acme's cy cut short
DAMAGED = b'[["acme","ann","p-1"],["acme","bob","p-2"],["globex","ann","p-3"],["acme","cy","p-'
WHOLE = {("acme", "ann", "p-1"), ("acme", "bob", "p-2"), ("globex", "ann", "p-3")}


def wait_for(check, why: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def test_a_users_delete_takes_their_ids_out_of_the_owed_file_once_their_rows_are_gone(serve):
    """A row owed a retraction (stored here while another replica took it back; its retraction failing, tried again
    every 600 s) of a user then deleted: their id left the owed file only at that next try. Now the DELETE takes it
    out (their row is gone with them); another user's key stays."""
    data, server, svc = serve()
    with server, svc.client("acme") as acme:
        owed = svc.runtime.owed_retractions
        owed.owe({("acme", "dan", "p-1"), ("acme", "eve", "p-2")})  # as the ingest worker's look owes them
        assert acme.delete("/v1/users/dan").status_code == 404
        assert owed.keys() == {("acme", "eve", "p-2")}
        assert b"dan" not in (data / OWED_RETRACTIONS_FILE).read_bytes()


def test_a_row_stored_again_and_taken_back_again_while_a_delete_looked_stays_owed(serve, monkeypatch):
    """owed58: the DELETE looks whether each of the user's owed rows is still stored, then clears those it found gone.
    A row of theirs stored again under the same id in between (they came back), and taken back again through another
    replica (the ingest worker's look owes it again), lost its retraction: cleared with the first. Now it stays owed."""
    data, server, svc = serve()
    with server, svc.client("acme") as acme:
        owed, store = svc.runtime.owed_retractions, svc.runtime.store
        key = ("acme", "dan", "p-1")
        owed.owe({key})
        look = store.stored_row

        def stored_again_right_after(tenant, user_id, pref_id):
            row = look(tenant, user_id, pref_id)
            if (tenant, user_id, pref_id) == key:
                owed.owe({key})  # as `OwedRetractions.check` owes it once its row is stored again
            return row

        monkeypatch.setattr(store, "stored_row", stored_again_right_after)
        assert acme.delete("/v1/users/dan").status_code == 404
        assert owed.keys() == {key}
        assert msgspec.json.decode((data / OWED_RETRACTIONS_FILE).read_bytes()) == [list(key)]


def test_the_keys_a_damaged_owed_file_holds_whole_are_owed_again_on_disk_under_its_name(tmp_path):
    """Read at the start (before its retractions run): the keys read whole are written to the file again, so a crash
    before they are taken back leaves them to the next start; what the damage cut is not kept anywhere."""
    (tmp_path / OWED_RETRACTIONS_FILE).write_bytes(DAMAGED)
    owed = OwedRetractions(tmp_path / OWED_RETRACTIONS_FILE)
    assert owed.keys() == WHOLE
    assert {tuple(k) for k in msgspec.json.decode((tmp_path / OWED_RETRACTIONS_FILE).read_bytes())} == WHOLE
    assert [p.name for p in tmp_path.iterdir()] == [OWED_RETRACTIONS_FILE]


def test_a_row_stored_again_and_taken_back_again_while_the_start_looked_at_its_owed_key_stays_owed(serve, monkeypatch):
    """owed58: the start's look at the owed keys (`retract_owed`) reads their rows, then clears those found gone; the same
    window as a DELETE's: a row stored again under the id meanwhile, owed again by the ingest worker, was cleared."""
    import threading

    from service.users import retractions

    data, server, svc = serve()
    with server:
        owed, store = svc.runtime.owed_retractions, svc.runtime.store
        key = ("acme", "dan", "p-1")
        owed.owe({key})  # as a run killed before it took the row back left it
        look = store.stored_row

        def stored_again_right_after(tenant, user_id, pref_id):
            row = look(tenant, user_id, pref_id)
            owed.owe({(tenant, user_id, pref_id)})  # as `OwedRetractions.check` owes it once its row is stored again
            return row

        monkeypatch.setattr(store, "stored_row", stored_again_right_after)
        assert retractions.retract_owed(svc.runtime) == 1
        for thread in [t for t in threading.enumerate() if t.name == "retract-owed"]:
            thread.join(60)
        assert owed.keys() == {key}
