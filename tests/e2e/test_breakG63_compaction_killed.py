"""`pluralign serve` SIGKILLed inside its background compaction (`Store.compact`, run once `compact_every` commits
piled up), at three points chosen by counting the compaction's own work, not by sleeping: as a table's `optimize`
begins; inside it, once its first new version (the rewrite's commit) is in the table's `_versions` folder and before
its clean-up and index work end; and after it, while the table's indexes are being made again (`_ensure_indexes`).
The kill is a fault-injection hook of the test's own (`KILLED_IN_THE_COMPACTION`, armed by a file).

Restarted on the same data folder, by HTTP: every feedback answered 201 before the kill is on its user's pages and in
their export exactly once, a feedback the kill cut off unanswered is stored once by its retry (`Idempotency-Key`), the
start is healthy (no lease or lock of the killed process holds it), and the next compaction goes through (its
counter moves, no `compaction failed` in the log). Slow: two service starts a point; `make test-crash`."""

from __future__ import annotations

import contextlib
import re

import httpx
import pytest

from tests.e2e.test_crash39_kills import NO_GENERATOR, prompts
from tests.e2e.test_e2e_serve import ServeProcess

KILLED_IN_THE_COMPACTION = """
import os, signal, sys, threading
from pathlib import Path
import lancedb.table
from pluralign.store.tables import Store

point, armed = os.environ["KILL_POINT"], Path(os.environ["ARMED"])
optimize, ensure = lancedb.table.LanceTable.optimize, Store._ensure_indexes
kill = lambda: os.kill(os.getpid(), signal.SIGKILL)

def versions(table):
    folder = Path(table._dataset_path) / "_versions"
    return len(os.listdir(folder)) if folder.is_dir() else 0

def killed_optimize(self, *args, **kwargs):
    if armed.exists() and point == "begin":
        kill()
    if armed.exists() and point == "inside":
        before = versions(self)
        def watch():  # the rewrite's commit counted, not waited for
            while versions(self) <= before:
                pass
            kill()
        threading.Thread(target=watch, daemon=True).start()
    return optimize(self, *args, **kwargs)

def killed_ensure(self, name, *args, **kwargs):
    if armed.exists() and point == "indexes":
        kill()
    return ensure(self, name, *args, **kwargs)

lancedb.table.LanceTable.optimize = killed_optimize
Store._ensure_indexes = killed_ensure
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""

USERS = ("ann", "bob", "cy")


def feedback(n: int) -> dict:
    return {"type": "comparison", "user": USERS[n % 3], "prompt": f"Question zq{n}?", "chosen": f"Yes {n}.", "rejected": f"No {n}."}


def compactions(c: httpx.Client) -> float:
    found = re.search(r"^pluralign_compactions_total (\S+)$", c.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.slow
@pytest.mark.parametrize("point", ["begin", "inside", "indexes"])
def test_a_compaction_killed_loses_no_acknowledged_feedback_and_the_next_one_goes_through(tmp_path, tiny_pal_dir, point):
    data, armed = tmp_path / "data", tmp_path / "armed"
    env = {"PLURALIGN_CACHE_DIR": str(tmp_path / "cache"), "PLURALIGN_COMPACT_EVERY": "4"}
    proc = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, code=KILLED_IN_THE_COMPACTION, ARMED=str(armed), KILL_POINT=point, **env)
    headers = {"Authorization": f"Bearer {proc.dev_key()}"}
    acked, unanswered, n = [], [], 0
    try:
        with httpx.Client(base_url=proc.url, headers=headers, timeout=60) as c:
            for n in range(6):  # the first compaction, unarmed: the tables hold indexes and versions to rewrite
                assert c.post("/v1/feedback", json=feedback(n), headers={"Idempotency-Key": f"k{n}"}).status_code == 201
                acked.append(n)
            for user in USERS:
                assert c.get(f"/v1/users/{user}/preferences").status_code == 200  # moved into the table
            armed.touch()
            for n in range(6, 400):  # until the armed compaction kills the process
                try:
                    r = c.post("/v1/feedback", json=feedback(n), headers={"Idempotency-Key": f"k{n}"})
                except httpx.TransportError:
                    unanswered.append(n)
                    break
                assert r.status_code == 201, r.text
                acked.append(n)
        proc.killed()
    finally:
        proc.stop()
    armed.unlink()
    again = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, **env)
    try:
        with httpx.Client(base_url=again.url, headers=headers, timeout=60) as c:
            for m in unanswered:  # the client's retry: stored once
                r = c.post("/v1/feedback", json=feedback(m), headers={"Idempotency-Key": f"k{m}"})
                assert r.status_code == 201, r.text
                acked.append(m)
            for user in USERS:
                wanted = sorted(feedback(m)["prompt"] for m in acked if feedback(m)["user"] == user)
                page, export = prompts(c, user)
                assert sorted(page) == wanted and sorted(export) == wanted, (user, page, export)
            before = compactions(c)
            for m in range(1000, 1012):  # more commits than compact_every: the next compaction runs
                assert c.post("/v1/feedback", json=feedback(m)).status_code == 201
                for user in USERS:
                    c.get(f"/v1/users/{user}/preferences")
            extra = 0
            while compactions(c) <= before and extra < 200:  # bounded by the feedback sent, not by time
                assert c.post("/v1/feedback", json=feedback(2000 + extra)).status_code == 201
                c.get(f"/v1/users/{USERS[extra % 3]}/preferences")
                extra += 1
            assert compactions(c) > before, again.log.read_text()[-3000:]
            assert c.get("/health").status_code == 200
        assert "compaction failed" not in again.log.read_text(), again.log.read_text()[-3000:]
    finally:
        with contextlib.suppress(Exception):
            again.stop()
