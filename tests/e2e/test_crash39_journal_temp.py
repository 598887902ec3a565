"""A process SIGKILLed while it wrote a DELETE's journal entry (`service.users.journal`: the entry is
written whole, a temp file beside it then renamed) leaves the temp file, `.<user hash>.json.<random>`,
holding the user's id. Seen in the seeded kill loop (tests/e2e/test_crash39_kills.py): a kill landing
there left `deletes-in-progress/.2f4c....json.7e8sdyba` with `"user_id":"d2x147"`.

Before: nothing ever removed it (the journal reads `*.json` only), so the user's id stayed in the data
folder for good, also after a later DELETE of theirs answered 200; the journal promises it keeps a
user's id only while their DELETE is unfinished. Now the user's DELETE, once finished, removes the temp
files of their entry too.

Fast: the journal's own write in a child process, killed by a real SIGKILL just before its rename; then
the next DELETE of the user (`begin`, `done`) in this one. The slow test below does it through
`pluralign serve` over HTTP."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import REPO
from tests.files import files_holding

KILLED_BEFORE_THE_RENAME = r"""
import os, signal, sys

replace = os.replace

def killed(src, dst, *args, **kwargs):
    if "deletes-in-progress" in str(dst):  # the entry's temp file is written and fsynced: killed before its rename
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst, *args, **kwargs)

os.replace = killed
"""

CHILD = KILLED_BEFORE_THE_RENAME + r"""
import pathlib, time
from service.users.journal import DeleteJournal
DeleteJournal(pathlib.Path(sys.argv[1])).begin("default", sys.argv[2], time.time())
print("not killed", flush=True)
"""

SERVE = KILLED_BEFORE_THE_RENAME + r"""
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def send_delete(url: str, headers: dict) -> None:
    with contextlib.suppress(httpx.TransportError):  # its server is killed before it answers
        httpx.delete(url, headers=headers, timeout=60)


def test_a_journal_entry_killed_mid_write_leaves_no_trace_of_the_user_once_their_delete_finishes(tmp_path):
    from service.users.journal import DeleteJournal

    folder, user = tmp_path / "deletes-in-progress", "Axolotl-journal-39"
    run = subprocess.run([sys.executable, "-c", CHILD, str(folder), user], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == -9, (run.returncode, run.stdout, run.stderr[-2000:])
    assert files_holding(folder, user)  # the temp file the kill left
    journal = DeleteJournal(folder)
    assert journal.pending() == [] and journal.unfinished("default", user) is None  # the DELETE never began
    entry = journal.begin("default", user, time.time())  # the user's next DELETE
    journal.done(entry)
    journal.release(entry)
    assert files_holding(folder, user) == []


@pytest.mark.slow
def test_a_delete_killed_while_writing_its_journal_entry_leaves_nothing_once_sent_again(tmp_path, tiny_pal_dir):
    """Through `pluralign serve` (two starts: ~60 s on two shared cores): the DELETE killed while its
    journal entry was written deleted nothing (the user whole after the restart); sent again, it is
    answered 200 and no file of the data folder names the user."""
    from tests.e2e.test_crash39_kills import NO_GENERATOR
    from tests.e2e.test_e2e_serve import ServeProcess

    data, user = tmp_path / "data", "Axolotl-journal-39"
    env = {"PLURALIGN_CACHE_DIR": str(tmp_path / "cache")}
    proc = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, code=SERVE, **env)
    try:
        headers = {"Authorization": f"Bearer {proc.dev_key()}"}
        with httpx.Client(base_url=proc.url, headers=headers, timeout=60) as c:
            for i in range(2):
                r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Tea or coffee? {i}",
                                                 "chosen": f"Tea {i}.", "rejected": "Coffee."})
                assert r.status_code == 201, r.text
            assert c.get(f"/v1/users/{user}/preferences").json()["total"] == 2
        threading.Thread(target=send_delete, args=(f"{proc.url}/v1/users/{user}", headers), daemon=True).start()
        proc.proc.wait(timeout=60)
        assert proc.proc.returncode == -9 and any(f.startswith("deletes-in-progress/.") for f in files_holding(data, user))
    finally:
        proc.stop()
    again = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, **env)
    try:
        with httpx.Client(base_url=again.url, headers=headers, timeout=60) as c:
            assert c.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # the DELETE had not begun
            r = c.delete(f"/v1/users/{user}")
            assert r.status_code == 200, r.text
        assert files_holding(data, user) == []
    finally:
        again.stop()
