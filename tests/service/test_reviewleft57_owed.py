"""review left57: a damaged `retractions-owed.json` set aside (left57) kept the user ids it named for good: a later
DELETE of such a user, or their tenant's removal, left their id in the data folder, which a DELETE answers only once
nothing of the user is left there (docs/api.md). Now their keys leave the file set aside (whole, or cut short at the
damage), and the keys it still holds whole are owed again at the start, taken back as a readable file's."""

from __future__ import annotations

import logging
import time

from service.owed_retractions import OWED_RETRACTIONS_FILE

# cut short mid-key (a crash or a full disk mid-copy): acme's ann and bob and globex's ann whole, acme's cy cut short
DAMAGED = b'[["acme","ann","p-1"],["acme","bob","p-2"],["globex","ann","p-3"],["acme","cy","p-'


def wait_for(check, why: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def test_a_users_delete_and_a_tenants_removal_leave_no_id_of_theirs_in_a_damaged_owed_file_set_aside(serve, tmp_path, caplog):
    from service.admin.controllers import ADMIN_HANDLERS
    from tests.service.test_tenant48_removal import wait_removed

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / OWED_RETRACTIONS_FILE).write_bytes(DAMAGED)
    with caplog.at_level(logging.ERROR, logger="pluralign.service"):
        data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
        with server, svc.client("acme") as acme, svc.client("admin") as admin:
            [aside] = data.glob(f"{OWED_RETRACTIONS_FILE}.damaged-*")
            assert aside.read_bytes() == DAMAGED
            # the three keys it holds whole were owed again: their rows, stored no more, owed no more (the start's look)
            wait_for(lambda: not (data / OWED_RETRACTIONS_FILE).exists() and not svc.runtime.owed_retractions.keys(),
                     "the keys read from the damaged file were never looked at")
            for user in ("ann", "cy"):  # nothing else held of them: a 404, and their keys go all the same
                assert acme.delete(f"/v1/users/{user}").status_code == 404
            assert aside.read_bytes() == b'[["acme","bob","p-2"],["globex","ann","p-3"]'  # globex's ann is another user
            r = admin.post("/admin/tenants/globex/removal")
            assert r.status_code == 202, r.text
            wait_removed(admin, "globex")
            assert aside.read_bytes() == b'[["acme","bob","p-2"]'
            assert acme.delete("/v1/users/bob").status_code == 404
            assert not aside.exists()  # naming nobody any more
    said = [r.getMessage() for r in caplog.records if f"set aside as {aside}" in r.getMessage()]
    assert said and "the 3 rows it still names whole" in said[0], said


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


def test_the_keys_a_damaged_owed_file_holds_whole_are_owed_again_on_disk_under_its_name(tmp_path):
    """Read at the start (before its retractions run): the keys read whole are written to the file again, so a crash
    before they are taken back leaves them to the next start; what the damage cut stays in the file set aside only."""
    import msgspec

    from service.owed_retractions import OwedRetractions

    (tmp_path / OWED_RETRACTIONS_FILE).write_bytes(DAMAGED)
    owed = OwedRetractions(tmp_path / OWED_RETRACTIONS_FILE)
    whole = {("acme", "ann", "p-1"), ("acme", "bob", "p-2"), ("globex", "ann", "p-3")}
    assert owed.keys() == whole
    assert {tuple(k) for k in msgspec.json.decode((tmp_path / OWED_RETRACTIONS_FILE).read_bytes())} == whole
    [aside] = tmp_path.glob(f"{OWED_RETRACTIONS_FILE}.damaged-*")
    assert aside.read_bytes() == DAMAGED
