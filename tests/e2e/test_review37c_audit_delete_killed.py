"""kill -9 of a real `pluralign serve` in the middle of a DELETE, after the audit's members file was rewritten
without the user and before the audit members index dropped their entry (live37's window), then a restart on the
same data folder: the deletion journal's replay finishes it. Afterwards no file of the data folder (but the
deletion record, which names a deleted user by design) holds the user's hash or the index's 8-byte key, and the
other users of the audit are still in its members file and found by the index. Slow: a real audit job's worker
and two service starts."""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx
import msgspec
import pytest

from pluralign.store.deletions import key_hash
from service.admin.audit_members import hash_key
from service.admin.services import AUDIT_MEMBERS, AUDIT_MEMBERS_INDEX
from service.auth import KeyRing
from tests.e2e.test_delete_killed import send_delete
from tests.e2e.test_e2e_serve import ServeProcess
from tests.service.test_live37_audit_delete_leaves_nothing import holders

# the served process, stopped where a kill finds it: the members file rewritten, the index not yet told
STOP_BEFORE_THE_INDEX = """
import os, sys, time
from pathlib import Path
from service.admin.audit_members import AuditMembersIndex

def stopped(self, job_id, user_hashes, kept):
    Path(os.environ["STOPPED_AT"]).write_text(job_id)
    time.sleep(3600)

AuditMembersIndex.drop = stopped
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""
USERS = ("zed", "ann", "bob")
# zed's group and ann and bob's (a group of one user is suppressed since session 49, and its users listed apart, so a
# DELETE of one withholds every suppressed group's part): zoe shares zed's, and leaves the members file with it


def index_keys(data) -> set[int]:
    db = sqlite3.connect(f"file:{data / 'jobs' / AUDIT_MEMBERS_INDEX}?mode=ro", uri=True)
    try:
        return {user for (user,) in db.execute("SELECT user FROM member")}
    finally:
        db.close()


@pytest.mark.slow
def test_a_serve_killed_between_the_members_file_and_the_index_leaves_nothing_of_the_user_after_a_restart(
        tmp_path, tiny_generator_dir, tiny_pal_dir):
    data, stopped_at = tmp_path / "data", tmp_path / "stopped-at"
    data.mkdir()
    keys = KeyRing(data / "api_keys.json")
    tenant = {"Authorization": f"Bearer {keys.issue('acme')}"}
    admin = {"Authorization": f"Bearer {keys.issue('ops', admin=True)}"}
    env = {"PLURALIGN_CACHE_DIR": str(tmp_path / "cache"), "PLURALIGN_SHARED_DATA": str(tmp_path / "no-persona-data"),
           "PLURALIGN_GENERATION_PROCESS": "false"}
    hashes = {user: key_hash(f"acme/{user}") for user in USERS}
    proc = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, code=STOP_BEFORE_THE_INDEX, STOPPED_AT=str(stopped_at), **env)
    try:
        with httpx.Client(base_url=proc.url, headers=tenant, timeout=120) as client:
            for user, segment in (("zed", "s-z"), ("zoe", "s-z"), ("ann", "s-ab"), ("bob", "s-ab")):  # a group a deleted user was in is withheld whole (privacy40)
                for i in range(2):
                    r = client.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Drink {i}?", "chosen": f"Tea {i}.",
                                                          "rejected": f"Coffee {i}.", "attributes": {"segment": segment}})
                    assert r.status_code == 201, r.text
            audit = client.get("/admin/audits/fairness", headers=admin,
                               params={"group_by": "segment", "tenant": "acme", "min_comparisons": 1, "wait": 120})
            assert audit.status_code == 200, audit.text
        (members,) = (data / "jobs" / "artifacts").glob(f"*/{AUDIT_MEMBERS}")
        assert set(hashes.values()) <= {h for users in msgspec.json.decode(members.read_bytes()).values() for h in users}
        assert {hash_key(h) for h in hashes.values()} <= index_keys(data)
        threading.Thread(target=send_delete, args=(f"{proc.url}/v1/users/zed", tenant), daemon=True).start()
        deadline = time.monotonic() + 60
        while not stopped_at.exists():
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.log.read_text()
            time.sleep(0.02)
        proc.kill9()
    finally:
        proc.stop()
    # what the kill left: the file without zed, the index still naming the audit for them
    assert hashes["zed"] not in members.read_text()
    assert hash_key(hashes["zed"]) in index_keys(data)

    again = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, **env)
    try:
        deadline = time.monotonic() + 60
        while hash_key(hashes["zed"]) in index_keys(data):  # the journal's replay at the start
            assert time.monotonic() < deadline, again.log.read_text()
            time.sleep(0.2)
        with httpx.Client(base_url=again.url, headers=tenant, timeout=60) as client:
            assert client.get("/v1/users/zed").status_code == 404
            for user in ("ann", "bob"):
                assert client.get(f"/v1/users/{user}/preferences").json()["total"] == 2
    finally:
        again.stop()
    kept = {h for users in msgspec.json.decode(members.read_bytes()).values() for h in users}
    assert kept == {hashes["ann"], hashes["bob"]}  # every other user still in the audit
    # and found by the index; zoe, who left the file with zed's group before the kill, keeps an entry the replay (which
    # finds the file already without her) does not drop: an entry naming an audit she is no longer in, as
    # `AuditMembers.drop` allows after a crash (a needless look at that audit by her DELETE), never the reverse
    zoe = hash_key(key_hash("acme/zoe"))
    assert index_keys(data) - {zoe} == {hash_key(hashes["ann"]), hash_key(hashes["bob"])}
    assert holders(data, hashes["zed"].encode()) == []
    assert holders(data, bytes.fromhex(hashes["zed"][:16])) == []
    assert holders(data, bytes.fromhex(hashes["ann"][:16])) != []  # the grep finds what is there
