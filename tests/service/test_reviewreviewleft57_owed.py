"""review reviewleft57: a damaged `retractions-owed.json` was renamed aside at the start, and the keys it still held
whole written back under its name only after: a replica killed between the two (or whose write failed) started next
with no owed file, so those rows, stored here and taken back through another replica, stayed stored for good, though
the first start had logged them as taken back. Now the damaged file gets its second name as a hard link first and is
replaced after, so a kill in between leaves it to be read again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import msgspec

from service.owed_retractions import OWED_RETRACTIONS_FILE, OwedRetractions
from tests.service.test_reviewleft57_owed import DAMAGED, wait_for

WHOLE = {("acme", "ann", "p-1"), ("acme", "bob", "p-2"), ("globex", "ann", "p-3")}

# the start's read of the owed file, killed (SIGKILL) as it comes to write the owed keys in the damaged file's place
KILLED_BEFORE_THE_WRITE = """
import os, signal, sys
from pathlib import Path
import service.owed_retractions as owed

def killed(path):
    os.kill(os.getpid(), signal.SIGKILL)

owed.atomic_writer = killed
owed.OwedRetractions(Path(sys.argv[1]))
"""


def test_a_start_killed_before_it_wrote_the_keys_read_from_a_damaged_owed_file_leaves_them_owed(tmp_path):
    path = tmp_path / OWED_RETRACTIONS_FILE
    path.write_bytes(DAMAGED)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.run([sys.executable, "-c", KILLED_BEFORE_THE_WRITE, str(path)], env=env, capture_output=True,
                           timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    [aside] = tmp_path.glob(f"{OWED_RETRACTIONS_FILE}.damaged-*")  # its second name, given before the kill
    assert aside.read_bytes() == DAMAGED
    # the next start: the keys still owed, and the file kept aside once, not twice
    assert OwedRetractions(path).keys() == WHOLE
    assert list(tmp_path.glob(f"{OWED_RETRACTIONS_FILE}.damaged-*")) == [aside]
    assert aside.read_bytes() == DAMAGED
    assert {tuple(k) for k in msgspec.json.decode(path.read_bytes())} == WHOLE


def test_a_damaged_owed_file_holding_no_key_whole_is_kept_aside_and_leaves_its_name(tmp_path):
    path = tmp_path / OWED_RETRACTIONS_FILE
    path.write_bytes(b'[["acme","ann","p-')
    assert OwedRetractions(path).keys() == set()
    assert not path.exists()
    [aside] = tmp_path.glob(f"{OWED_RETRACTIONS_FILE}.damaged-*")
    assert aside.read_bytes() == b'[["acme","ann","p-'
    assert OwedRetractions(path).keys() == set()  # a second start: nothing more set aside
    assert list(tmp_path.glob(f"{OWED_RETRACTIONS_FILE}.damaged-*")) == [aside]


def moved_elsewhere(data, tmp_path):
    """The owed file `data` set aside, moved by the operator to another disk (`tmp_path`/elsewhere.json) and linked to
    there: a file it cannot rewrite. Returns (the link, the file it names)."""
    [aside] = data.glob(f"{OWED_RETRACTIONS_FILE}.damaged-*")
    moved = tmp_path / "elsewhere.json"
    moved.write_bytes(aside.read_bytes())
    aside.unlink()
    aside.symlink_to(moved)
    return aside, moved


def mended(aside, moved) -> None:
    """The link made a file again, holding what `moved` holds now."""
    aside.unlink()
    aside.write_bytes(moved.read_bytes())


def test_a_users_delete_meeting_a_damaged_owed_file_set_aside_it_cannot_rewrite_is_not_done_until_it_can(serve, tmp_path):
    """A file set aside that could not be rewritten (here a symbolic link: the operator moved it to another disk) was
    logged, and the DELETE answered as done, its journal entry gone, the user's ids left in it for good. Now the DELETE
    is not done: answered as failed, its entry kept, and the journal's pass finishes it once the file can be rewritten."""
    from service.users import services

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / OWED_RETRACTIONS_FILE).write_bytes(DAMAGED)
    data, server, svc = serve()
    with server, svc.client("acme") as acme:
        aside, moved = moved_elsewhere(data, tmp_path)
        r = acme.delete("/v1/users/ann")
        assert r.status_code == 500, r.text
        assert r.json()["error"]["code"] == "owed_retractions_not_rewritten", r.text
        assert b'"ann"' in moved.read_bytes()
        assert svc.runtime.delete_journal.unfinished("acme", "ann") is not None  # not done: tried again
        mended(aside, moved)
        assert services.UnfinishedDeletes(svc.runtime, 3600).run_once() == 1  # on the DELETEs' threads
        wait_for(lambda: svc.runtime.delete_journal.unfinished("acme", "ann") is None, "the DELETE was never finished")
        assert aside.read_bytes() == b'[["acme","bob","p-2"],["globex","ann","p-3"],["acme","cy","p-'


def test_a_key_whose_pref_id_holds_a_bracket_leaves_a_file_set_aside_whole(tmp_path):
    """A pref_id may hold `]` (printable ASCII): the key was cut at that `]`, its tail left in the file (`b"]`), so a file
    naming nobody else was never removed."""
    path = tmp_path / OWED_RETRACTIONS_FILE
    path.write_bytes(b'[["acme","ann","a]b"],["acme","bob","c]\\"d"],["acme","ann","e]f"],["acme","cy","p-')
    owed = OwedRetractions(path)
    [aside] = owed.set_aside_files()
    assert owed.forget_set_aside(lambda t, u: u == "ann") == 1
    assert aside.read_bytes() == b'[["acme","bob","c]\\"d"],["acme","cy","p-'
    assert owed.forget_set_aside(lambda t, u: u in ("bob", "cy")) == 1
    assert not aside.exists()  # naming nobody any more


def test_a_tenants_removal_meeting_a_damaged_owed_file_set_aside_it_cannot_rewrite_is_not_done_until_it_can(serve, tmp_path):
    """As a user's DELETE: the removal was noted done, its keys left in the file set aside. Now it is not done (the
    record says why) until the file can be rewritten, and the next pass finishes it."""
    from service.admin.controllers import ADMIN_HANDLERS
    from tests.service.test_tenant48_removal import wait_removed

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / OWED_RETRACTIONS_FILE).write_bytes(DAMAGED)
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600.0)
    with server, svc.client("admin") as admin:
        aside, moved = moved_elsewhere(data, tmp_path)
        assert admin.post("/admin/tenants/globex/removal").status_code == 202
        wait_for(lambda: "owed retractions" in (admin.get("/admin/tenants/globex/removal").json().get("error") or ""),
                 "the removal never said why it was not done")
        assert admin.get("/admin/tenants/globex/removal").json()["state"] != "done"
        assert b'"globex"' in moved.read_bytes()
        mended(aside, moved)
        server.server.config.app.state.tenant_removals.run_once()  # the next pass (its interval is the test's: 3600 s)
        wait_removed(admin, "globex")
        assert aside.read_bytes() == b'[["acme","ann","p-1"],["acme","bob","p-2"],["acme","cy","p-'
