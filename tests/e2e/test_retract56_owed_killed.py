"""retract56: a retraction answered 202 by replica b (the row still waited in replica a's feedback log) whose row a
stored all the same (b's pending record landed between a's look and a's commit), a then SIGKILLed before it took the
row back. The user was told 202; the row must not stay stored, learned from and exported after a's restart.

Before: a took such a row back only from the move's later hook (`retract_arrived`, in memory): killed after the feedback
log let go of the record, nothing named the row at the next start (killed between the commit and the log's update, the
replay found it stored and marked it done without the hook), and it stayed for good. Now the ingest worker names it on
disk before the log lets go (`service.owed_retractions`), and the next start takes it back.

Two real `pluralign serve` replicas on one store. Replica a runs test hooks of its own: once the test arms it (a file),
its worker holds a batch until the test lets it go (so b's retraction finds the row in no table), its look for pending
retractions comes first (it finds none: the race's order), and it SIGKILLs itself right after `FeedbackLog.done`, or
right after the commit, before the log's update.
Slow (three service starts each, ~60-120 s on two shared cores): `make test-scaleout`."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest

from service.owed_retractions import OWED_RETRACTIONS_FILE
from tests.e2e.test_crash39_kills import NO_GENERATOR
from tests.e2e.test_e2e_serve import ServeProcess
from tests.e2e.test_jobs53_replica_delete_killed import wait_until

pytestmark = pytest.mark.slow

RACED_THEN_KILLED = """
import os, signal, sys, time
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor

move, look, done, noted = Ingestor._move_entries, Ingestor._not_retracted, FeedbackLog.done, Ingestor._noted_before_done
armed = lambda: os.path.exists(os.environ["ARMED"])

def held(self, entries, *args, **kwargs):
    if armed():  # the row waits in the log until b recorded its retraction
        open(os.environ["HELD"], "w").close()
        while not os.path.exists(os.environ["GO"]):
            time.sleep(0.05)
    return move(self, entries, *args, **kwargs)

def looked_first(self, entries):
    return entries if armed() else look(self, entries)

def killed(self, entries):
    done(self, entries)
    if entries and armed():  # stored, gone from the log; the move's hooks have not run
        os.kill(os.getpid(), signal.SIGKILL)

def killed_first(self, rows):
    if rows and armed():  # stored, still in the log: the replay finds it stored
        os.kill(os.getpid(), signal.SIGKILL)
    noted(self, rows)

Ingestor._move_entries, Ingestor._not_retracted = held, looked_first
if os.environ["KILL_AT"] == "after_done":
    FeedbackLog.done = killed
else:
    Ingestor._noted_before_done = killed_first
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def comparison(n: int, marker: str = "") -> dict:
    return {"type": "comparison", "user": "ann", "prompt": f"Question {n}?{marker}", "chosen": f"Yes {n}.", "rejected": f"No {n}."}


def listed(client: httpx.Client) -> set[str]:
    r = client.get("/v1/users/ann/preferences")
    assert r.status_code == 200, r.text
    return {row["pref_id"] for row in r.json()["data"]}


@pytest.mark.parametrize("kill_at", ["after_done", "before_done"])
def test_a_row_taken_back_pending_through_b_and_stored_by_a_killed_before_its_hook_is_taken_back_at_as_restart(
        tmp_path, tiny_pal_dir, kill_at):
    """`after_done`: killed once the log let go of the record; `before_done`: killed right after the commit, the record
    still in the log (its replay finds the row stored)."""
    armed, held, go = tmp_path / "armed", tmp_path / "held", tmp_path / "go"
    common = {"PLURALIGN_STORE_URI": str(tmp_path / "store"), "PLURALIGN_REPLICAS": "2", "PLURALIGN_STORE_SYNC_MS": "300",
              "PLURALIGN_DELETION_SWEEP_S": "3600", "PLURALIGN_JOB_WORKERS": "0", "PLURALIGN_CACHE_DIR": str(tmp_path / "cache")}
    ra, rb = tmp_path / "a", tmp_path / "b"
    a = ServeProcess(ra, NO_GENERATOR, tiny_pal_dir, code=RACED_THEN_KILLED, PLURALIGN_REPLICA_INDEX="0",
                     ARMED=str(armed), HELD=str(held), GO=str(go), KILL_AT=kill_at, **common)
    procs = [a]
    try:
        headers = {"Authorization": f"Bearer {a.dev_key()}"}
        rb.mkdir()
        shutil.copy(ra / "api_keys.json", rb / "api_keys.json")  # one key file, mounted in both
        b = ServeProcess(rb, NO_GENERATOR, tiny_pal_dir, PLURALIGN_REPLICA_INDEX="1", **common)
        procs.append(b)
        with httpx.Client(base_url=a.url, headers=headers, timeout=60) as ca, httpx.Client(base_url=b.url, headers=headers, timeout=60) as cb:
            kept = ca.post("/v1/feedback", json=comparison(1))
            assert kept.status_code == 201, kept.text
            kept_id = kept.json()["stored"][0]
            wait_until(lambda: listed(ca) == {kept_id}, 30, "the first row was never stored", a)
            armed.touch()
            r = ca.post("/v1/feedback", json=comparison(2, " (a misclick)"))
            assert r.status_code == 201, r.text  # acknowledged: in a's log, held there
            oops = r.json()["stored"][0]
            wait_until(held.exists, 60, "a's worker never took the misclick", a)
            r = cb.delete(f"/v1/users/ann/preferences/{oops}")
            assert r.status_code == 202 and r.json()["pending"] is True, r.text
            go.touch()
        a.killed()  # stored, then killed before its hook took it back
        armed.unlink()
        assert oops in {p["pref_id"] for p in _stored(tmp_path)}  # what the crash left: the row in the table

        again = ServeProcess(ra, NO_GENERATOR, tiny_pal_dir, PLURALIGN_REPLICA_INDEX="0", **common)
        procs.append(again)
        with httpx.Client(base_url=again.url, headers=headers, timeout=60) as ca, httpx.Client(base_url=b.url, headers=headers, timeout=60) as cb:
            wait_until(lambda: listed(ca) == {kept_id}, 60, "the row taken back stayed stored after a's restart", again)
            time.sleep(0.4)  # past b's staleness (PLURALIGN_STORE_SYNC_MS)
            assert listed(cb) == {kept_id}
            assert "(a misclick)" not in ca.get("/v1/users/ann/export").text
            assert ca.delete(f"/v1/users/ann/preferences/{oops}").status_code == 404  # taken back: done
        wait_until(lambda: not (ra / OWED_RETRACTIONS_FILE).exists(), 30, "the owed retraction stayed on disk", again)
    finally:
        go.touch()
        for proc in procs:
            proc.stop()


def _stored(tmp_path) -> list[dict]:
    """The rows of the shared store's preferences table, read as files (no encoder needed)."""
    import lancedb

    return lancedb.connect(str(tmp_path / "store")).open_table("preferences").search().select(["pref_id"]).limit(None).to_list()
