"""`pluralign serve` SIGKILLed while its feedback worker moves an acknowledged import of a TRL file (conversational
rows: `prompt`, `chosen`, `rejected` as message lists) into the table: just before the batch's commit
(`Store.add_preferences`: the rows only in the feedback log) and just after it (in the table, the log not yet told:
`FeedbackLog.done` not run). The kill is a fault-injection hook of the test's own (`KILLED_AT_THE_COMMIT`, armed by a
file), not a sleep.

Restarted on the same data folder, by HTTP: every row of the import and of a comparison acknowledged before it is on
the user's preferences pages and in their export exactly once; the client's retries with their `Idempotency-Key`s
are answered from what was stored (`Idempotent-Replayed: true`) and store nothing twice. A guard: it held at once (the
replay drops records whose rows reached the table, `Ingestor._drop_already_moved`; a retry finds the key's ids
pending or stored, `replay_of`). Slow: two service starts a point (~80 s on two shared cores); `make test-crash`."""

from __future__ import annotations

import contextlib
import json

import httpx
import pytest

from tests.e2e.test_crash39_kills import NO_GENERATOR, prompts
from tests.e2e.test_e2e_serve import ServeProcess

KILLED_AT_THE_COMMIT = """
import os, signal, sys
from pluralign.store.tables import Store

add_preferences, after = Store.add_preferences, os.environ["KILL_AFTER"] == "1"

def killed(self, rows, *args, **kwargs):
    armed = os.path.exists(os.environ["ARMED"]) and any("TRL" in r.prompt for r in rows)  # the import's batch
    if armed and not after:
        os.kill(os.getpid(), signal.SIGKILL)
    out = add_preferences(self, rows, *args, **kwargs)
    if armed:
        os.kill(os.getpid(), signal.SIGKILL)
    return out

Store.add_preferences = killed
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""

FEEDBACK = {"type": "comparison", "user": "ann", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
TRL_ROWS = [{"prompt": [{"role": "user", "content": f"TRL question {i}?"}],
             "chosen": [{"role": "assistant", "content": f"A careful answer {i}."}],
             "rejected": [{"role": "assistant", "content": f"A hasty answer {i}."}]} for i in range(3)]
IMPORT = "".join(json.dumps(row) + "\n" for row in TRL_ROWS)
NDJSON = {"Content-Type": "application/x-ndjson"}


def _import(c: httpx.Client) -> httpx.Response:
    return c.post("/v1/users/ann/import", content=IMPORT, headers={**NDJSON, "Idempotency-Key": "ann-import-1"})


@pytest.mark.slow
@pytest.mark.parametrize("after", [False, True], ids=["before-the-commit", "after-the-commit"])
def test_an_import_killed_at_its_move_is_stored_once_and_its_retry_is_a_replay(tmp_path, tiny_pal_dir, after):
    data, armed = tmp_path / "data", tmp_path / "armed"
    env = {"PLURALIGN_CACHE_DIR": str(tmp_path / "cache")}
    proc = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, code=KILLED_AT_THE_COMMIT, ARMED=str(armed),
                        KILL_AFTER="1" if after else "0", **env)
    headers = {"Authorization": f"Bearer {proc.dev_key()}"}
    try:
        with httpx.Client(base_url=proc.url, headers=headers, timeout=60) as c:
            r = c.post("/v1/feedback", json=FEEDBACK, headers={"Idempotency-Key": "ann-fb-1"})
            assert r.status_code == 201, r.text
            assert c.get("/v1/users/ann/preferences").json()["total"] == 1  # moved into the table
            armed.touch()
            first = _import(c)  # acknowledged once in the log; the worker's move of it is killed
            assert first.status_code == 201 and len(first.json()["stored"]) == 3, first.text
        proc.killed()
    finally:
        proc.stop()
    again = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, **env)
    try:
        with httpx.Client(base_url=again.url, headers=headers, timeout=60) as c:
            retried = _import(c)
            assert retried.status_code == 201 and retried.headers.get("idempotent-replayed") == "true", retried.text
            assert retried.json()["stored"] == first.json()["stored"]
            r = c.post("/v1/feedback", json=FEEDBACK, headers={"Idempotency-Key": "ann-fb-1"})
            assert r.status_code == 201 and r.headers.get("idempotent-replayed") == "true", r.text
            wanted = sorted(["Tea or coffee?", *(f"TRL question {i}?" for i in range(3))])
            page, export = prompts(c, "ann")  # the export gives the TRL rows back in their form: message lists
            export = [p if isinstance(p, str) else p[-1]["content"] for p in export]
            assert sorted(page) == wanted and sorted(export) == wanted, (page, export)
            preferences = c.get("/v1/users/ann/preferences", params={"limit": 100}).json()["data"]
            trl = [p for p in preferences if p["prompt"].startswith("TRL")]
            assert sorted(p["chosen"] for p in trl) == [f"A careful answer {i}." for i in range(3)], trl
            assert c.get("/v1/users/ann").json()["counts"]["preferences"] == 4
    finally:
        with contextlib.suppress(Exception):
            again.stop()
